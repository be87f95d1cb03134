"""Shared fixtures: databases (SQLite and PostgreSQL), configured servers, RADIUS clients, and
the in-process runtime (``make_world``)."""

from __future__ import annotations

import os
import secrets
from types import SimpleNamespace

import pyotp
import pytest
from sqlalchemy import select

import radiusd.service as service_module
from radiusd.config import Config
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, users
from radiusd.services.factory import Services
from tests.fakes import PASSWORD, Clock
from tests.support import PG_ADMIN_URL, RadiusClient, ServerProcess, admin, write_config, write_seed_key


def _postgres_database():
    """Create a throw-away database on the local PostgreSQL; yield its SQLAlchemy URL."""
    import psycopg

    name = f"radiusd_test_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}"
        if os.environ.get("RADIUSD_TEST_STRICT") == "1":
            pytest.fail(message + " and RADIUSD_TEST_STRICT=1 forbids skipping")
        pytest.skip(message)
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """Each storage test runs on embedded SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'radiusd.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def database(database_url):
    """A migrated database, on SQLite and on PostgreSQL; modules that need rows in it define
    their own ``database`` fixture."""
    database = Database(database_url, pool_size=4)
    migrate.upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'radiusd.db'}"


@pytest.fixture
def postgres_url():
    yield from _postgres_database()


@pytest.fixture
def make_server(tmp_path):
    """Factory: write a config, upgrade the database, start ``radiusd serve``; stopped after."""
    started = []

    def make(database_url: str | None = None, *, sections=None, nas=None, start=True, name="server"):
        directory = tmp_path / name
        directory.mkdir(exist_ok=True)
        url = database_url or f"sqlite:///{directory / 'radiusd.db'}"
        config = write_config(directory, url, sections=sections, nas=nas)
        admin(config, "db", "upgrade")
        server = ServerProcess(config, directory / "radiusd.log")
        started.append(server)
        return server.start() if start else server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def radius_client():
    clients = []

    def make(port: int, **kwargs) -> RadiusClient:
        client = RadiusClient(port, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# -- the in-process runtime ----------------------------------------------------------------------------

class World:
    """``build_runtime``'s plugins, pipeline and services on SQLite, on a fake clock, no sockets."""

    def __init__(self, runtime, clock: Clock):
        self.runtime = runtime
        self.clock = clock
        self.database = runtime.database

    def plugin(self, name: str):
        return self.runtime.plugin_manager.get_plugin(name)

    def services(self) -> Services:
        """The runtime's services (on the world's clock), acting as "test"."""
        return self.runtime.services.as_actor("test")

    def add_user(self, name: str, **fields) -> int:
        """A local user with password ``PASSWORD``; their id."""
        self.services().users.create(name, fields, password=PASSWORD, confirmation=PASSWORD)
        with self.database.engine.connect() as conn:
            return conn.execute(select(users.c.id).where(users.c.username == name)).scalar()

    def enrol(self, name: str) -> tuple[pyotp.TOTP, str]:
        """A pending TOTP enrolment: its generator and activation code."""
        enrolment = self.services().otp.enroll(name)
        return pyotp.parse_uri(enrolment["otpauth_uri"]), enrolment["activation_code"]

    def activate(self, name: str) -> tuple[pyotp.TOTP, dict]:
        """An enrolled, activated authenticator app; the clock moves on a step so the next code is fresh."""
        totp, code = self.enrol(name)
        services = self.services()
        device = services.devices.activate(code, totp.at(self.clock()), device_name="phone", platform="test",
                                           blocks=services.blocks)
        self.clock.advance(30)
        return totp, device

    def user_row(self, name: str):
        with self.database.engine.connect() as conn:
            return conn.execute(select(users).where(users.c.username == name)).first()

    def failures(self, name: str) -> int:
        return self.user_row(name).failed_attempts

    def sample(self, name: str, **labels) -> float:
        return self.runtime.metrics.registry.get_sample_value(name, labels) or 0.0

    def auth_events(self, name: str) -> list[str]:
        """The reasons of the user's audit rows of type "auth", oldest first."""
        with self.database.engine.connect() as conn:
            return [row.reason for row in conn.execute(
                select(audit_events).where(audit_events.c.username == name, audit_events.c.type == "auth")
                .order_by(audit_events.c.id))]


@pytest.fixture
def make_world(tmp_path, monkeypatch):
    """Factory: ``make_world(now, **sections)`` builds a World whose clock starts at ``now``; the
    sections override keys of the config's (a seed key and a SQLite database in tmp_path, two
    auth threads, ``[mfa] required = false``, as ``write_config`` gives)."""
    built = []

    def make(now: float = 1_800_000_015.0, **sections) -> World:
        clock = Clock(now)
        url = f"sqlite:///{tmp_path / f'radiusd-{len(built)}.db'}"
        database = Database(url)
        migrate.upgrade(database)
        database.dispose()
        seed = tmp_path / "seed.key"
        if not seed.exists():
            write_seed_key(seed)
        settings = {"security": {"seed_key": {"file": str(seed)}}, "database": {"url": url},
                    "server": {"auth_threads": 2}, "mfa": {"required": False}}
        for name, values in sections.items():
            settings.setdefault(name, {}).update(values)
        config = Config.model_validate(settings)
        monkeypatch.setattr(service_module, "time", SimpleNamespace(time=clock))
        built.append(World(service_module.build_runtime(config), clock))
        return built[-1]

    yield make
    for world in built:
        world.database.dispose()
