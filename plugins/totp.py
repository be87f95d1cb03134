"""SoftOTP: TOTP codes from an authenticator app, by challenge or appended to the password."""

from __future__ import annotations

from radiusd.decisions import Accept, Reason, Reject
from radiusd.plugin import Factor, PluginContext, hookimpl
from radiusd.services.otp import CodeCheck

NAME = "totp"
PROMPT = "Enter the 6-digit code from your authenticator app"


class Plugin:
    factors = (Factor(NAME, appended_code=True),)

    def __init__(self, context: PluginContext):
        self.context = context
        self.otp = context.services.otp

    @hookimpl
    def radiusd_factor_for(self, request, user):
        return NAME if self.otp.verified_enrolment(user.id) is not None else None

    @hookimpl
    def radiusd_second_factor(self, request, user, factor, otp):
        if factor != NAME:
            return None
        if request.mfa_mode == "append":
            return self.check(user, otp or "")
        return self.context.challenges.issue(user, request.nas, NAME, self.context.config.mfa.challenge_ttl_seconds,
                                             PROMPT)

    @hookimpl
    def radiusd_answer_challenge(self, request, user, challenge, response):
        if challenge.factor != NAME:
            return None
        return self.check(user, response.decode("ascii", errors="replace"))

    def check(self, user, code: str):
        enrolment = self.otp.verified_enrolment(user.id)
        if enrolment is None:  # reset between the two rounds
            return Reject(Reason.BAD_OTP, NAME, "no verified enrolment")
        result = self.otp.check(enrolment, code)
        if result is CodeCheck.OK:
            return Accept(decided_by=NAME)
        if result is CodeCheck.REPLAY:
            self.context.metrics.otp_replays.inc()
            return Reject(Reason.OTP_REPLAY, NAME)
        return Reject(Reason.BAD_OTP, NAME)
