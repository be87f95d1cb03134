"""The account_state plugin (SPEC §3.2, issue 4) on SQLite: disabled, blocked and expired accounts
refused before any password check, which decisions count as failed attempts, a success clearing
the count, and a backend failure never counted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update
from sqlalchemy.exc import OperationalError
from twisted.python.failure import Failure

from radiusd.authentication import Authentication
from radiusd.db.tables import users
from radiusd.decisions import Accept, BackendFailure, Challenge, PushPending, Reason, Reject
from radiusd.errors import BackendError
from radiusd.services.users import find_user
from tests.fakes import PASSWORD, RecordingPlugin, auth_request, local_user

# What a failed attempt is: a wrong secret of a known user, and a push the user denied.
COUNTED = {Reason.BAD_PASSWORD, Reason.NO_PASSWORD, Reason.BAD_OTP, Reason.OTP_REPLAY, Reason.BAD_STATE,
           Reason.CHALLENGE_EXPIRED, Reason.PUSH_DENIED}


@pytest.fixture
def world(make_world):
    """The built-in plugins with a lockout after 3 failures."""
    world = make_world(lockout={"max_failures": 3, "window_seconds": 600, "block_seconds": 600})
    world.add_user("bob")
    return world


def request_for(password: str | None, user: str = "bob"):
    return auth_request(user, password)


def now(world) -> datetime:
    return datetime.fromtimestamp(world.clock(), timezone.utc)


def with_failures(world, count: int):
    """Bob as ``find_user`` reads him after ``count`` failures."""
    with world.database.writer.begin() as conn:
        conn.execute(update(users).where(users.c.username == "bob").values(failed_attempts=count,
                                                                            first_failure_at=now(world)))
    return find_user(world.database, "bob")


# -- the account check ---------------------------------------------------------------------------------

def test_an_active_account_goes_on(world):
    check = world.plugin("account_state").radiusd_check_account
    later, earlier = now(world) + timedelta(seconds=1), now(world) - timedelta(seconds=1)
    for user in (local_user(), local_user(expires_at=later), local_user(blocked_until=earlier)):
        assert check(request=request_for(PASSWORD), user=user) is None, user


@pytest.mark.parametrize("fields, reason", [
    (dict(enabled=False), Reason.DISABLED),
    (dict(enabled=False, block_permanent=True, expires_at="past"), Reason.DISABLED),  # disabled wins
    (dict(block_permanent=True), Reason.BLOCKED),
    (dict(blocked_until="future"), Reason.BLOCKED),
    (dict(blocked_until="future", expires_at="past"), Reason.BLOCKED),
    (dict(expires_at="past"), Reason.EXPIRED),
    (dict(expires_at="now"), Reason.EXPIRED),  # expiry is the first moment it may not log in
])
def test_disabled_blocked_and_expired_accounts_are_refused_in_that_order(world, fields, reason):
    moments = {"past": now(world) - timedelta(seconds=1), "now": now(world), "future": now(world) + timedelta(hours=1)}
    user = local_user(**{key: moments.get(value, value) for key, value in fields.items()})
    refused = world.plugin("account_state").radiusd_check_account(request=request_for(PASSWORD), user=user)
    assert refused == Reject(reason, "account_state")


def test_blocked_user_is_refused_before_the_password_is_checked(world, monkeypatch):
    world.services().blocks.block("bob", seconds=600, reason="r")
    checked = []
    monkeypatch.setattr(world.runtime.hasher, "verify", lambda *args: checked.append("verify") or True)
    monkeypatch.setattr(world.runtime.hasher, "dummy_verify", lambda *args: checked.append("dummy"))
    for password in (PASSWORD, "wrong-password"):
        decision = world.runtime.pipeline.run(request_for(password))
        assert decision == Reject(Reason.BLOCKED, "account_state")
    assert checked == []
    assert world.failures("bob") == 0  # a refused blocked attempt is not a guess


# -- failure counting --------------------------------------------------------------------------------

def test_pipeline_counts_wrong_passwords_and_a_success_clears_them(world):
    for _ in range(2):
        assert world.runtime.pipeline.run(request_for("wrong-password")).reason == Reason.BAD_PASSWORD
    assert world.failures("bob") == 2
    assert isinstance(world.runtime.pipeline.run(request_for(PASSWORD)), Accept)
    assert world.failures("bob") == 0
    for _ in range(3):
        world.runtime.pipeline.run(request_for("wrong-password"))
    assert world.runtime.metrics.lockouts._value.get() == 1
    assert world.runtime.pipeline.run(request_for(PASSWORD)).reason == Reason.BLOCKED


@pytest.mark.parametrize("reason", [reason for reason in Reason
                                    if reason not in (Reason.OK, Reason.CHALLENGE, Reason.PUSH_PENDING)])
def test_only_wrong_secrets_and_denied_pushes_count_as_failed_attempts(world, reason):
    user = with_failures(world, 1)
    account_state = world.plugin("account_state")
    account_state.radiusd_post_auth(request=request_for("x"), user=user, decision=Reject(reason))
    assert world.failures("bob") == (2 if reason in COUNTED else 1)
    account_state.radiusd_post_auth(request=request_for("x", "nobody"), user=None,
                                    decision=Reject(Reason.UNKNOWN_USER))
    assert world.failures("bob") == (2 if reason in COUNTED else 1)  # unknown users have no counter


@pytest.mark.parametrize("decision", [Challenge(b"s" * 20, "Code?", "totp"), BackendFailure("db"),
                                      PushPending("p1", 0.0, None)])
def test_an_unanswered_challenge_a_backend_failure_or_a_held_push_count_and_clear_nothing(world, decision):
    user = with_failures(world, 1)
    world.plugin("account_state").radiusd_post_auth(request=request_for("x"), user=user, decision=decision)
    assert world.failures("bob") == 1


def test_an_accept_clears_the_count_and_skips_the_write_when_there_was_nothing_to_clear(world):
    account_state = world.plugin("account_state")
    user = with_failures(world, 2)
    account_state.radiusd_post_auth(request=request_for(PASSWORD), user=user, decision=Accept())
    assert world.failures("bob") == 0
    stale = find_user(world.database, "bob")  # read with no failures ...
    with_failures(world, 2)  # ... which then happen elsewhere
    account_state.radiusd_post_auth(request=request_for(PASSWORD), user=stale, decision=Accept())
    assert world.failures("bob") == 2  # no write for a user read with nothing to clear


def test_the_failure_that_blocks_counts_one_lockout(world):
    account_state = world.plugin("account_state")
    for _ in range(3):
        account_state.radiusd_post_auth(request=request_for("x"), user=find_user(world.database, "bob"),
                                        decision=Reject(Reason.BAD_OTP))
    assert world.runtime.metrics.lockouts._value.get() == 1
    assert world.user_row("bob").blocked_until is not None


@pytest.mark.parametrize("error, backend", [
    (BackendError("ldap", "unreachable"), "ldap"),
    (OperationalError("SELECT 1", {}, Exception("database is gone")), "db"),
])
def test_a_backend_failure_is_never_counted_as_a_failed_attempt(world, error, backend):
    def fail(**kwargs):
        raise error

    runtime = world.runtime
    spy = RecordingPlugin("spy", authenticate=fail)  # registered last: called first
    runtime.plugin_manager.register(spy, name="spy")
    for _ in range(5):  # more than max_failures
        for password in ("wrong-password", PASSWORD):
            with pytest.raises(type(error)) as raised:
                runtime.pipeline.run(request_for(password))
            # What the entry point makes of it: a BackendFailure, and no post_auth runs after it.
            decision = Authentication(None, None, runtime.pipeline, runtime.metrics).to_decision(Failure(raised.value))
            assert decision == BackendFailure(backend=backend, detail=type(error).__name__)
    assert "post_auth" not in spy.hooks()  # no post_auth hook ran: nothing counted, nothing cleared
    assert world.failures("bob") == 0
    assert runtime.metrics.lockouts._value.get() == 0
    runtime.plugin_manager.unregister(spy)
    assert runtime.pipeline.run(request_for("wrong-password")).reason == Reason.BAD_PASSWORD
    assert "post_auth" not in spy.hooks() and world.failures("bob") == 1
