"""The audit plugin on SQLite: for every decision it is told, one audit row of type "auth" and one
FreeRADIUS-style line ("Login OK", "Login incorrect", "Challenge"), neither holding a secret."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from twisted.logger import formatEvent, globalLogPublisher

from radiusd.db.tables import audit_events
from radiusd.decisions import Accept, Challenge, Reason, Reject
from radiusd.pipeline import UNSUPPORTED
from tests.fakes import PASSWORD, auth_request, local_user

STATE = b"S" * 20
WHERE = "(from client nas1 port 7 cli 02-00-00-00-00-01)"


@pytest.fixture
def audit(make_world):
    world = make_world()
    return world, world.plugin("audit")


@pytest.fixture
def lines():
    """The messages logged in the radiusd.auth namespace."""
    seen = []

    def observe(event):
        if event.get("log_namespace") == "radiusd.auth":
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def rows(world) -> list:
    with world.database.engine.connect() as conn:
        return conn.execute(select(audit_events).where(audit_events.c.type == "auth").order_by(audit_events.c.id)).all()


def tell(plugin, decision, user: str | None = "alice", **fields):
    request = auth_request(user, PASSWORD, nas_port=7, calling_station_id="02-00-00-00-00-01", **fields)
    plugin.radiusd_post_auth(request=request, user=local_user(user) if user else None, decision=decision)


@pytest.mark.parametrize("decision, result, line", [
    (Accept(decided_by="local_users"), "accept", f"Login OK: [alice] {WHERE}"),
    (Challenge(STATE, "Code?", "totp", "totp"), "challenge", f"Challenge: [alice] {WHERE}"),
    (Reject(Reason.BAD_PASSWORD, "local_users"), "reject", f"Login incorrect (bad_password): [alice] {WHERE}"),
    (Reject(Reason.UNSUPPORTED_AUTH_TYPE, "pipeline", UNSUPPORTED["chap"]), "reject",
     f"Login incorrect (unsupported_auth_type: {UNSUPPORTED['chap']}): [alice] {WHERE}"),
])
def test_every_decision_gets_one_audit_row_and_one_log_line(audit, lines, decision, result, line):
    world, plugin = audit
    tell(plugin, decision)
    [row] = rows(world)
    assert (row.username, row.client, row.result, row.reason) == ("alice", "nas1", result, str(decision.reason))
    assert row.detail == {"calling_station_id": "02-00-00-00-00-01", "nas_port": 7, "decided_by": decision.decided_by}
    assert lines == [line]


def test_a_request_naming_nobody_is_audited_without_a_name(audit, lines):
    world, plugin = audit
    tell(plugin, Reject(Reason.UNKNOWN_USER, "pipeline"), user=None)
    [row] = rows(world)
    assert (row.username, row.result, row.reason) == (None, "reject", "unknown_user")
    assert lines == [f"Login incorrect (unknown_user): [] {WHERE}"]


def test_missing_port_and_station_are_shown_as_zero_and_empty(audit, lines):
    world, plugin = audit
    plugin.radiusd_post_auth(request=auth_request("alice"), user=local_user("alice"), decision=Accept())
    assert lines == ["Login OK: [alice] (from client nas1 port 0 cli )"]
    assert rows(world)[0].detail == {"calling_station_id": None, "nas_port": None, "decided_by": ""}


def test_neither_the_row_nor_the_line_holds_the_password_or_the_state(audit, lines):
    world, plugin = audit
    for decision in (Accept(), Reject(Reason.BAD_PASSWORD), Challenge(STATE, "Code?", "totp")):
        tell(plugin, decision, state=STATE)
    written = json.dumps([tuple(map(str, row)) for row in rows(world)]) + "\n".join(lines)
    for secret in (PASSWORD, STATE.decode(), STATE.hex()):
        assert secret not in written
    assert len(rows(world)) == len(lines) == 3
