"""The push plugin (SPEC §3.1 push; issue 8) through the real pipeline on SQLite: a held
decision resumed when the phone approves or denies or the push expires, the account re-checked
on approval, appended and challenge-answer codes going to TOTP, and challenge mode's push."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from radiusd.db.tables import push_requests
from radiusd.decisions import Accept, Challenge, PushPending, Reason, Reject
from radiusd.model import AuthRequest
from tests.fakes import PASSWORD, auth_request

PUSH_TIMEOUT = 2


@pytest.fixture
def world(make_world):
    return make_world(mfa={"push_timeout_seconds": PUSH_TIMEOUT, "required": True})


def request(name: str, password: bytes | str = PASSWORD, *, mode: str = "append", state: bytes | None = None,
            nas: str = "nas1") -> AuthRequest:
    return auth_request(name, password, nas=nas, mfa_mode=mode, state=state, calling_station_id="02-00-00-00-00-01")


def pending_for(world, user_id: int) -> list[dict]:
    return world.services().pushes.pending_for(user_id)


def decide(world, push_id: str, user_id: int, approve: bool) -> dict:
    return world.services().pushes.decide(push_id, user_id=user_id, approve=approve)


# -- held until the phone decides ------------------------------------------------------------------------------------

def held(world, name: str, **kwargs) -> tuple[AuthRequest, PushPending]:
    sent = request(name, **kwargs)
    decision = world.runtime.pipeline.run(sent)
    assert isinstance(decision, PushPending), decision
    return sent, decision


def pushed(world, name: str, **fields) -> tuple[int, AuthRequest, PushPending, dict]:
    """A user with an activated app who logged in on an append-mode NAS: their id, the request,
    the held decision and the push request their phone shows."""
    user_id = world.add_user(name, **fields)
    world.activate(name)
    sent, pending = held(world, name)
    [push] = pending_for(world, user_id)
    return user_id, sent, pending, push


def test_append_mode_push_is_held_until_approved_then_accepted_with_reply_attributes(world):
    user_id, sent, pending, push = pushed(world, "alice", framed_ip_address="10.0.0.7")
    assert world.auth_events("alice") == []  # post_auth waits for the final decision
    assert world.runtime.pipeline.resume(sent, pending) is None
    assert push["calling_station_id"] == "02-00-00-00-00-01" and push["nas"] == "nas1"
    decide(world, push["push_id"], user_id, True)
    decision = world.runtime.pipeline.resume(sent, pending)
    assert isinstance(decision, Accept) and decision.decided_by == "push"
    assert ("Framed-IP-Address", "10.0.0.7") in decision.attributes
    assert world.auth_events("alice") == ["ok"]


def test_an_approved_push_is_refused_when_the_user_was_blocked_meanwhile(world):
    user_id, sent, pending, push = pushed(world, "carol")
    world.services().blocks.block("carol", permanent=True, reason="lost laptop")
    decide(world, push["push_id"], user_id, True)
    assert world.runtime.pipeline.resume(sent, pending).reason == Reason.BLOCKED
    assert world.auth_events("carol") == ["blocked"]


def test_a_denied_push_is_rejected_as_push_denied_and_counts_a_failure(world):
    user_id, sent, pending, push = pushed(world, "bob")
    decide(world, push["push_id"], user_id, False)
    assert world.runtime.pipeline.resume(sent, pending) == Reject(Reason.PUSH_DENIED, "push")
    assert world.failures("bob") == 1
    assert world.auth_events("bob") == ["push_denied"]


def test_an_unanswered_push_expires_into_push_timeout_without_counting_a_failure(world):
    user_id = world.add_user("carol")
    world.activate("carol")
    sent, pending = held(world, "carol")
    assert pending.deadline == world.clock() + PUSH_TIMEOUT
    world.clock.advance(PUSH_TIMEOUT)
    assert world.runtime.pipeline.resume(sent, pending) == Reject(Reason.PUSH_TIMEOUT, "push")
    with world.database.engine.connect() as conn:
        assert conn.execute(select(push_requests.c.state).where(push_requests.c.user_id == user_id)).scalar() \
            == "expired"
    assert world.failures("carol") == 0


def test_append_mode_password_ending_in_six_digits_is_checked_as_totp_without_a_push(world):
    world.add_user("dave")
    totp, _ = world.activate("dave")
    decision = world.runtime.pipeline.run(request("dave", PASSWORD + totp.at(world.clock())))
    assert isinstance(decision, Accept) and decision.decided_by == "totp"
    assert world.runtime.pipeline.run(request("dave", PASSWORD + "000000")).reason == Reason.BAD_OTP
    with world.database.engine.connect() as conn:
        assert conn.execute(select(push_requests)).all() == []


def test_a_wrong_password_sends_no_push(world):
    world.add_user("erin")
    world.activate("erin")
    assert world.runtime.pipeline.run(request("erin", "wrong-password")).reason == Reason.BAD_PASSWORD
    with world.database.engine.connect() as conn:
        assert conn.execute(select(push_requests)).all() == []


def test_a_user_without_an_activated_app_keeps_plain_totp(world):
    world.add_user("frank")
    totp, code = world.enrol("frank")
    world.services().otp.verify("frank", totp.at(world.clock()))
    decision = world.runtime.pipeline.run(request("frank", mode="challenge"))
    assert isinstance(decision, Challenge) and decision.factor == "totp"


def test_challenge_mode_sends_a_push_with_a_challenge_and_waits_for_it_on_an_empty_answer(world):
    user_id = world.add_user("gina")
    world.activate("gina")
    challenge = world.runtime.pipeline.run(request("gina", mode="challenge"))
    assert isinstance(challenge, Challenge) and challenge.factor == "push"
    [push] = pending_for(world, user_id)
    assert f"request {push['number']}" in challenge.prompt and "code" in challenge.prompt
    assert world.sample("radiusd_challenges_total", factor="push") == 1
    answer = request("gina", b"", mode="challenge", state=challenge.state)
    pending = world.runtime.pipeline.run(answer)
    assert isinstance(pending, PushPending) and pending.push_id == push["push_id"]
    assert pending.deadline == world.clock() + PUSH_TIMEOUT
    decide(world, push["push_id"], user_id, True)
    assert isinstance(world.runtime.pipeline.resume(answer, pending), Accept)


def test_challenge_mode_answered_with_a_code_checks_it_as_totp(world):
    world.add_user("hank")
    totp, _ = world.activate("hank")
    challenge = world.runtime.pipeline.run(request("hank", mode="challenge"))
    decision = world.runtime.pipeline.run(request("hank", totp.at(world.clock()), mode="challenge",
                                                  state=challenge.state))
    assert isinstance(decision, Accept) and decision.decided_by == "totp"
    challenge = world.runtime.pipeline.run(request("hank", mode="challenge"))
    wrong = world.runtime.pipeline.run(request("hank", "123", mode="challenge", state=challenge.state))
    assert wrong.reason == Reason.BAD_OTP  # numeric: a code, not a push wait


def test_a_held_decision_no_plugin_resolves_is_rejected_after_the_grace(world):
    world.add_user("ivan")
    user = world.runtime.pipeline.hook.radiusd_find_user(request=request("ivan"))
    foreign = PushPending("elsewhere", world.clock() + 1, user, decided_by="another_plugin")
    assert world.runtime.pipeline.resume(request("ivan"), foreign) is None
    world.clock.advance(5)
    assert world.runtime.pipeline.resume(request("ivan"), foreign).reason == Reason.PUSH_TIMEOUT
