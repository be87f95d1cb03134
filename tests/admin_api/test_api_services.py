"""The services behind the API, on SQLite and PostgreSQL: API clients and tokens, remote
configuration, application OTP checks, NAS updates, audit listing, migration 0004."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import pyotp
import pytest
from sqlalchemy import inspect, select

from radiusd.config import Config, LockoutSection, MfaSection, NasSection, SecuritySection
from radiusd.crypto import PasswordHasher, SeedKey
from radiusd.db import migrate
from radiusd.db.tables import api_clients, api_tokens
from radiusd.decisions import Reason
from radiusd.dictionary import RadiusDictionary
from radiusd.services import Conflict, Invalid, NotFound
from radiusd.services.api_clients import ApiClientService
from radiusd.services.audit import list_events, record_event
from radiusd.services.blocks import BlockService
from radiusd.services.nas import NasService, list_key
from radiusd.services.otp import OtpService
from radiusd.services.users import UserService
from tests.fakes import Clock


@pytest.fixture
def seed_key():
    return SeedKey(os.urandom(32))


@pytest.fixture
def clock():
    return Clock(time.time())


@pytest.fixture
def clients(database, seed_key, clock):
    return ApiClientService(database, seed_key, clock, token_ttl_seconds=60, actor="test")


@pytest.fixture(scope="module")
def hasher():
    return PasswordHasher(SecuritySection())


@pytest.fixture
def users(database, hasher):
    return UserService(database, hasher, RadiusDictionary(), actor="test")


@pytest.fixture
def otp(database, seed_key, clock):
    return OtpService(database, seed_key, MfaSection(), clock, actor="test")


@pytest.fixture
def blocks(database, clock):
    return BlockService(database, LockoutSection(max_failures=3), clock, actor="test")


# -- API clients -------------------------------------------------------------------------------------

def test_client_secret_and_token_are_stored_as_keyed_digests_only(clients, database, seed_key):
    created = clients.create("admin", "ops")
    token = clients.issue_token(created["client_id"], created["client_secret"])["access_token"]
    with database.engine.connect() as conn:
        client_row = conn.execute(select(api_clients)).one()
        token_row = conn.execute(select(api_tokens)).one()
    assert client_row.secret_hash == seed_key.digest(created["client_secret"].encode(), "api-client-secret")
    assert token_row.token_hash == seed_key.digest(token.encode(), "api-access-token")
    assert created["client_secret"] not in repr(tuple(client_row)) and token not in repr(tuple(token_row))


def test_token_lifecycle_with_a_clock(clients, clock):
    created = clients.create("agent", "pam")
    issued = clients.issue_token(created["client_id"], created["client_secret"])
    assert issued["expires_in"] == 60 and issued["scope"] == "agent" and issued["token_type"] == "Bearer"
    principal = clients.authenticate(issued["access_token"])
    assert (principal.client_id, principal.name, principal.type, principal.actor) == \
        (created["client_id"], "pam", "agent", "api:pam")
    clock.now += 59
    assert clients.authenticate(issued["access_token"]) is not None
    clock.now += 1
    assert clients.authenticate(issued["access_token"]) is None  # expired
    assert clients.show(created["client_id"])["last_token_at"] is not None


def test_unknown_client_wrong_secret_and_bad_scope(clients):
    created = clients.create("user", "shop")
    assert clients.issue_token(created["client_id"], "wrong") is None
    assert clients.issue_token("rc_unknown", created["client_secret"]) is None
    assert clients.issue_token(created["client_id"], "") is None
    assert clients.issue_token(created["client_id"], "x" * 10_000) is None
    with pytest.raises(Invalid):
        clients.issue_token(created["client_id"], created["client_secret"], scope="admin")
    assert clients.issue_token(created["client_id"], created["client_secret"], scope="user") is not None
    assert clients.authenticate("") is None and clients.authenticate("nope") is None


def test_revoke_and_rotate_end_every_token(clients):
    created = clients.create("admin", "one")
    tokens = [clients.issue_token(created["client_id"], created["client_secret"])["access_token"] for _ in range(3)]
    rotated = clients.rotate_secret(created["client_id"])
    assert all(clients.authenticate(token) is None for token in tokens)
    assert clients.issue_token(created["client_id"], created["client_secret"]) is None
    token = clients.issue_token(created["client_id"], rotated["client_secret"])["access_token"]
    assert clients.authenticate(token) is not None
    clients.revoke(created["client_id"])
    assert clients.authenticate(token) is None
    with pytest.raises(NotFound):
        clients.show(created["client_id"])
    with pytest.raises(NotFound):
        clients.revoke(created["client_id"])
    with pytest.raises(NotFound):
        clients.rotate_secret(created["client_id"])


def test_names_types_and_listing(clients):
    with pytest.raises(Invalid):
        clients.create("root", "x")
    with pytest.raises(Invalid):
        clients.create("admin", "")
    with pytest.raises(Invalid):
        clients.create("admin", "x" * 61)
    with pytest.raises(Invalid):
        clients.create("admin", "bad\nname")
    made = sorted(clients.create("user", f"app-{index}")["client_id"] for index in range(5))
    with pytest.raises(Conflict):
        clients.create("agent", "app-0")
    first = clients.list(limit=2)
    rest = clients.list(after=first[-1]["client_id"])
    assert [row["client_id"] for row in first + rest] == made
    assert all("secret" not in key for row in first + rest for key in row if key != "secret_rotated_at")


def test_ensure_admin_creates_the_first_admin_once(clients):
    clients.create("agent", "admin")  # the name is taken by a non-admin client
    created = clients.ensure_admin()
    assert created["type"] == "admin" and created["name"].startswith("admin-") and created["client_secret"]
    assert clients.ensure_admin() is None
    assert [row["type"] for row in clients.list()].count("admin") == 1


# -- remote configuration and application OTP checks ----------------------------------------------------

def enrol(users, otp, clock, username):
    users.create(username, {})
    totp = pyotp.parse_uri(otp.enroll(username)["otpauth_uri"])
    assert otp.verify(username, totp.at(clock.now - 30))
    return totp


def test_remote_config_versions_on_both_databases(users, otp, clock):
    for name in ("ann", "ben"):
        enrol(users, otp, clock, name)
    entry = otp.set_remote_config("ann", pin_required=True, biometric_required=False)
    assert (entry["pin_required"], entry["config_version"], entry["applied_version"]) == (True, 2, None)
    assert otp.set_remote_config("ann", pin_required=True, biometric_required=False)["config_version"] == 2
    bulk = {row["username"]: row for row in otp.set_remote_config_bulk(["ann", "ben", "ben"], biometric_required=True)}
    assert bulk["ann"]["config_version"] == 3 and bulk["ben"]["config_version"] == 2
    assert bulk["ben"]["pin_required"] is False and bulk["ben"]["biometric_required"] is True
    with pytest.raises(NotFound):
        otp.set_remote_config_bulk(["ann", "ghost"], pin_required=False)
    users.create("cal", {})
    with pytest.raises(NotFound):
        otp.set_remote_config_bulk(["ann", "cal"], pin_required=False)
    assert otp.show("ann")["pin_required"] is True  # all or nothing
    with pytest.raises(Invalid):
        otp.set_remote_config_bulk(["ann"])
    page = otp.list(limit=1)
    assert [row["username"] for row in page + otp.list(after=page[-1]["username"])] == ["ann", "ben"]


def test_application_code_checks_count_failures_and_refuse_replays(users, otp, blocks, clock, database):
    totp = enrol(users, otp, clock, "dora")
    check = otp.check_user_code("dora", totp.at(clock.now), blocks, client="api:shop")
    assert check.valid and check.reason is Reason.OK
    replay = otp.check_user_code("dora", totp.at(clock.now), blocks, client="api:shop")
    assert not replay.valid and replay.reason is Reason.OTP_REPLAY
    assert otp.check_user_code("dora", "abc", blocks, client="api:shop").reason is Reason.BAD_OTP
    third = otp.check_user_code("dora", "000000" if totp.at(clock.now) != "000000" else "111111", blocks,
                                client="api:shop")
    assert third.locked and third.reason is Reason.BAD_OTP
    assert otp.check_user_code("dora", totp.at(clock.now + 30), blocks, client="api:shop").reason is Reason.BLOCKED
    assert otp.check_user_code("nobody", "123456", blocks, client="api:shop").reason is Reason.UNKNOWN_USER
    users.create("eve", {})
    assert otp.check_user_code("eve", "123456", blocks, client="api:shop").reason is Reason.OTP_REQUIRED
    events = list_events(database, username="dora", type="auth")
    assert [event["reason"] for event in events][:2] == ["blocked", "bad_otp"]
    assert all(event["client"] == "api:shop" for event in events)


def test_a_valid_application_code_clears_the_failure_count(users, otp, blocks, clock):
    totp = enrol(users, otp, clock, "fay")
    for _ in range(2):
        otp.check_user_code("fay", "abcdef", blocks, client="api:shop")
    assert blocks.blocked_entry("fay")["failed_attempts"] == 2
    assert otp.check_user_code("fay", totp.at(clock.now), blocks, client="api:shop").valid
    assert blocks.blocked_entry("fay")["failed_attempts"] == 0


# -- NAS updates and audit listing ----------------------------------------------------------------------

def test_nas_update_and_keyset_listing(database, seed_key):
    config = Config(nas=[NasSection(name="zeta", address="192.0.2.1", secret="static-secret-0123456")])
    nas = NasService(database, seed_key, config, warn=lambda text: None, actor="test")
    for index, name in enumerate(("b", "a", "c")):
        nas.add(name, f"198.51.100.{index + 1}", "secret-0123456789abc")  # overlapping addresses are refused
    updated = nas.update("a", {"mfa_mode": "append", "coa_port": 1700, "secret": "another-secret-012345"})
    assert updated["mfa_mode"] == "append" and updated["coa_port"] == 1700
    assert {entry.name: entry.secret for entry in nas.registry_entries()}["a"] == b"another-secret-012345"
    assert nas.update("a", {"mfa_mode": None})["mfa_mode"] is None
    with pytest.raises(Conflict):
        nas.update("zeta", {"coa_port": 1})
    with pytest.raises(NotFound):
        nas.update("ghost", {"coa_port": 1})
    with pytest.raises(Invalid):
        nas.update("a", {"address": "nowhere"})
    with pytest.raises(Invalid):
        nas.update("a", {"origin": "config"})
    assert nas.show("zeta")["origin"] == "config"
    names, after = [], None
    while True:
        page = nas.list(after=after, limit=2)
        names += [entry["name"] for entry in page]
        if len(page) < 2:
            break
        after = list_key(page[-1])
    assert names == ["zeta", "a", "b", "c"]
    assert [event["reason"] for event in list_events(database, type="admin")][:2] == ["nas.update", "nas.update"]


def test_audit_events_filter_and_page_newest_first(database):
    start = datetime.now(timezone.utc) - timedelta(seconds=1)
    for index in range(5):
        record_event(database, "auth", username="gus", result="accept", reason="ok", detail={"n": index})
    record_event(database, "admin", username="hal", result="ok", reason="user.create")
    page = list_events(database, username="gus", limit=3)
    rest = list_events(database, username="gus", before=page[-1]["id"])
    assert [event["detail"]["n"] for event in page + rest] == [4, 3, 2, 1, 0]
    assert [event["username"] for event in list_events(database, type="admin")] == ["hal"]
    assert len(list_events(database, since=start)) == 6
    assert list_events(database, since=datetime.now(timezone.utc) + timedelta(hours=1)) == []


# -- migration --------------------------------------------------------------------------------------------

def test_migration_0004_downgrades_and_upgrades_again(database):
    migrate_downgrade(database, "0003")
    with database.engine.connect() as conn:
        tables = inspect(conn).get_table_names()
        columns = {column["name"] for column in inspect(conn).get_columns("otp_enrolments")}
    assert "api_clients" not in tables and "api_tokens" not in tables and "config_version" not in columns
    migrate.upgrade(database)
    assert migrate.is_current(database)


def migrate_downgrade(database, revision: str) -> None:
    from alembic import command

    with database.writer.begin() as connection:
        command.downgrade(migrate._alembic_config(connection), revision)
