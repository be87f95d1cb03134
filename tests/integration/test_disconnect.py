"""Terminating sessions (SPEC §4, RFC 5176) against a fake NAS written here: a real UDP listener
on a loopback address that checks every Disconnect-Request with pyrad (Request Authenticator,
Message-Authenticator, the session's attributes) and answers by the Acct-Session-Id's prefix:
``ACK-`` with Disconnect-ACK, ``NAK-`` with Disconnect-NAK and Error-Cause 503, ``SIL-`` not at
all (the client retries, then records a timeout).

The server path (automatic lockout, the expiry sweep: the Twisted client) and the CLI path
(``radiusd-admin user disconnect|disable|block``: the blocking client) are both exercised.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from pyrad import packet as pyrad_packet
from sqlalchemy import select, update

from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, sessions, users
from tests.support import (SECRET, AcctClient, FakeNas, RadiusClient, admin, free_port, serving, session_id, session_row,
                           wait_for, write_config)

PASSWORD = "correct-horse-battery"
TIMEOUT = 0.2  # disconnect_timeout_seconds: tries at 0, 0.2 and 0.6 s, timeout at 1.4 s


def audit(database: Database, username: str, type: str = "session") -> list:
    with database.engine.connect() as conn:
        return conn.execute(select(audit_events).where(audit_events.c.username == username,
                                                       audit_events.c.type == type)).all()


# -- the server and its NASes ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def nas():
    fake = FakeNas("127.0.0.1")
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def branch_nas():
    """One device (127.0.0.9) of the NAS entry ``branch`` = 127.0.0.8/29."""
    fake = FakeNas("127.0.0.9")
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, nas, branch_nas):
    directory = tmp_path_factory.mktemp("disconnect")
    config = write_config(directory, f"sqlite:///{directory / 'radiusd.db'}", sections={
        "server": {"acct_port": free_port()},
        "lockout": {"max_failures": 2},
        "accounting": {"disconnect_timeout_seconds": TIMEOUT, "disconnect_attempts": 3,
                       "sweep_interval_seconds": 0.3},
    }, nas=[{"name": "test", "address": "127.0.0.1/32", "secret": SECRET.decode(), "coa_port": nas.port},
            {"name": "branch", "address": "127.0.0.8/29", "secret": SECRET.decode(), "coa_port": branch_nas.port}])
    admin(config, "db", "upgrade")
    with serving(config, directory) as process:
        yield process
    assert nas.problems == [] and branch_nas.problems == []


def start_session(server, username: str, sid: str, source: str = "127.0.0.1", password: bool = False) -> None:
    if password:
        admin(server.config_path, "user", "add", username, "--password-stdin", stdin=PASSWORD + "\n")
    client = AcctClient(server.settings["server"]["acct_port"], source=source)
    try:
        client.account("Start", sid, User_Name=username, Framed_IP_Address="10.30.0.7", NAS_IP_Address=source)
    finally:
        client.close()


# -- the CLI: blocking client -------------------------------------------------------------------------

def test_cli_lists_and_disconnects_a_session_acknowledged_by_the_nas(server, nas):
    sid = session_id("ACK")
    start_session(server, "cli-ack", sid)
    listed = json.loads(admin(server.config_path, "user", "sessions", "cli-ack").stdout)
    assert [(item["session_id"], item["status"], item["framed_ip_address"]) for item in listed] == \
        [(sid, "active", "10.30.0.7")]

    result = admin(server.config_path, "user", "disconnect", "cli-ack")
    [item] = json.loads(result.stdout)
    assert (item["session_id"], item["result"], item["error_cause"], item["status"]) == (sid, "ack", None, "terminated")
    [received] = nas.requests_for(sid)
    request = received.packet
    assert request["User-Name"] == ["cli-ack"] and request["NAS-IP-Address"] == ["127.0.0.1"]
    assert request["Framed-IP-Address"] == ["10.30.0.7"]
    assert abs(request["Event-Timestamp"][0] - time.time()) < 60
    row = session_row(server.database, sid)
    assert (row.status, row.disconnect_result, row.stop_cause) == ("terminated", "ack", "Admin-Reset")
    [event] = audit(server.database, "cli-ack")
    assert (event.result, event.reason, event.actor, event.client) == ("ack", "admin", "cli", "test")
    assert json.loads(admin(server.config_path, "user", "sessions", "cli-ack").stdout) == []


def test_cli_records_a_nak_with_its_error_cause_and_fails(server, nas):
    sid = session_id("NAK")
    start_session(server, "cli-nak", sid)
    result = admin(server.config_path, "user", "disconnect", "cli-nak", check=False)
    assert result.returncode == 1
    [item] = json.loads(result.stdout)
    assert (item["result"], item["error_cause"], item["status"]) == ("nak", "Session-Context-Not-Found", "active")
    row = session_row(server.database, sid)
    assert (row.status, row.disconnect_result, row.disconnect_error_cause) == \
        ("active", "nak", "Session-Context-Not-Found")


def test_cli_retries_a_silent_nas_then_records_a_timeout(server, nas):
    sid = session_id("SIL")
    start_session(server, "cli-silent", sid)
    began = time.monotonic()
    result = admin(server.config_path, "user", "disconnect", "cli-silent", check=False)
    assert result.returncode == 1
    assert time.monotonic() - began >= TIMEOUT * 7
    [item] = json.loads(result.stdout)
    assert item["result"] == "timeout"
    tries = nas.requests_for(sid)
    assert len(tries) == 3 and len({received.data for received in tries}) == 1  # identical retransmissions
    assert session_row(server.database, sid).disconnect_result == "timeout"


def test_cli_disable_disconnects_the_users_sessions(server, nas):
    sid = session_id("ACK")
    start_session(server, "cli-disabled", sid, password=True)
    admin(server.config_path, "user", "disable", "cli-disabled")
    assert len(nas.requests_for(sid)) == 1
    assert session_row(server.database, sid).status == "terminated"
    [event] = audit(server.database, "cli-disabled")
    assert event.reason == "disabled"


def test_manual_block_disconnects_through_the_nas_address_of_a_cidr_entry(server, nas, branch_nas):
    sid = session_id("ACK")
    start_session(server, "cli-blocked", sid, source="127.0.0.9", password=True)
    admin(server.config_path, "user", "block", "cli-blocked", "--seconds", "600", "--reason", "stolen laptop")
    [received] = branch_nas.requests_for(sid)
    assert received.packet["NAS-IP-Address"] == ["127.0.0.9"]
    assert nas.requests_for(sid) == []
    assert session_row(server.database, sid).status == "terminated"


# -- inside the server: the Twisted client ----------------------------------------------------------

def test_automatic_lockout_disconnects_and_a_silent_nas_times_out_after_the_retries(server, nas):
    sid = session_id("SIL")
    start_session(server, "locked-out", sid, password=True)
    timeouts = server.metric("radiusd_disconnect_requests_total", result="timeout")
    client = RadiusClient(server.auth_port)
    try:
        for _ in range(2):  # [lockout] max_failures = 2
            _, reply = client.send(client.access_request("locked-out", "wrong-password"))
            assert reply.code == pyrad_packet.AccessReject
    finally:
        client.close()
    assert len(nas.wait_for(sid, count=3)) == 3
    assert wait_for(lambda: session_row(server.database, sid).disconnect_result == "timeout", timeout=5)
    assert server.metric("radiusd_disconnect_requests_total", result="timeout") == timeouts + 1
    [event] = audit(server.database, "locked-out")
    assert (event.result, event.reason, event.detail["attempts"]) == ("timeout", "blocked", 3)
    assert session_row(server.database, sid).status == "active"  # the NAS never confirmed


def test_expiry_sweep_marks_the_user_expired_once_and_disconnects(server, nas):
    sid = session_id("NAK")
    start_session(server, "expiring", sid, password=True)
    naks = server.metric("radiusd_disconnect_requests_total", result="nak")
    with server.database.writer.begin() as conn:  # behind the services' back: only the sweep can see it
        conn.execute(update(users).where(users.c.username == "expiring")
                     .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert nas.wait_for(sid)
    assert wait_for(lambda: session_row(server.database, sid).disconnect_result == "nak")
    assert server.metric("radiusd_disconnect_requests_total", result="nak") == naks + 1
    time.sleep(0.7)  # two more sweeps
    [expired] = audit(server.database, "expiring", type="expired")
    assert expired.result == "expired"
    assert len(nas.requests_for(sid)) == 1
    assert session_row(server.database, sid).disconnect_error_cause == "Session-Context-Not-Found"


def test_acknowledged_disconnect_from_the_server_terminates_and_counts(server, nas):
    sid = session_id("ACK")
    start_session(server, "expiring-ack", sid, password=True)
    acks = server.metric("radiusd_disconnect_requests_total", result="ack")
    with server.database.writer.begin() as conn:
        conn.execute(update(users).where(users.c.username == "expiring-ack")
                     .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    assert wait_for(lambda: session_row(server.database, sid).status == "terminated")
    assert server.metric("radiusd_disconnect_requests_total", result="ack") == acks + 1
    with server.database.engine.connect() as conn:
        assert conn.execute(select(sessions.c.stop_cause).where(sessions.c.session_id == sid)).scalar() == "Admin-Reset"
