"""Shared fixtures: databases (SQLite and PostgreSQL), configured servers, RADIUS clients."""

from __future__ import annotations

import os
import secrets

import pytest

from tests.support import RadiusClient, ServerProcess, admin, write_config

PG_ADMIN_URL = os.environ.get("RADIUSD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


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
