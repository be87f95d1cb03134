"""Console operators (SPEC §10, issue 15): OperatorService and ConsoleSessionService on SQLite
and PostgreSQL with the fake clock — passwords, failure counting and lockout, TOTP enrolment
and replay, the last-admin rule, audit events, and session idle/absolute expiry."""

from __future__ import annotations

import secrets

import pyotp
import pytest
from sqlalchemy import select

from radiusd.config import Config
from radiusd.crypto import SeedKey
from radiusd.db.tables import audit_events, console_sessions, operators
from radiusd.decisions import Reason
from radiusd.services import Conflict, Invalid, NotFound
from radiusd.services.factory import Resources, Services
from radiusd.services.operators import LoginStep
from tests.fakes import PASSWORD, Clock

T0 = 1_800_000_015.0  # 15 s into a TOTP step
SOURCE = "192.0.2.7"


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def services(database, clock) -> Services:
    """Lockout 3 failures / 600 s / 1800 s block; sessions idle 15 min, at most 8 h."""
    config = Config.model_validate({"lockout": {"max_failures": 3, "window_seconds": 600, "block_seconds": 1800}})
    return Services(Resources(config, database, clock=clock, seed_key=SeedKey(secrets.token_bytes(32))),
                    actor="cli")


@pytest.fixture
def ops(services):
    services.operators.add("root", "admin", PASSWORD)
    return services.operators


def enrol(ops, clock, name: str = "root") -> pyotp.TOTP:
    """A verified TOTP for ``name``; the clock moves to the next step so its next code is fresh."""
    totp = pyotp.parse_uri(ops.begin_enrolment(name)["otpauth_uri"])
    assert ops.verify_totp(name, totp.at(clock()), SOURCE).valid
    clock.advance(30)
    return totp


def row(database, name: str = "root"):
    with database.engine.connect() as conn:
        return conn.execute(select(operators).where(operators.c.name == name)).first()


def events(database, reason: str) -> list:
    with database.engine.connect() as conn:
        return conn.execute(select(audit_events).where(audit_events.c.reason == reason)
                            .order_by(audit_events.c.id)).all()


# -- administration -------------------------------------------------------------------------------

def test_add_stores_an_argon2id_hash_and_lists_the_operator(ops, database):
    ops.add("helen", "helpdesk", "another-password")
    assert row(database, "helen").password_hash.startswith("$argon2id$")
    assert [(o["name"], o["role"], o["mfa"], o["status"]) for o in ops.list()] == \
        [("helen", "helpdesk", "none", "active"), ("root", "admin", "none", "active")]
    assert "password_hash" not in ops.show("helen")


@pytest.mark.parametrize("name, role, password, field", [
    ("", "admin", PASSWORD, "name"), ("x" * 65, "admin", PASSWORD, "name"), ("bad\x07name", "admin", PASSWORD, "name"),
    ("ok", "owner", PASSWORD, "role"), ("ok", "admin", "short", "password"),
])
def test_add_refuses_invalid_fields(ops, name, role, password, field):
    with pytest.raises(Invalid) as raised:
        ops.add(name, role, password)
    assert raised.value.field == field


def test_add_refuses_a_taken_name(ops):
    with pytest.raises(Conflict):
        ops.add("root", "auditor", PASSWORD)


def test_the_last_admin_can_be_neither_removed_nor_demoted(ops):
    with pytest.raises(Conflict, match="last admin"):
        ops.remove("root")
    with pytest.raises(Conflict, match="last admin"):
        ops.set_role("root", "auditor")
    ops.add("second", "admin", PASSWORD)
    ops.set_role("root", "helpdesk")
    with pytest.raises(Conflict, match="last admin"):
        ops.remove("second")
    ops.remove("root")
    assert [o["name"] for o in ops.list()] == ["second"]


def test_unknown_operators_are_not_found(ops):
    for action in (ops.remove, ops.reset_mfa, ops.unblock, ops.begin_enrolment, ops.show):
        with pytest.raises(NotFound):
            action("nobody")
    with pytest.raises(NotFound):
        ops.set_role("nobody", "auditor")


def test_administrative_actions_are_audited_with_the_actor_and_operator(ops, services, database):
    services.as_actor("console:root").operators.add("ann", "auditor", PASSWORD)
    ops.set_role("ann", "helpdesk")
    ops.reset_mfa("ann")
    ops.remove("ann")
    audited = [(e.reason, e.actor, e.detail["operator"]) for e in events(database, "operator.add")
               + events(database, "operator.role") + events(database, "operator.reset_mfa")
               + events(database, "operator.remove") if e.detail["operator"] == "ann"]
    assert audited == [("operator.add", "console:root", "ann"), ("operator.role", "cli", "ann"),
                       ("operator.reset_mfa", "cli", "ann"), ("operator.remove", "cli", "ann")]
    assert all(PASSWORD not in str(e.detail) for e in events(database, "operator.add"))


# -- login: password ------------------------------------------------------------------------------

def test_the_right_password_asks_for_enrolment_then_for_a_code(ops, clock):
    first = ops.authenticate_password("root", PASSWORD, SOURCE)
    assert (first.step, first.reason) == (LoginStep.ENROL, Reason.OK) and first.operator_id is not None
    enrol(ops, clock)
    assert ops.authenticate_password("root", PASSWORD, SOURCE).step is LoginStep.CODE
    assert ops.show("root")["mfa"] == "verified"


def test_a_wrong_password_and_an_unknown_name_are_refused_and_audited(ops, database):
    wrong = ops.authenticate_password("root", "not-the-password", SOURCE)
    unknown = ops.authenticate_password("ghost", PASSWORD, SOURCE)
    assert (wrong.step, wrong.reason) == (LoginStep.REFUSED, Reason.BAD_PASSWORD)
    assert (unknown.step, unknown.reason) == (LoginStep.REFUSED, Reason.UNKNOWN_USER)
    assert row(database).failed_attempts == 1
    logins = [(e.actor, e.result, e.detail["source"]) for e in
              events(database, "bad_password") + events(database, "unknown_user")]
    assert logins == [("console:root", "reject", SOURCE), ("console:ghost", "reject", SOURCE)]


def test_failures_block_at_the_limit_and_a_blocked_operator_is_refused_even_with_the_password(ops, database, clock):
    results = [ops.authenticate_password("root", "wrong-password", SOURCE).locked for _ in range(3)]
    assert results == [False, False, True]
    assert ops.show("root")["status"] == "blocked"
    refused = ops.authenticate_password("root", PASSWORD, SOURCE)
    assert (refused.step, refused.reason) == (LoginStep.REFUSED, Reason.BLOCKED)
    assert [e.detail["operator"] for e in events(database, "automatic")] == ["root"]
    clock.advance(1800)
    assert ops.authenticate_password("root", PASSWORD, SOURCE).reason is Reason.OK


def test_failures_outside_the_window_start_a_new_series(ops, database, clock):
    for _ in range(2):
        ops.authenticate_password("root", "wrong-password", SOURCE)
    clock.advance(601)
    assert not ops.authenticate_password("root", "wrong-password", SOURCE).locked
    assert row(database).failed_attempts == 1


def test_the_stored_lockout_settings_apply_to_operators(ops, services):
    services.blocks.set_lockout_settings({"max_failures": 1, "permanent": True})
    assert ops.authenticate_password("root", "wrong-password", SOURCE).locked
    assert ops.show("root")["blocked_until"] is None and ops.show("root")["status"] == "blocked"
    ops.unblock("root")
    assert ops.show("root")["status"] == "active" and ops.show("root")["failed_attempts"] == 0
    with pytest.raises(NotFound):
        ops.unblock("root")


# -- login: TOTP ----------------------------------------------------------------------------------

def test_enrolment_shows_the_key_once_and_the_seed_is_stored_encrypted(ops, database):
    shown = ops.begin_enrolment("root")
    assert shown["otpauth_uri"].startswith("otpauth://totp/") and shown["qr_svg"].startswith("data:image/svg+xml")
    assert pyotp.parse_uri(shown["otpauth_uri"]).secret == shown["secret"]
    stored = row(database).secret_encrypted
    assert shown["secret"].encode() not in stored and ops.show("root")["mfa"] == "pending"


def test_a_code_is_accepted_once_and_a_replay_is_refused_and_counted(ops, database, clock):
    totp = enrol(ops, clock)
    code = totp.at(clock())
    ok = ops.verify_totp("root", code, SOURCE)
    assert ok.valid and ok.reason is Reason.OK
    assert row(database).last_login_at is not None
    replay = ops.verify_totp("root", code, SOURCE)
    assert (replay.valid, replay.reason) == (False, Reason.OTP_REPLAY)
    assert row(database).failed_attempts == 1


def test_wrong_codes_count_and_block_then_even_a_right_code_is_refused(ops, clock):
    totp = enrol(ops, clock)
    assert [ops.verify_totp("root", code, SOURCE).locked for code in ("000000", "12345", "１２３４５６")] == \
        [False, False, True]
    blocked = ops.verify_totp("root", totp.at(clock()), SOURCE)
    assert (blocked.valid, blocked.reason) == (False, Reason.BLOCKED)


def test_a_valid_code_clears_the_failure_count(ops, database, clock):
    totp = enrol(ops, clock)
    ops.authenticate_password("root", "wrong-password", SOURCE)
    assert ops.verify_totp("root", totp.at(clock()), SOURCE).valid
    assert row(database).failed_attempts == 0


def test_a_verified_enrolment_cannot_be_replaced_until_reset(ops, clock, services):
    enrol(ops, clock)
    with pytest.raises(Conflict):
        ops.begin_enrolment("root")
    session = services.console_sessions.create(row(services.resources.database).id, SOURCE)
    ops.reset_mfa("root")
    assert ops.show("root")["mfa"] == "none"
    assert services.console_sessions.validate(session.id) is None, "reset ends the operator's sessions"
    assert ops.verify_totp("root", "123456", SOURCE).reason is Reason.OTP_REQUIRED
    assert ops.authenticate_password("root", PASSWORD, SOURCE).step is LoginStep.ENROL


def test_unknown_operator_code_is_refused(ops):
    assert ops.verify_totp("ghost", "123456", SOURCE).reason is Reason.UNKNOWN_USER


# -- sessions -------------------------------------------------------------------------------------

def test_a_session_is_stored_only_as_digests_and_validates_with_the_current_role(services, ops, database):
    sessions = services.console_sessions
    new = sessions.create(row(database).id, SOURCE)
    with database.engine.connect() as conn:
        stored = conn.execute(select(console_sessions)).one()
    assert new.id not in stored.id_hash and new.csrf_token not in stored.csrf_hash
    ops.add("second", "admin", PASSWORD)
    ops.set_role("root", "auditor")
    session = sessions.validate(new.id)
    assert (session.operator, session.role, session.mfa_pending) == ("root", "auditor", False)
    assert session.csrf_valid(new.csrf_token)
    other = sessions.create(row(database).id, SOURCE)
    assert not session.csrf_valid(other.csrf_token) and not session.csrf_valid(None)
    assert sessions.validate("not-a-session") is None and sessions.validate("") is None


def test_an_idle_session_ends_and_use_keeps_it_alive(services, database, ops, clock):
    sessions = services.console_sessions
    new = sessions.create(row(database).id, SOURCE)
    clock.advance(14 * 60)
    assert sessions.validate(new.id) is not None
    clock.advance(14 * 60)
    assert sessions.validate(new.id) is not None, "each use restarts the idle time"
    clock.advance(15 * 60)
    assert sessions.validate(new.id) is None
    with database.engine.connect() as conn:
        assert conn.execute(select(console_sessions)).all() == [], "an expired session is deleted"


def test_a_session_ends_after_the_absolute_limit_however_busy(services, database, ops, clock):
    sessions = services.console_sessions
    new = sessions.create(row(database).id, SOURCE)
    for _ in range(8 * 6 - 1):
        clock.advance(10 * 60)
        assert sessions.validate(new.id) is not None
    clock.advance(10 * 60)
    assert sessions.validate(new.id) is None


def test_completing_mfa_replaces_a_pending_session_with_a_new_id(services, database, ops):
    sessions = services.console_sessions
    pending = sessions.create(row(database).id, SOURCE, mfa_pending=True)
    assert sessions.validate(pending.id).mfa_pending
    full = sessions.complete_mfa(pending.id, SOURCE)
    assert full.id != pending.id and sessions.validate(pending.id) is None
    assert not sessions.validate(full.id).mfa_pending
    assert sessions.complete_mfa(full.id, SOURCE) is None, "only a pending session completes"


def test_logout_sweep_and_removal_end_sessions(services, database, ops, clock):
    sessions = services.console_sessions
    ops.add("helen", "helpdesk", PASSWORD)
    mine = sessions.create(row(database).id, SOURCE)
    assert sessions.end(mine.id) and not sessions.end(mine.id)
    theirs = [sessions.create(row(database, "helen").id, SOURCE) for _ in range(2)]
    ops.remove("helen")
    assert all(sessions.validate(s.id) is None for s in theirs)
    sessions.create(row(database).id, SOURCE)
    kept = sessions.create(row(database).id, SOURCE)
    clock.advance(10 * 60)
    sessions.validate(kept.id)
    clock.advance(10 * 60)
    assert sessions.sweep() == 1
    assert sessions.end_all_for_operator(row(database).id) == 1
