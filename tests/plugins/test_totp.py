"""The totp plugin (SPEC §3.1 SoftOTP) on SQLite: the factor of users with a verified enrolment,
an appended code checked once (replays refused and counted), a challenge issued on challenge-mode
NASes and its answer checked, and an enrolment reset between the two rounds."""

from __future__ import annotations

import pyotp
import pytest

from radiusd.challenges import PendingChallenge
from radiusd.decisions import Accept, Challenge, Reason, Reject
from radiusd.plugins.totp import PROMPT
from radiusd.services.users import find_user
from tests.fakes import auth_request


@pytest.fixture
def world(make_world):
    return make_world()


@pytest.fixture
def plugin(world):
    return world.plugin("totp")


def verified_user(world, name: str = "alice") -> tuple[pyotp.TOTP, object]:
    """A user whose enrolment is verified; the clock is a step on, so its code is fresh."""
    world.add_user(name)
    totp, _ = world.enrol(name)
    assert world.services().otp.verify(name, totp.at(world.clock()))
    world.clock.advance(30)
    return totp, find_user(world.database, name)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


def second_factor(plugin, user, otp=None, *, mode="append", factor="totp"):
    return plugin.radiusd_second_factor(request=auth_request(user.username, mfa_mode=mode), user=user,
                                        factor=factor, otp=otp)


def test_the_factor_is_totp_only_for_a_verified_enrolment(world, plugin):
    world.add_user("none")
    world.add_user("pending")
    world.enrol("pending")
    _, alice = verified_user(world)
    factor_for = plugin.radiusd_factor_for
    assert factor_for(request=auth_request("alice"), user=alice) == "totp"
    for name in ("none", "pending"):
        assert factor_for(request=auth_request(name), user=find_user(world.database, name)) is None, name


def test_another_factor_is_not_this_plugins(world, plugin):
    totp, alice = verified_user(world)
    assert second_factor(plugin, alice, totp.at(world.clock()), factor="sms") is None
    challenge = PendingChallenge(alice.id, "alice", "nas1", "sms", None, None)
    assert plugin.radiusd_answer_challenge(request=auth_request("alice"), user=alice, challenge=challenge,
                                           response=totp.at(world.clock()).encode()) is None


def test_an_appended_code_is_accepted_once_then_refused_as_a_replay(world, plugin):
    totp, alice = verified_user(world)
    code = totp.at(world.clock())
    assert second_factor(plugin, alice, code) == Accept(decided_by="totp")
    assert second_factor(plugin, alice, code) == Reject(Reason.OTP_REPLAY, "totp")
    assert world.runtime.metrics.otp_replays._value.get() == 1


@pytest.mark.parametrize("typed", ["wrong", None, "", "12345"])
def test_a_wrong_or_missing_appended_code_is_a_bad_otp(world, plugin, typed):
    totp, alice = verified_user(world)
    code = totp.at(world.clock())
    otp = wrong(code) if typed == "wrong" else typed
    assert second_factor(plugin, alice, otp) == Reject(Reason.BAD_OTP, "totp")
    assert second_factor(plugin, alice, code) == Accept(decided_by="totp")  # the refusals consumed nothing


def test_challenge_mode_issues_a_challenge_whose_answer_is_the_code(world, plugin):
    totp, alice = verified_user(world)
    challenge = second_factor(plugin, alice, mode="challenge")
    assert isinstance(challenge, Challenge)
    assert (challenge.prompt, challenge.factor, challenge.decided_by) == (PROMPT, "totp", "totp")
    assert world.sample("radiusd_challenges_total", factor="totp") == 1
    pending = world.runtime.context.challenges.take(challenge.state, nas="nas1", username="alice")
    assert isinstance(pending, PendingChallenge) and pending.factor == "totp"
    answer = plugin.radiusd_answer_challenge
    request = auth_request("alice", state=challenge.state)
    assert answer(request=request, user=alice, challenge=pending, response=wrong(totp.at(world.clock())).encode()) \
        == Reject(Reason.BAD_OTP, "totp")
    assert answer(request=request, user=alice, challenge=pending, response="１２３４５６".encode()) == \
        Reject(Reason.BAD_OTP, "totp")
    assert answer(request=request, user=alice, challenge=pending, response=totp.at(world.clock()).encode()) == \
        Accept(decided_by="totp")


def test_an_enrolment_reset_between_the_rounds_refuses_the_answer(world, plugin):
    totp, alice = verified_user(world)
    challenge = second_factor(plugin, alice, mode="challenge")
    pending = world.runtime.context.challenges.take(challenge.state, nas="nas1", username="alice")
    world.services().otp.reset("alice")
    assert plugin.radiusd_answer_challenge(request=auth_request("alice", state=challenge.state), user=alice,
                                           challenge=pending, response=totp.at(world.clock()).encode()) == \
        Reject(Reason.BAD_OTP, "totp", "no verified enrolment")
