"""radiusd.pipeline with recording plugins and no database: the hooks in order for a first round
and a challenge round, None falling through, the pipeline's own refusals, the [mfa] required
policy, appended codes and code factors, post_auth told once per final decision, late decisions,
a held push resumed, and Session-Timeout capped at the account's expiry."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pluggy
import pytest

from radiusd.challenges import PendingChallenge
from radiusd.config import Config
from radiusd.decisions import Abandoned, Accept, Challenge, PasswordOk, PushPending, Reason, Reject
from radiusd.hookspecs import PROJECT, RadiusdSpec
from radiusd.pipeline import (RESUME_GRACE_SECONDS, UNSUPPORTED, Pipeline, cap_session_timeout, framed_ip_value,
                              split_appended_code)
from radiusd.plugin import Factor, PluginContext
from tests import fakes
from tests.fakes import Clock, RecordingPlugin, auth_request, local_user

T0 = 1_800_000_000.0
PASSWORD = fakes.PASSWORD.encode()
STATE = b"S" * 20
BOB = local_user("bob")


class Hasher:
    """The pipeline's only use of the hasher: a dummy verify where no real one happens."""

    def __init__(self):
        self.dummies = []

    def dummy_verify(self, password) -> None:
        self.dummies.append(password)


class Challenges:
    """``ChallengeStore.take`` over the challenges the test put in ``pending``, each taken once."""

    def __init__(self):
        self.pending: dict[bytes, PendingChallenge] = {}
        self.taken = []

    def take(self, state: bytes, *, nas: str, username: str | None):
        self.taken.append((nas, username))
        return self.pending.pop(state, Reason.BAD_STATE)


def pipeline_of(*plugins: RecordingPlugin, required: bool = False, clock: Clock | None = None) -> Pipeline:
    """A pipeline over a real plugin manager calling ``plugins`` in the order given."""
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(RadiusdSpec)
    for plugin in reversed(plugins):  # pluggy calls the last registered first
        manager.register(plugin, name=plugin.name)
    context = PluginContext(config=Config.model_validate({"mfa": {"required": required}}), database=None,
                            dictionary=None, hasher=Hasher(), metrics=None, seed_key=None,
                            clock=clock or Clock(T0), challenges=Challenges(), services=None, bulkheads=None)
    return Pipeline(manager, context)


def sequence(calls) -> list[tuple[str, str]]:
    return [(call.plugin, call.hook) for call in calls]


def told(calls) -> list:
    """The decisions post_auth was told, once per plugin that heard it."""
    return [call.kwargs["decision"] for call in calls if call.hook == "post_auth"]


def pending_challenge(factor: str, username: str = "bob") -> PendingChallenge:
    return PendingChallenge(BOB.id, username, "nas1", factor, None, datetime.fromtimestamp(T0 + 60, timezone.utc))


# -- hook order --------------------------------------------------------------------------------------

def test_a_first_round_calls_every_hook_in_pipeline_order_and_stops_a_firstresult_hook_at_an_answer():
    calls = []
    local = RecordingPlugin("local", calls, find_user=BOB, authenticate=PasswordOk("local"),
                            reply_attributes=[("Framed-IP-Address", "10.0.0.7")])
    otp = RecordingPlugin("otp", calls, factors=[Factor("otp")], factor_for="otp",
                          second_factor=Accept(decided_by="otp"), reply_attributes=[("Class", "vpn")])
    audit = RecordingPlugin("audit", calls)
    pipeline = pipeline_of(local, otp, audit)

    decision = pipeline.run(auth_request("bob", PASSWORD))

    assert decision == Accept((("Framed-IP-Address", "10.0.0.7"), ("Class", "vpn")), "otp")
    assert sequence(calls) == [
        ("local", "find_user"),
        ("local", "check_account"), ("otp", "check_account"), ("audit", "check_account"),
        ("local", "factor_for"), ("otp", "factor_for"),
        ("local", "authenticate"),
        ("local", "second_factor"), ("otp", "second_factor"),
        ("local", "reply_attributes"), ("otp", "reply_attributes"), ("audit", "reply_attributes"),
        ("local", "post_auth"), ("otp", "post_auth"), ("audit", "post_auth"),
    ]
    [authenticate] = [call for call in calls if call.hook == "authenticate"]
    assert authenticate.kwargs["password"] == PASSWORD and authenticate.kwargs["user"] is BOB
    [second] = [call.kwargs for call in calls if call.hook == "second_factor" and call.plugin == "otp"]
    assert (second["factor"], second["otp"]) == ("otp", None)
    assert told(calls) == [decision] * 3
    assert pipeline.context.hasher.dummies == []


def test_a_first_round_challenge_is_told_to_post_auth_without_reply_attributes():
    calls = []
    challenge = Challenge(STATE, "Code?", "otp", "otp")
    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=BOB, authenticate=PasswordOk("local")),
                           RecordingPlugin("otp", calls, factor_for="otp", second_factor=challenge))
    assert pipeline.run(auth_request("bob", PASSWORD)) == challenge
    assert "reply_attributes" not in [hook for _, hook in sequence(calls)]
    assert told(calls) == [challenge, challenge]


def test_a_challenge_round_answers_the_taken_challenge_without_asking_for_the_password_again():
    calls = []
    local = RecordingPlugin("local", calls, find_user=BOB, authenticate=PasswordOk("local"))
    otp = RecordingPlugin("otp", calls, answer_challenge=Accept(decided_by="otp"))
    pipeline = pipeline_of(local, otp)
    pipeline.context.challenges.pending[STATE] = pending_challenge("otp")

    decision = pipeline.run(auth_request("bob", b"123456", state=STATE))

    assert decision == Accept((), "otp")
    assert sequence(calls) == [
        ("local", "find_user"),
        ("local", "check_account"), ("otp", "check_account"),
        ("local", "answer_challenge"), ("otp", "answer_challenge"),
        ("local", "reply_attributes"), ("otp", "reply_attributes"),
        ("local", "post_auth"), ("otp", "post_auth"),
    ]
    [answer] = [call.kwargs for call in calls if call.plugin == "otp" and call.hook == "answer_challenge"]
    assert (answer["challenge"].factor, answer["response"]) == ("otp", b"123456")
    assert pipeline.context.challenges.taken == [("nas1", "bob")]


def test_a_state_that_is_not_pending_is_a_bad_state_and_no_plugin_is_asked_to_answer_it():
    calls = []
    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=BOB),
                           RecordingPlugin("otp", calls, answer_challenge=Accept(decided_by="otp")))
    decision = pipeline.run(auth_request("bob", b"123456", state=STATE))
    assert decision == Reject(Reason.BAD_STATE, "pipeline")
    assert "answer_challenge" not in [hook for _, hook in sequence(calls)]
    assert told(calls) == [decision, decision]


# -- None means "not mine" -----------------------------------------------------------------------------

def test_none_falls_through_to_the_next_plugin_for_every_firstresult_hook():
    calls = []
    carol = local_user("carol", id=2)
    first = RecordingPlugin("first", calls)  # knows nothing, holds nothing
    second = RecordingPlugin("second", calls, factors=[Factor("sms")], find_user=carol,
                             authenticate=PasswordOk("second"), factor_for="sms",
                             second_factor=Accept(decided_by="second"))
    decision = pipeline_of(first, second).run(auth_request("carol", PASSWORD))
    assert decision == Accept((), "second")
    for hook in ("find_user", "factor_for", "authenticate", "second_factor"):
        assert [plugin for plugin, name in sequence(calls) if name == hook] == ["first", "second"], hook
    assert all(call.kwargs["user"] is carol for call in calls if "user" in call.kwargs)


def test_when_no_plugin_answers_the_pipeline_refuses_in_its_own_name():
    holds_no_password = pipeline_of(RecordingPlugin("local", find_user=BOB))
    assert holds_no_password.run(auth_request()) == Reject(Reason.BAD_PASSWORD, "pipeline",
                                                            "no plugin holds the password")
    nobody_handles = pipeline_of(RecordingPlugin("local", find_user=BOB, authenticate=PasswordOk("local"),
                                                 factor_for="nfc"))
    assert nobody_handles.run(auth_request()) == Reject(Reason.OTP_REQUIRED, "pipeline",
                                                        "no plugin handles factor nfc")
    nobody_answers = pipeline_of(RecordingPlugin("local", find_user=BOB))
    nobody_answers.context.challenges.pending[STATE] = pending_challenge("nfc")
    assert nobody_answers.run(auth_request(state=STATE)) == Reject(Reason.BAD_STATE, "pipeline",
                                                                   "no plugin answers nfc")


# -- the pipeline's own refusals --------------------------------------------------------------------------

@pytest.mark.parametrize("user_name", ["nobody", None])
def test_an_unknown_user_costs_one_dummy_verify_and_is_rejected_as_unknown_user(user_name):
    calls = []
    pipeline = pipeline_of(RecordingPlugin("local", calls, authenticate=PasswordOk("local")))
    decision = pipeline.run(auth_request(user_name, PASSWORD))
    assert decision == Reject(Reason.UNKNOWN_USER, "pipeline")
    assert pipeline.context.hasher.dummies == [PASSWORD]
    assert sequence(calls) == ([("local", "find_user")] if user_name else []) + [("local", "post_auth")]
    assert calls[-1].kwargs["user"] is None


@pytest.mark.parametrize("auth_type", sorted(UNSUPPORTED))
def test_unsupported_auth_types_are_refused_before_any_lookup(auth_type):
    calls = []
    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=BOB, authenticate=PasswordOk("local")))
    decision = pipeline.run(auth_request(password=None, auth_type=auth_type))
    assert decision == Reject(Reason.UNSUPPORTED_AUTH_TYPE, "pipeline", UNSUPPORTED[auth_type])
    assert sequence(calls) == [("local", "post_auth")]
    assert pipeline.context.hasher.dummies == []


@pytest.mark.parametrize("password", [None, b""])
def test_no_password_is_refused_after_the_account_check_with_a_dummy_verify(password):
    calls = []
    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=BOB, authenticate=PasswordOk("local"),
                                           factor_for="otp"))
    assert pipeline.run(auth_request(password=password)) == Reject(Reason.NO_PASSWORD, "pipeline")
    assert sequence(calls) == [("local", "find_user"), ("local", "check_account"), ("local", "post_auth")]
    assert pipeline.context.hasher.dummies == [password]


def test_an_account_check_refusal_ends_the_request_before_the_password():
    calls = []
    blocked = Reject(Reason.BLOCKED, "state")
    pipeline = pipeline_of(RecordingPlugin("state", calls, check_account=blocked),
                           RecordingPlugin("local", calls, find_user=BOB, authenticate=PasswordOk("local")))
    assert pipeline.run(auth_request()) == blocked
    assert sequence(calls) == [("state", "find_user"), ("local", "find_user"), ("state", "check_account"),
                               ("state", "post_auth"), ("local", "post_auth")]
    assert calls[-1].kwargs["user"] is BOB


# -- the [mfa] required policy -------------------------------------------------------------------------

@pytest.mark.parametrize("required, exempt, expected", [
    (True, False, Reject(Reason.OTP_REQUIRED, "pipeline")),
    (True, True, Accept((), "local")),
    (False, False, Accept((), "local")),
])
def test_a_user_without_a_factor_is_refused_only_when_mfa_is_required_and_they_are_not_exempt(
        required, exempt, expected):
    user = local_user("bob", mfa_exempt=exempt)
    calls = []
    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=user, authenticate=PasswordOk("local")),
                           required=required)
    assert pipeline.run(auth_request()) == expected
    assert "second_factor" not in [hook for _, hook in sequence(calls)]


def test_a_wrong_password_is_refused_before_the_factor_even_when_mfa_is_required():
    calls = []
    wrong = Reject(Reason.BAD_PASSWORD, "local")
    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=BOB, authenticate=wrong, factor_for="otp",
                                           second_factor=Accept(decided_by="otp")), required=True)
    assert pipeline.run(auth_request()) == wrong
    assert "second_factor" not in [hook for _, hook in sequence(calls)]


# -- appended codes and code factors ----------------------------------------------------------------------

FACTORS = [Factor("totp", appended_code=True), Factor("sms"), Factor("push", appended_code=True, code_factor="totp")]


def first_round(factor: str, password: bytes, mode: str = "append") -> tuple[bytes, str, str | None]:
    """What ``authenticate`` and ``second_factor`` were given: (password, factor, otp)."""
    plugin = RecordingPlugin("local", factors=FACTORS, find_user=BOB, authenticate=PasswordOk("local"),
                             factor_for=factor, second_factor=Accept(decided_by=factor))
    pipeline_of(plugin).run(auth_request(password=password, mfa_mode=mode))
    [authenticate] = [call.kwargs for call in plugin.calls if call.hook == "authenticate"]
    [second] = [call.kwargs for call in plugin.calls if call.hook == "second_factor"]
    return authenticate["password"], second["factor"], second["otp"]


def test_append_mode_splits_a_six_digit_code_for_a_factor_that_declares_appended_codes():
    assert first_round("totp", PASSWORD + b"123456") == (PASSWORD, "totp", "123456")
    assert first_round("totp", PASSWORD + b"12345") == (PASSWORD + b"12345", "totp", None)


def test_append_mode_leaves_the_password_whole_for_a_factor_without_appended_codes():
    assert first_round("sms", PASSWORD + b"123456") == (PASSWORD + b"123456", "sms", None)
    assert first_round("nfc", PASSWORD + b"123456") == (PASSWORD + b"123456", "nfc", None)  # declared by nobody


def test_a_challenge_mode_nas_never_has_its_password_split():
    assert first_round("totp", PASSWORD + b"123456", mode="challenge") == (PASSWORD + b"123456", "totp", None)


def test_an_appended_code_switches_to_the_factors_code_factor():
    assert first_round("push", PASSWORD + b"654321") == (PASSWORD, "totp", "654321")
    assert first_round("push", PASSWORD) == (PASSWORD, "push", None)


@pytest.mark.parametrize("response, factor", [
    (b"123456", "totp"),
    (b"12", "totp"),            # any ASCII digits are a code: the code factor says whether it is right
    (b"", "push"),
    (b"approve", "push"),
    ("１２３４５６".encode(), "push"),  # full-width digits are not a code
])
def test_a_numeric_challenge_answer_goes_to_the_code_factor(response, factor):
    plugin = RecordingPlugin("local", factors=FACTORS, find_user=BOB, answer_challenge=Accept(decided_by="x"))
    pipeline = pipeline_of(plugin)
    pipeline.context.challenges.pending[STATE] = pending_challenge("push")
    pipeline.run(auth_request(password=response, state=STATE))
    [answer] = [call.kwargs for call in plugin.calls if call.hook == "answer_challenge"]
    assert (answer["challenge"].factor, answer["response"]) == (factor, response)


def test_a_challenge_answer_for_a_factor_without_a_code_factor_keeps_its_factor():
    plugin = RecordingPlugin("local", factors=FACTORS, find_user=BOB, answer_challenge=Accept(decided_by="x"))
    pipeline = pipeline_of(plugin)
    pipeline.context.challenges.pending[STATE] = pending_challenge("sms")
    pipeline.run(auth_request(password=b"123456", state=STATE))
    [answer] = [call.kwargs for call in plugin.calls if call.hook == "answer_challenge"]
    assert answer["challenge"].factor == "sms"


@pytest.mark.parametrize("value,expected", [
    (b"secret123456", (b"secret", "123456")),
    (b"pass2024000000", (b"pass2024", "000000")),
    (b"abc1234567890", (b"abc1234", "567890")),
    (b"x000000", (b"x", "000000")),
    (b"123456", (b"123456", None)),                 # nothing but a code: no password left
    (b"secret", (b"secret", None)),                 # no code
    (b"secret12345", (b"secret12345", None)),       # five digits
    (b"secret12345a", (b"secret12345a", None)),
    (b"secret 12345", (b"secret 12345", None)),
    (b"", (b"", None)),
    ("secret１２３４５６".encode(), ("secret１２３４５６".encode(), None)),  # full-width digits
    ("secret١٢٣٤٥٦".encode(), ("secret١٢٣٤٥٦".encode(), None)),           # Arabic-Indic digits
    (b"secret\xff23456", (b"secret\xff23456", None)),
])
def test_split_appended_code(value, expected):
    assert split_appended_code(value) == expected


# -- post_auth and late decisions -------------------------------------------------------------------------

@pytest.mark.parametrize("final", [Accept(decided_by="otp"), Reject(Reason.BAD_OTP, "otp"),
                                   Challenge(STATE, "Code?", "otp", "otp")])
def test_post_auth_is_told_every_final_decision_once(final):
    calls = []
    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=BOB, authenticate=PasswordOk("local"),
                                           factor_for="otp", second_factor=final))
    decision = pipeline.run(auth_request())
    assert told(calls) == [decision] and decision.reason == final.reason


def test_post_auth_is_not_told_a_held_push():
    calls = []
    pending = PushPending("p1", T0 + 25, BOB)
    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=BOB, authenticate=PasswordOk("local"),
                                           factor_for="push", second_factor=pending))
    assert pipeline.run(auth_request(mfa_mode="append")) == pending
    assert told(calls) == []


def late(decision, *, at: float):
    """A plugin that decides ``decision`` while the clock moves to ``at``."""
    clock = Clock(T0)
    calls = []

    def second_factor(**kwargs):
        clock.now = at
        return decision

    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=BOB, authenticate=PasswordOk("local"),
                                           factor_for="otp", second_factor=second_factor), clock=clock)
    return pipeline.run(auth_request(received_at=T0, deadline=T0 + 5)), calls


def test_a_reject_decided_after_the_deadline_is_abandoned_and_nothing_is_told():
    decision, calls = late(Reject(Reason.BAD_OTP, "otp"), at=T0 + 5.01)
    assert decision == Abandoned("late")
    assert told(calls) == []  # no failure counted, no audit row: nobody hears this answer


def test_a_reject_decided_at_the_deadline_is_still_answered():
    decision, calls = late(Reject(Reason.BAD_OTP, "otp"), at=T0 + 5)
    assert decision == Reject(Reason.BAD_OTP, "otp") and told(calls) == [decision]


@pytest.mark.parametrize("decision", [Accept(decided_by="otp"), Challenge(STATE, "Code?", "otp", "otp")])
def test_a_late_accept_or_challenge_is_still_told_because_its_effects_are_committed(decision):
    answered, calls = late(decision, at=T0 + 60)
    assert answered.reason == decision.reason and told(calls) == [answered]


def test_an_unknown_user_refused_late_is_abandoned_too():
    clock = Clock(T0)
    calls = []
    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=lambda **_: clock.advance(10)), clock=clock)
    assert pipeline.run(auth_request(deadline=T0 + 5)) == Abandoned("late")
    assert told(calls) == []


# -- a held push, resumed ---------------------------------------------------------------------------

class Phone:
    """What ``resume_pending`` answers, and whether the account is refused or gone meanwhile."""

    def __init__(self):
        self.answer = None
        self.refusal = None
        self.user = BOB


def held(phone: Phone, clock: Clock):
    calls = []
    pipeline = pipeline_of(RecordingPlugin("local", calls, find_user=lambda **_: phone.user,
                                           check_account=lambda **_: phone.refusal,
                                           authenticate=PasswordOk("local"), factor_for="push",
                                           second_factor=lambda user, **_: PushPending("p1", T0 + 25, user),
                                           resume_pending=lambda **_: phone.answer,
                                           reply_attributes=lambda user, **_: [("Class", user.username)]),
                           clock=clock)
    request = auth_request(mfa_mode="append")
    pending = pipeline.run(request)
    assert isinstance(pending, PushPending)
    return pipeline, request, pending, calls


def test_an_open_push_resumes_to_none_and_an_approved_one_to_an_accept_with_the_current_attributes():
    phone, clock = Phone(), Clock(T0)
    pipeline, request, pending, calls = held(phone, clock)
    assert pipeline.resume(request, pending) is None and told(calls) == []
    phone.answer, phone.user = Accept(decided_by="push"), local_user("bob2")
    decision = pipeline.resume(request, pending)
    assert decision == Accept((("Class", "bob2"),), "push")
    assert told(calls) == [decision]
    assert calls[-1].kwargs["user"] is BOB  # post_auth hears of the user the push was for


def test_an_approved_push_is_refused_when_the_account_was_blocked_meanwhile():
    phone, clock = Phone(), Clock(T0)
    pipeline, request, pending, calls = held(phone, clock)
    phone.answer, phone.refusal = Accept(decided_by="push"), Reject(Reason.BLOCKED, "state")
    assert pipeline.resume(request, pending) == Reject(Reason.BLOCKED, "state")
    assert told(calls) == [Reject(Reason.BLOCKED, "state")]


def test_an_approved_push_is_refused_when_the_account_was_removed_meanwhile():
    phone, clock = Phone(), Clock(T0)
    pipeline, request, pending, calls = held(phone, clock)
    phone.answer, phone.user = Accept(decided_by="push"), None
    assert pipeline.resume(request, pending) == Reject(Reason.UNKNOWN_USER, "pipeline")


def test_a_denied_push_is_told_as_it_is_without_a_new_account_check():
    phone, clock = Phone(), Clock(T0)
    pipeline, request, pending, calls = held(phone, clock)
    checks = len([call for call in calls if call.hook == "check_account"])
    phone.answer = Reject(Reason.PUSH_DENIED, "push")
    assert pipeline.resume(request, pending) == Reject(Reason.PUSH_DENIED, "push")
    assert len([call for call in calls if call.hook == "check_account"]) == checks
    assert told(calls) == [Reject(Reason.PUSH_DENIED, "push")]


def test_a_push_no_plugin_resolves_is_a_push_timeout_after_the_grace():
    phone, clock = Phone(), Clock(T0)
    pipeline, request, pending, calls = held(phone, clock)
    clock.now = pending.deadline + RESUME_GRACE_SECONDS - 0.01
    assert pipeline.resume(request, pending) is None
    clock.now = pending.deadline + RESUME_GRACE_SECONDS
    assert pipeline.resume(request, pending) == Reject(Reason.PUSH_TIMEOUT, "pipeline",
                                                       "no plugin resolved the held decision")
    assert told(calls) == [Reject(Reason.PUSH_TIMEOUT, "pipeline", "no plugin resolved the held decision")]


# -- reply attributes -------------------------------------------------------------------------------

@pytest.mark.parametrize("attributes, expected", [
    ([("Session-Timeout", 3600)], [("Session-Timeout", 100)]),
    ([("Session-Timeout", 60)], [("Session-Timeout", 60)]),
    ([("Class", "vpn")], [("Class", "vpn"), ("Session-Timeout", 100)]),
])
def test_session_timeout_is_capped_or_added_at_the_accounts_expiry(attributes, expected):
    expiring = local_user("bob", expires_at=datetime.fromtimestamp(T0 + 100, timezone.utc))
    pipeline = pipeline_of(RecordingPlugin("local", find_user=expiring, authenticate=PasswordOk("local"),
                                           reply_attributes=attributes))
    assert pipeline.run(auth_request()) == Accept(tuple(expected), "local")


def test_session_timeout_is_left_alone_without_an_expiry_and_never_below_one_second():
    now = datetime.fromtimestamp(T0, timezone.utc)
    assert cap_session_timeout([("Session-Timeout", 3600)], None, now) == [("Session-Timeout", 3600)]
    assert cap_session_timeout([], now + timedelta(milliseconds=10), now) == [("Session-Timeout", 1)]


def test_framed_ip_special_values_are_their_rfc_2865_addresses():
    assert framed_ip_value("user-selects") == "255.255.255.255"
    assert framed_ip_value("nas-assigns") == "255.255.255.254"
    assert framed_ip_value("10.0.0.7") == "10.0.0.7"
