"""Blocking (SPEC §3.2, issue 4) over real UDP against a real ``radiusd serve``, checked with
pyrad, plus the ``radiusd-admin`` commands for blocks and lockout settings.

One module-scoped server (lockout: 5 failures in 600 s → 600 s block) serves most tests, each
with its own user; metrics are read as deltas. Lockout settings live in the database (seeded
from ``[lockout]``), so tests that need others change them there and put them back.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from pyrad import packet as pyrad_packet
from sqlalchemy import select

from radiusd.config import load_config
from radiusd.crypto import PasswordHasher, SeedKey
from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, users
from radiusd.dictionary import RadiusDictionary
from radiusd.services.blocks import BlockService
from radiusd.services.otp import OtpService
from radiusd.services.users import UserService
from tests.fakes import race
from tests.support import RadiusClient, ServerProcess, admin, wait_for, write_config

PASSWORD = "correct-horse-battery"
WRONG = "wrong-horse-battery"
ACCEPT, REJECT, CHALLENGE = pyrad_packet.AccessAccept, pyrad_packet.AccessReject, pyrad_packet.AccessChallenge
LOCKOUT = {"max_failures": 5, "window_seconds": 600, "block_seconds": 600, "permanent": False}


# -- helpers -----------------------------------------------------------------------------------

class Store:
    """The server's SQLite database, opened from the test process (users, rows, audit events)."""

    def __init__(self, config_path):
        self.config = load_config(str(config_path))
        self.database = Database(self.config.database.url, pool_size=2)
        self.users = UserService(self.database, PasswordHasher(self.config.security), RadiusDictionary(),
                                 actor="test")
        self.blocks = BlockService(self.database, self.config.lockout, time.time, actor="test")

    def add(self, *names: str) -> None:
        for name in names:
            self.users.create(name, {}, password=PASSWORD)

    def row(self, username: str):
        with self.database.engine.connect() as conn:
            return conn.execute(select(users).where(users.c.username == username)).first()

    def events(self, username: str, type: str = "block") -> list:
        with self.database.engine.connect() as conn:
            return conn.execute(select(audit_events).where(audit_events.c.username == username,
                                                           audit_events.c.type == type)
                                .order_by(audit_events.c.id)).all()

    def blocked(self, username: str) -> bool:
        return username in {entry["username"] for entry in self.blocks.list_blocked()}

    def close(self) -> None:
        self.database.dispose()


def code_of(client: RadiusClient, user: str, password: str, **attributes) -> int:
    return client.send(client.access_request(user, password, **attributes))[1].code


def counters(server: ServerProcess) -> dict[str, float]:
    return {"bad_password": server.metric("radiusd_auth_decisions_total", reason="bad_password"),
            "bad_otp": server.metric("radiusd_auth_decisions_total", reason="bad_otp"),
            "blocked": server.metric("radiusd_auth_decisions_total", reason="blocked"),
            "lockouts": server.metric("radiusd_lockouts_total"),
            "duplicates": server.metric("radiusd_duplicate_requests_total", client="test")}


def delta(server: ServerProcess, before: dict[str, float]) -> dict[str, float]:
    after = counters(server)
    return {key: after[key] - before[key] for key in before}




def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("radiusd-admin: "), lines[0]
    return lines[0]


# -- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("blocking")
    config = write_config(directory, f"sqlite:///{directory / 'radiusd.db'}",
                          sections={"lockout": LOCKOUT, "server": {"auth_threads": 4}})
    admin(config, "db", "upgrade")
    process = ServerProcess(config, directory / "radiusd.log")
    process.store = Store(config)
    try:
        yield process.start()
    finally:
        process.stop()
        process.store.close()


@pytest.fixture
def store(server):
    return server.store


@pytest.fixture
def client(server, radius_client):
    return radius_client(server.auth_port)


@pytest.fixture
def lockout(store):
    """Change the stored lockout settings for one test; the module's are restored after it."""
    yield store.blocks.set_lockout_settings
    store.blocks.set_lockout_settings(LOCKOUT)


@pytest.fixture(scope="module")
def cli_config(tmp_path_factory):
    """A configured, upgraded database for the CLI tests (no server needed)."""
    directory = tmp_path_factory.mktemp("blocking-cli")
    config = write_config(directory, f"sqlite:///{directory / 'radiusd.db'}",
                          sections={"lockout": {"max_failures": 4, "window_seconds": 300, "block_seconds": 900}})
    admin(config, "db", "upgrade")
    store = Store(config)
    store.add("carl")
    yield config, store
    store.close()


# -- automatic blocks --------------------------------------------------------------------------

def test_wrong_passwords_up_to_the_limit_block_and_the_right_password_is_then_refused_unchecked(
        server, store, client):
    store.add("ann")
    before = counters(server)
    for attempt in range(1, 5):
        assert code_of(client, "ann", WRONG) == REJECT
        assert store.row("ann").failed_attempts == attempt
    assert not store.blocked("ann") and delta(server, before)["lockouts"] == 0

    blocked_from = datetime.now(timezone.utc)
    assert code_of(client, "ann", WRONG) == REJECT
    row = store.row("ann")
    assert row.failed_attempts == 5 and row.block_permanent is False
    assert blocked_from - timedelta(seconds=2) <= row.blocked_until - timedelta(seconds=600) <= \
        datetime.now(timezone.utc)
    assert delta(server, before) == {"bad_password": 5, "bad_otp": 0, "blocked": 0, "lockouts": 1,
                                     "duplicates": 0}

    # Blocked: the right password is refused as "blocked", and a wrong one is not even checked
    # (no bad_password decision, not counted as another failure).
    assert code_of(client, "ann", PASSWORD) == REJECT
    assert code_of(client, "ann", WRONG) == REJECT
    assert delta(server, before) == {"bad_password": 5, "bad_otp": 0, "blocked": 2, "lockouts": 1,
                                     "duplicates": 0}
    assert store.row("ann").failed_attempts == 5
    assert [event.reason for event in store.events("ann", "auth")][-2:] == ["blocked", "blocked"]
    [event] = store.events("ann")
    assert (event.result, event.reason, event.actor) == ("blocked", "automatic", "lockout")


def test_wrong_otp_codes_in_the_challenge_round_count_and_an_unanswered_challenge_is_no_success(
        server, store, client):
    store.add("otto")
    enrolment = admin(server.config_path, "otp", "enroll", "otto")
    uri = json.loads(enrolment.stdout)["otpauth_uri"]
    totp = pyotp.TOTP(parse_qs(urlparse(uri).query)["secret"][0])
    otp = OtpService(store.database, SeedKey.load(store.config.security.seed_key), store.config.mfa, time.time)
    assert otp.verify("otto", totp.now())  # the first code makes the enrolment verified
    wrong = next(code for code in ("000000", "111111", "222222")
                 if code not in {totp.at(time.time() + step * 30) for step in (-1, 0, 1, 2)})

    before = counters(server)
    for attempt in range(1, 6):
        # The right password gets a challenge: not a success, so the count is not cleared.
        _, reply = client.send(client.access_request("otto", PASSWORD))
        assert reply.code == CHALLENGE
        assert store.row("otto").failed_attempts == attempt - 1
        _, reply = client.send(client.access_request("otto", wrong, State=reply["State"][0]))
        assert reply.code == REJECT
        assert store.row("otto").failed_attempts == attempt
    assert delta(server, before) == {"bad_password": 0, "bad_otp": 5, "blocked": 0, "lockouts": 1,
                                     "duplicates": 0}
    assert store.blocked("otto")
    assert code_of(client, "otto", PASSWORD) == REJECT  # no challenge any more: blocked
    assert delta(server, before)["blocked"] == 1


def test_a_timed_block_ends_by_itself_and_the_next_failure_starts_a_fresh_series(
        server, store, client, lockout):
    # The CLI changes the stored settings; the running server uses them although [lockout] says 600.
    shown = admin(server.config_path, "settings", "lockout", "--block-seconds", "2")
    assert '"block_seconds": 2' in shown.stdout
    store.add("tim")
    for _ in range(5):
        assert code_of(client, "tim", WRONG) == REJECT
    row = store.row("tim")
    assert row.blocked_until - row.blocked_at == timedelta(seconds=2)
    assert code_of(client, "tim", PASSWORD) == REJECT
    assert store.blocked("tim")

    time.sleep(max(0.0, (row.blocked_until - datetime.now(timezone.utc)).total_seconds()) + 0.3)
    before = counters(server)
    assert code_of(client, "tim", WRONG) == REJECT
    assert store.row("tim").failed_attempts == 1 and not store.blocked("tim")
    assert code_of(client, "tim", PASSWORD) == ACCEPT
    assert store.row("tim").failed_attempts == 0
    assert delta(server, before)["lockouts"] == 0 and delta(server, before)["blocked"] == 0


def test_a_permanent_block_stays_until_user_unblock(server, store, client, lockout):
    lockout({"permanent": True, "block_seconds": 1})
    store.add("pam")
    for _ in range(5):
        assert code_of(client, "pam", WRONG) == REJECT
    row = store.row("pam")
    assert row.block_permanent is True and row.blocked_until is None
    time.sleep(1.2)  # longer than block_seconds: a permanent block ignores it
    before = counters(server)
    assert code_of(client, "pam", PASSWORD) == REJECT
    assert delta(server, before)["blocked"] == 1

    assert admin(server.config_path, "user", "unblock", "pam").returncode == 0
    assert code_of(client, "pam", PASSWORD) == ACCEPT
    assert [(event.result, event.reason) for event in store.events("pam")] == [
        ("blocked", "automatic"), ("unblocked", "manual")]
    assert store.events("pam")[-1].actor == "cli"


def test_a_successful_login_resets_the_count(server, store, client):
    store.add("sue")
    before = counters(server)
    for _ in range(4):
        assert code_of(client, "sue", WRONG) == REJECT
    assert code_of(client, "sue", PASSWORD) == ACCEPT
    assert store.row("sue").failed_attempts == 0
    for _ in range(4):
        assert code_of(client, "sue", WRONG) == REJECT
    assert store.row("sue").failed_attempts == 4 and not store.blocked("sue")  # 8 wrong, but not in a row
    assert code_of(client, "sue", WRONG) == REJECT  # the fifth of the new series blocks
    assert store.blocked("sue") and delta(server, before)["lockouts"] == 1


def test_twenty_concurrent_wrong_passwords_from_twenty_sockets_block_exactly_once(
        server, store, radius_client):
    store.add("connie")
    clients = [radius_client(server.auth_port) for _ in range(20)]
    requests = [client.access_request("connie", WRONG) for client in clients]
    before = counters(server)
    codes, errors = race(20, lambda index: clients[index].send(requests[index])[1].code)
    assert not errors, errors
    assert codes == [REJECT] * 20
    moved = delta(server, before)
    assert moved["lockouts"] == 1
    assert moved["bad_password"] + moved["blocked"] == 20
    assert moved["bad_password"] >= 5
    # Every wrong password that was checked was counted (none lost), and one block was recorded.
    assert store.row("connie").failed_attempts == moved["bad_password"]
    assert store.blocked("connie") and len(store.events("connie")) == 1


def test_retransmissions_of_a_wrong_password_are_counted_once(server, store, client):
    store.add("rex")
    before = counters(server)
    for attempt in range(1, 5):
        request = client.access_request("rex", WRONG)
        wire = request.RequestPacket()
        replies = []
        for _ in range(3):  # the NAS resends the same bytes after each timeout
            client.send_raw(wire)
            replies.append(client.sock.recv(4096))
        assert replies[0] == replies[1] == replies[2] and replies[0][0] == REJECT
        assert store.row("rex").failed_attempts == attempt
    assert not store.blocked("rex")  # 12 packets, 4 attempts
    assert delta(server, before)["duplicates"] == 8

    request = client.access_request("rex", WRONG)
    wire = request.RequestPacket()
    for _ in range(3):  # a burst: copies arrive while the first is being decided
        client.send_raw(wire)
    assert client.receive(request, wire).code == REJECT
    client.sock.settimeout(0.5)
    try:
        while True:  # drain the replies to copies answered from the cache, if any
            client.sock.recv(4096)
    except OSError:
        pass
    finally:
        client.sock.settimeout(5.0)
    assert store.row("rex").failed_attempts == 5
    moved = delta(server, before)
    assert moved["bad_password"] == 5 and moved["lockouts"] == 1
    assert store.blocked("rex") and len(store.events("rex")) == 1


# -- manual blocks, restart, gauge ---------------------------------------------------------------

def test_manual_block_via_cli_refuses_login_is_listed_with_remaining_seconds_and_audited(
        server, store, client):
    store.add("max")
    assert code_of(client, "max", PASSWORD) == ACCEPT
    shown = json.loads(admin(server.config_path, "user", "block", "max", "--seconds", "600",
                             "--reason", "lost laptop").stdout)
    assert (shown["username"], shown["reason"], shown["permanent"]) == ("max", "lost laptop", False)
    assert 598 <= shown["remaining_seconds"] <= 600

    before = counters(server)
    assert code_of(client, "max", PASSWORD) == REJECT
    assert delta(server, before)["blocked"] == 1 and delta(server, before)["bad_password"] == 0

    listed = json.loads(admin(server.config_path, "user", "list", "--blocked").stdout)
    [entry] = [item for item in listed if item["username"] == "max"]
    assert set(entry) == {"username", "reason", "blocked_at", "blocked_until", "remaining_seconds", "permanent",
                          "failed_attempts"}
    assert (entry["reason"], entry["permanent"], entry["failed_attempts"]) == ("lost laptop", False, 0)
    assert 590 <= entry["remaining_seconds"] <= shown["remaining_seconds"]
    blocked_at, until = datetime.fromisoformat(entry["blocked_at"]), datetime.fromisoformat(entry["blocked_until"])
    assert until - blocked_at == timedelta(seconds=600)

    assert admin(server.config_path, "user", "unblock", "max").returncode == 0
    assert code_of(client, "max", PASSWORD) == ACCEPT
    events = store.events("max")
    assert [(event.result, event.reason, event.actor) for event in events] == [
        ("blocked", "manual", "cli"), ("unblocked", "manual", "cli")]
    assert events[0].detail["reason"] == "lost laptop" and events[0].detail["permanent"] is False


def test_blocks_survive_a_restart_and_the_blocked_users_gauge_counts_them_after_it(make_server, radius_client):
    server = make_server(sections={"lockout": {"max_failures": 3, "window_seconds": 600, "block_seconds": 600}})
    store = Store(server.config_path)
    try:
        store.add("auto", "manual", "free")
        client = radius_client(server.auth_port)
        for _ in range(3):
            assert code_of(client, "auto", WRONG) == REJECT
        store.blocks.block("manual", permanent=True, reason="left the company")
        assert wait_for(lambda: server.metric("radiusd_blocked_users") == 2)

        server.stop()
        server.start()
        assert wait_for(lambda: server.metric("radiusd_blocked_users") == 2)
        client = radius_client(server.auth_port)
        for name in ("auto", "manual"):
            assert code_of(client, name, PASSWORD) == REJECT
        assert code_of(client, "free", PASSWORD) == ACCEPT
        assert server.metric("radiusd_auth_decisions_total", reason="blocked") == 2

        store.blocks.unblock("manual")
        assert wait_for(lambda: server.metric("radiusd_blocked_users") == 1)
        assert code_of(client, "manual", PASSWORD) == ACCEPT
    finally:
        store.close()


# -- CLI -----------------------------------------------------------------------------------------

def test_settings_lockout_shows_the_seeded_settings_and_changes_them(cli_config):
    config, store = cli_config
    try:
        assert json.loads(admin(config, "settings", "lockout").stdout) == {
            "max_failures": 4, "window_seconds": 300, "block_seconds": 900, "permanent": False}
        assert json.loads(admin(config, "settings", "lockout", "--max-failures", "3", "--window-seconds", "60",
                                "--permanent").stdout) == {
            "max_failures": 3, "window_seconds": 60, "block_seconds": 900, "permanent": True}
        assert json.loads(admin(config, "settings", "lockout", "--block-seconds", "120",
                                "--no-permanent").stdout) == {
            "max_failures": 3, "window_seconds": 60, "block_seconds": 120, "permanent": False}
        assert store.blocks.lockout_settings().model_dump() == {
            "max_failures": 3, "window_seconds": 60, "block_seconds": 120, "permanent": False}
    finally:
        store.blocks.set_lockout_settings({"max_failures": 4, "window_seconds": 300, "block_seconds": 900})


@pytest.mark.parametrize("args, field", [
    (("--max-failures", "0"), "max_failures"),
    (("--max-failures", "101"), "max_failures"),
    (("--window-seconds", "0"), "window_seconds"),
    (("--block-seconds", "-1"), "block_seconds"),
])
def test_settings_lockout_refuses_invalid_values_with_exit_1_and_one_line(cli_config, args, field):
    config, store = cli_config
    before = store.blocks.lockout_settings()
    result = admin(config, "settings", "lockout", *args, check=False)
    assert result.returncode == 1
    assert field in one_line_error(result)
    assert result.stdout == ""
    assert store.blocks.lockout_settings() == before


@pytest.mark.parametrize("args", [
    ("--seconds", "60"),                                     # no --reason
    ("--seconds", "60", "--permanent", "--reason", "both"),  # both durations
    ("--reason", "neither"),                                 # neither
    ("--seconds", "0", "--reason", "zero"),                  # not a duration
])
def test_user_block_usage_errors_exit_2_and_block_nobody(cli_config, args):
    config, store = cli_config
    result = admin(config, "user", "block", "carl", *args, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert not store.blocked("carl") and store.events("carl") == []


@pytest.mark.parametrize("args", [
    ("user", "block", "nobody", "--seconds", "60", "--reason", "x"),
    ("user", "block", "carl", "--seconds", "60", "--reason", " "),
    ("user", "unblock", "carl"),  # not blocked
    ("user", "unblock", "nobody"),
])
def test_failed_block_operations_exit_1_with_one_line(cli_config, args):
    config, store = cli_config
    result = admin(config, *args, check=False)
    assert result.returncode == 1
    one_line_error(result)
    assert not store.blocked("carl") and store.events("carl") == []
