"""Accounting (SPEC §4) over real UDP against a real ``radiusd serve``, with pyrad and with
FreeRADIUS's ``radclient`` as independent clients, plus the sessions store on SQLite and
PostgreSQL.

One module-scoped server (accounting on, a short housekeeping sweep) serves most tests; each
test uses its own session ids and usernames and reads metrics as deltas.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from datetime import datetime, timedelta, timezone

import pytest
from pyrad import packet as pyrad_packet
from sqlalchemy import insert, select, update

from radiusd.accounting import AccountingRequest
from radiusd.config import AccountingSection
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, sessions, users
from radiusd.disconnect import ACK, NAK, DisconnectResult
from radiusd.services.sessions import SessionService
from tests.fakes import Clock
from tests.support import (
    DICTIONARY,
    SECRET,
    AcctClient,
    ServerProcess,
    admin,
    drop_database,
    free_port,
    need_program,
    serving,
    session_row,
    wait_for,
    write_config,
)

SWEEP = 0.3


# -- helpers -------------------------------------------------------------------------------------

def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# -- the server ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("accounting")
    config = write_config(directory, f"sqlite:///{directory / 'radiusd.db'}", sections={
        "server": {"acct_port": free_port()},
        "accounting": {"sweep_interval_seconds": SWEEP, "stale_after_intervals": 2},
    }, nas=[{"name": "test", "address": "127.0.0.1/32", "secret": SECRET.decode()},
            {"name": "branch", "address": "127.0.0.8/29", "secret": SECRET.decode()}])
    admin(config, "db", "upgrade")
    with serving(config, directory) as process:
        yield process


@pytest.fixture
def client(server):
    made = []

    def make(**kwargs) -> AcctClient:
        made.append(AcctClient(server.settings["server"]["acct_port"], **kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


# -- over UDP ------------------------------------------------------------------------------------

def test_start_interim_stop_maintain_the_session_with_gigawords(server, client):
    nas = client()
    sid, user = unique("S"), unique("u")
    before = server.metric("radiusd_accounting_requests_total", client="test", status_type="start")
    nas.account("Start", sid, User_Name=user, Framed_IP_Address="10.20.0.5", Calling_Station_Id="02-00-00-00-00-07",
                NAS_Port=12, NAS_IP_Address="127.0.0.1", Acct_Interim_Interval=300)
    row = session_row(server.database, sid)
    assert (row.username, row.nas, row.status, row.framed_ip_address, row.nas_port) == \
        (user, "test", "active", "10.20.0.5", 12)
    assert (row.calling_station_id, row.interim_interval, row.input_octets) == ("02-00-00-00-00-07", 300, 0)

    nas.account("Interim-Update", sid, User_Name=user, Acct_Input_Octets=100, Acct_Input_Gigawords=1,
                Acct_Output_Octets=2000, Acct_Session_Time=60)
    row = session_row(server.database, sid)
    assert (row.input_octets, row.output_octets, row.status) == (2 ** 32 + 100, 2000, "active")

    nas.account("Stop", sid, User_Name=user, Acct_Input_Octets=300, Acct_Input_Gigawords=1, Acct_Output_Octets=5000,
                Acct_Session_Time=120, Acct_Terminate_Cause="User-Request")
    row = session_row(server.database, sid)
    assert (row.status, row.stop_cause, row.input_octets, row.output_octets) == \
        ("stopped", "User-Request", 2 ** 32 + 300, 5000)
    assert row.stopped_at is not None and row.started_at <= row.updated_at
    assert server.metric("radiusd_accounting_requests_total", client="test", status_type="start") == before + 1
    assert server.metric("radiusd_accounting_requests_total", client="test", status_type="stop") >= 1


def test_late_and_repeated_packets_never_move_totals_backwards_or_reopen(server, client):
    nas = client()
    sid = unique("S")
    nas.account("Interim-Update", sid, User_Name="late", Acct_Input_Octets=500, Acct_Session_Time=30)  # no Start seen
    row = session_row(server.database, sid)
    assert (row.status, row.input_octets) == ("active", 500)
    nas.account("Start", sid, User_Name="late")  # the Start arrives after the interim
    nas.account("Stop", sid, User_Name="late", Acct_Input_Octets=900, Acct_Terminate_Cause="Idle-Timeout")
    nas.account("Interim-Update", sid, User_Name="late", Acct_Input_Octets=700)  # an old interim, late
    row = session_row(server.database, sid)
    assert (row.status, row.input_octets, row.stop_cause) == ("stopped", 900, "Idle-Timeout")


def test_stop_for_an_unknown_session_creates_it_closed(server, client):
    sid = unique("S")
    client().account("Stop", sid, User_Name="ghost", Acct_Output_Octets=42, Acct_Session_Time=3600)
    row = session_row(server.database, sid)
    assert (row.status, row.output_octets) == ("stopped", 42)
    assert row.stopped_at - row.started_at >= timedelta(seconds=3599)


def test_retransmission_is_answered_from_the_cache_with_identical_bytes_and_counted_once(server, client):
    nas = client()
    before = server.metric("radiusd_accounting_requests_total", client="test", status_type="interim_update")
    duplicates = server.metric("radiusd_duplicate_requests_total", client="test")
    request = nas.accounting_request("Interim-Update", unique("S"), User_Name="dup", Acct_Input_Octets=1)
    (wire, first), (rewire, again) = nas.send(request), nas.send(request)  # a retransmission: the same bytes
    assert wire == rewire
    assert first.raw_packet == again.raw_packet
    assert server.metric("radiusd_accounting_requests_total", client="test", status_type="interim_update") == before + 1
    assert server.metric("radiusd_duplicate_requests_total", client="test") == duplicates + 1


def test_bad_request_authenticator_and_unknown_nas_are_dropped(server, client):
    bad = server.metric("radiusd_dropped_packets_total", reason="bad_authenticator", client="test")
    unknown = server.metric("radiusd_dropped_packets_total", reason="unknown_client", client="unknown")
    sid = unique("S")
    wrong_secret = client(secret=b"not-the-shared-secret")
    wrong_secret.expect_no_answer(wrong_secret.accounting_request("Start", sid, User_Name="mallory"))
    stranger = client(source="127.0.0.2")  # not a NAS
    stranger.expect_no_answer(stranger.accounting_request("Start", sid, User_Name="mallory"))
    assert server.metric("radiusd_dropped_packets_total", reason="bad_authenticator", client="test") == bad + 1
    assert server.metric("radiusd_dropped_packets_total", reason="unknown_client", client="unknown") == unknown + 1
    assert session_row(server.database, sid) is None


def test_accounting_on_closes_the_sessions_of_that_nas_only(server, client):
    first, second = client(source="127.0.0.9"), client(source="127.0.0.10")  # two devices of NAS "branch"
    mine, theirs = unique("S"), unique("S")
    first.account("Start", mine, User_Name="on-a")
    second.account("Start", theirs, User_Name="on-b")
    before = server.metric("radiusd_accounting_requests_total", client="branch", status_type="accounting_on")
    first.account("Accounting-On")
    row = session_row(server.database, mine)
    assert (row.status, row.stop_cause, row.nas, row.nas_address) == ("stopped", "NAS-Reboot", "branch", "127.0.0.9")
    assert session_row(server.database, theirs).status == "active"
    second.account("Accounting-Off")
    assert session_row(server.database, theirs).status == "stopped"
    assert server.metric("radiusd_accounting_requests_total", client="branch", status_type="accounting_on") == before + 1
    assert server.metric("radiusd_accounting_requests_total", client="branch", status_type="accounting_off") >= 1


def test_status_server_on_the_accounting_port_gets_an_accounting_response(server, client):
    nas = client()
    request = pyrad_packet.AcctPacket(code=pyrad_packet.StatusServer, secret=SECRET, dict=DICTIONARY, id=7)
    _, reply = nas.send(request)  # verified, its Message-Authenticator over the request's authenticator
    assert reply.code == pyrad_packet.AccountingResponse


def test_silent_session_is_marked_stale_and_revived_by_news(server, client):
    nas = client()
    sid = unique("S")
    nas.account("Start", sid, User_Name="quiet", Acct_Interim_Interval=1)  # stale after 2 × 1 s
    assert wait_for(lambda: session_row(server.database, sid).status == "stale", timeout=8)
    nas.account("Interim-Update", sid, User_Name="quiet", Acct_Interim_Interval=60, Acct_Input_Octets=5)
    assert session_row(server.database, sid).status == "active"


def test_active_sessions_gauge_follows_the_table_and_survives_a_restart(tmp_path):
    directory = tmp_path / "gauge"
    directory.mkdir()
    config = write_config(directory, f"sqlite:///{directory / 'radiusd.db'}", sections={
        "server": {"acct_port": free_port()}})
    admin(config, "db", "upgrade")
    process = ServerProcess(config, directory / "radiusd.log").start()
    nas = AcctClient(process.settings["server"]["acct_port"])
    try:
        for number in range(3):
            nas.account("Start", f"G-{number}", User_Name=f"g{number}")
        nas.account("Stop", "G-0", User_Name="g0")
        assert wait_for(lambda: process.metric("radiusd_active_sessions") == 2)
        assert process.stop() == 0
        process.start()
        assert wait_for(lambda: process.metric("radiusd_active_sessions") == 2)
    finally:
        nas.close()
        process.stop()


def test_radclient_start_interim_stop(server, client):
    radclient = need_program("radclient")
    sid = unique("RC")
    port = server.settings["server"]["acct_port"]

    def send(status: str, extra: str = "") -> subprocess.CompletedProcess:
        attributes = f'User-Name = "rc-user", Acct-Status-Type = {status}, Acct-Session-Id = "{sid}"{extra}'
        return subprocess.run([radclient, "-x", "-r", "1", "-t", "3", f"127.0.0.1:{port}", "acct", SECRET.decode()],
                              input=attributes + "\n", capture_output=True, text=True, timeout=20)

    for status, extra in (("Start", ', Framed-IP-Address = 10.9.9.9'),
                          ("Interim-Update", ", Acct-Input-Octets = 10, Acct-Input-Gigawords = 1"),
                          ("Stop", ", Acct-Input-Octets = 20, Acct-Input-Gigawords = 1, "
                                   "Acct-Terminate-Cause = Session-Timeout, Message-Authenticator = 0x00")):
        result = send(status, extra)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Received Accounting-Response" in result.stdout, result.stdout
    row = session_row(server.database, sid)
    assert (row.username, row.framed_ip_address, row.status, row.stop_cause, row.input_octets) == \
        ("rc-user", "10.9.9.9", "stopped", "Session-Timeout", 2 ** 32 + 20)


def test_request_that_cannot_be_recorded_gets_no_response(postgres_url, make_server):
    server = make_server(postgres_url, sections={"server": {"acct_port": free_port()}})
    nas = AcctClient(server.settings["server"]["acct_port"])
    try:
        nas.account("Start", "DB-1", User_Name="dbdown")
        drop_database(postgres_url)
        nas.expect_no_answer(nas.accounting_request("Interim-Update", "DB-1", User_Name="dbdown"), wait=2.0)
        assert wait_for(lambda: server.metric("radiusd_dropped_packets_total", reason="backend_error", client="test") >= 1)
        assert server.metric("radiusd_accounting_requests_total", client="test", status_type="interim_update") == 0
    finally:
        nas.close()


# -- the store, on SQLite and PostgreSQL ----------------------------------------------------------

@pytest.fixture
def store(database_url):
    database = Database(database_url, pool_size=2)
    migrate.upgrade(database)
    service = SessionService(database, AccountingSection(stale_after_intervals=2, default_interim_seconds=60,
                                                         session_retention_days=1),
                             clock=Clock(time.time()), actor="test")
    yield service
    database.dispose()


def accounting(status: str, session: str = "S", *, at: float, **values) -> AccountingRequest:
    return AccountingRequest(nas="nas1", source="192.0.2.10", status_type=status, session_id=session,
                             received_at=at, **values)


def test_store_upserts_in_any_order_and_counts_never_go_back(store):
    now = store.clock()
    store.record(accounting("stop", at=now + 20, user_name="ann", input_octets=2 ** 40, output_octets=9,
                            terminate_cause="Lost-Carrier", session_time=20))
    store.record(accounting("interim_update", at=now + 10, user_name="ann", input_octets=10, output_octets=99,
                            framed_ip_address="10.0.0.1"))
    store.record(accounting("start", at=now, user_name="ann"))
    with store.database.engine.connect() as conn:
        row = conn.execute(select(sessions)).one()
    assert (row.status, row.stop_cause, row.input_octets, row.output_octets) == ("stopped", "Lost-Carrier", 2 ** 40, 99)
    assert row.framed_ip_address == "10.0.0.1"
    assert abs((row.started_at - datetime.fromtimestamp(now, timezone.utc)).total_seconds()) < 1
    assert abs((row.updated_at - datetime.fromtimestamp(now + 20, timezone.utc)).total_seconds()) < 1


def test_store_marks_stale_purges_old_and_counts_active(store):
    now = store.clock()
    store.record(accounting("start", "fresh", at=now, user_name="bea"))
    store.record(accounting("start", "quiet", at=now - 200, user_name="bea"))  # 2 × 60 s without news
    store.record(accounting("stop", "old", at=now - 3 * 86400, user_name="bea"))
    assert store.count_active() == 2
    store.sweep()
    with store.database.engine.connect() as conn:
        statuses = dict(conn.execute(select(sessions.c.session_id, sessions.c.status)).all())
    assert statuses == {"fresh": "active", "quiet": "stale"}
    assert store.count_active() == 1


def test_store_accounting_off_closes_that_sources_sessions(store):
    now = store.clock()
    store.record(accounting("start", "a", at=now, user_name="cy"))
    store.record(AccountingRequest(nas="nas1", source="192.0.2.99", status_type="start", session_id="b",
                                   user_name="cy", received_at=now))
    store.record(AccountingRequest(nas="nas1", source="192.0.2.10", status_type="accounting_off", received_at=now))
    with store.database.engine.connect() as conn:
        statuses = dict(conn.execute(select(sessions.c.session_id, sessions.c.status)).all())
    assert statuses == {"a": "stopped", "b": "active"}


def test_store_records_disconnect_results(store):
    now = store.clock()
    store.record(accounting("start", "one", at=now, user_name="dee"))
    store.record(accounting("start", "two", at=now, user_name="dee"))
    targets, unreachable = store._targets("dee")
    assert targets == [] and [r.result for r in unreachable] == ["error", "error"]  # no NAS known here
    first, second = (result.target for result in unreachable)
    views = store.record_results([DisconnectResult(first, ACK, None, 1),
                                  DisconnectResult(second, NAK, "Session-Context-Not-Found", 3)], "admin")
    assert [(v["session_id"], v["status"], v["result"], v["error_cause"]) for v in views] == [
        ("one", "terminated", "ack", None), ("two", "active", "nak", "Session-Context-Not-Found")]
    assert views[0]["stop_cause"] == "Admin-Reset" and views[0]["stopped_at"] is not None
    assert [view["session_id"] for _, view in store.list_user_sessions("dee")] == ["two"]
    with store.database.engine.connect() as conn:
        events = conn.execute(select(audit_events.c.result, audit_events.c.reason)
                              .where(audit_events.c.type == "session")).all()
    assert sorted(events) == [("ack", "admin"), ("nak", "admin")]
    # a Stop after the ACK keeps the session terminated, with the NAS's cause
    store.record(accounting("stop", "one", at=now + 5, user_name="dee", terminate_cause="Admin-Reset",
                            input_octets=77))
    with store.database.engine.connect() as conn:
        row = conn.execute(select(sessions).where(sessions.c.session_id == "one")).one()
    assert (row.status, row.input_octets) == ("terminated", 77)


def test_store_expiry_is_acted_on_once_and_again_after_an_extension(store):
    now = datetime.fromtimestamp(store.clock(), timezone.utc)
    with store.database.writer.begin() as conn:
        conn.execute(insert(users).values(username="eve", enabled=True, reply_attributes=[], created_at=now,
                                          updated_at=now, expires_at=now - timedelta(minutes=1)))
    assert store.expire_users() == ["eve"]
    assert store.expire_users() == []
    with store.database.writer.begin() as conn:  # extended, then expired again
        conn.execute(update(users).values(expires_at=now + timedelta(seconds=30)))
    store.clock.advance(60)
    assert store.expire_users() == ["eve"]
    with store.database.engine.connect() as conn:
        count = len(conn.execute(select(audit_events).where(audit_events.c.type == "expired")).all())
    assert count == 2
