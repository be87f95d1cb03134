"""Inputs that reach the database (issue 13): every stored string fits its column on SQLite and
PostgreSQL alike, or is cut with a marker; the longest attributes a NAS can send get a normal
answer over real UDP, with their audit rows and sessions stored."""

from __future__ import annotations

import time

from pyrad import packet as pyrad_packet
from sqlalchemy import select

from radiusd.db.engine import Database
from radiusd.db.tables import CUT_MARKER, audit_events, fit, fitted, push_requests, sessions, users, utcnow
from radiusd.services.audit import record_event
from radiusd.services.push import PushService
from tests.support import AcctClient, add_users, free_port

MAX = 253  # octets in one RADIUS attribute value (RFC 2865 §5)
PASSWORD = "Correct-Horse-7731"


def longest(prefix: str) -> str:
    """A value of exactly 253 octets that is 128 characters: two-octet "é"s after an ASCII prefix."""
    assert len(prefix) % 2 == 1
    value = prefix + "é" * ((MAX - len(prefix)) // 2)
    assert len(value.encode()) == MAX
    return value


def audit_rows(database: Database, **where) -> list:
    query = select(audit_events).order_by(audit_events.c.id)
    for name, value in where.items():
        query = query.where(audit_events.c[name] == value)
    with database.engine.connect() as conn:
        return conn.execute(query).all()


# -- the helper --------------------------------------------------------------------------------------

def test_fit_cuts_a_long_string_to_its_column_with_a_marker():
    column = audit_events.c.reason  # String(64)
    assert fit(column, "x" * 64) == "x" * 64
    cut = fit(column, "x" * 65)
    assert len(cut) == 64 and cut == "x" * 63 + CUT_MARKER
    assert fit(column, "ü" * 200) == "ü" * 63 + CUT_MARKER  # characters, as PostgreSQL counts them
    assert fit(column, None) is None and fit(column, "") == ""
    assert fit(audit_events.c.detail, {"a": "x" * 1000}) == {"a": "x" * 1000}  # JSON: no length
    assert fit(users.c.description, "x" * 10_000) == "x" * 10_000  # Text: no length


def test_fitted_reads_every_length_from_the_table():
    values = fitted(sessions, {"session_id": "s" * 300, "nas": "n" * 300, "nas_port": 7, "username": None})
    assert (len(values["session_id"]), len(values["nas"])) == (253, 64)
    assert values["session_id"].endswith(CUT_MARKER) and values["nas"].endswith(CUT_MARKER)
    assert (values["nas_port"], values["username"]) == (7, None)


# -- the write paths, on both databases -------------------------------------------------------------

def test_an_audit_event_with_overlong_strings_is_stored_cut(database):
    username = longest("u")
    record_event(database, "x" * 100, username=username + "z" * 200, client="c" * 300, result="r" * 100,
                 reason="why" * 100, actor="a" * 300, detail={"calling_station_id": "c" * 1000})
    [row] = audit_rows(database)
    assert row.username == username + "z" * (253 - len(username) - 1) + CUT_MARKER
    for name in ("type", "client", "result", "reason", "actor"):
        value = getattr(row, name)
        assert len(value) == audit_events.c[name].type.length and value.endswith(CUT_MARKER), name
    assert row.detail == {"calling_station_id": "c" * 1000}


def test_a_253_octet_username_is_stored_whole_in_the_audit_log(database):
    username = longest("u")
    record_event(database, "auth", username=username, client="test", result="reject", reason="unknown_user")
    assert [row.username for row in audit_rows(database)] == [username]


def test_a_push_request_with_overlong_strings_is_stored_cut(database):
    with database.writer.begin() as conn:
        user_id = conn.execute(users.insert().values(
            username="bob", reply_attributes=[], created_at=utcnow(), updated_at=utcnow())).inserted_primary_key[0]
    pushes = PushService(database, time.time, ttl_seconds=60)
    calling = longest("c")
    created = pushes.create(user_id, "bob", device_row=None, nas="n" * 100, calling_station_id=calling,
                            description="d" * 500, requested_by="api" * 40)
    with database.engine.connect() as conn:
        row = conn.execute(select(push_requests)).one()
    assert row.calling_station_id == created["calling_station_id"] == calling  # 253 octets fit whole
    assert row.description == "d" * 127 + CUT_MARKER and row.nas == "n" * 63 + CUT_MARKER
    assert row.requested_by == ("api" * 40)[:63] + CUT_MARKER


# -- over UDP, against a running server --------------------------------------------------------------

def test_the_longest_attributes_get_a_normal_answer_and_are_stored(database_url, make_server, radius_client):
    acct_port = free_port()
    server = make_server(database_url, sections={"server": {"acct_port": acct_port}})
    add_users(server.config_path, {"known": []}, PASSWORD)
    stranger, calling, called, nas_id, session_id = (longest(p) for p in "uCdNs")
    attributes = dict(Calling_Station_Id=calling, Called_Station_Id=called, NAS_Identifier=nas_id)
    client = radius_client(server.auth_port)

    _, reply = client.send(client.access_request(stranger, PASSWORD, **attributes))
    assert reply.code == pyrad_packet.AccessReject
    _, reply = client.send(client.access_request("known", PASSWORD, **attributes))
    assert reply.code == pyrad_packet.AccessAccept

    accounting = AcctClient(acct_port)
    try:
        for status in ("Start", "Interim-Update", "Stop"):
            request = accounting.accounting_request(status, session_id, User_Name=stranger, **attributes,
                                                    Acct_Input_Octets=2 ** 32 - 1, Acct_Input_Gigawords=2 ** 32 - 1,
                                                    Acct_Session_Time=2 ** 32 - 1, Acct_Terminate_Cause="User-Request")
            _, reply = accounting.send(request)
            assert reply.code == pyrad_packet.AccountingResponse, status
    finally:
        accounting.close()

    database = Database(database_url, pool_size=1)
    try:
        [rejected] = audit_rows(database, type="auth", username=stranger)
        assert (rejected.result, rejected.reason, rejected.client) == ("reject", "unknown_user", "test")
        assert rejected.detail["calling_station_id"] == calling
        [accepted] = audit_rows(database, type="auth", username="known")
        assert accepted.result == "accept" and accepted.detail["calling_station_id"] == calling
        with database.engine.connect() as conn:
            session = conn.execute(select(sessions).where(sessions.c.session_id == session_id)).one()
        assert (session.username, session.calling_station_id, session.nas_identifier, session.status) == \
            (stranger, calling, nas_id, "stopped")
    finally:
        database.dispose()
    assert "Traceback" not in server.log()
