"""Push approval (SPEC §3.1): for a SoftOTP user whose authenticator app is activated, a correct
password sends a push request to the app instead of asking for a code.

Push refines SoftOTP, so this plugin wraps ``radiusd_factor_for``: whichever plugin named the
user's factor, "totp" becomes "push" when the user has an activated device (SMS users and users
without an app are untouched, and disabling this plugin gives those users plain TOTP again).

- Append mode: the request is created and the pipeline answers ``PushPending``; the protocol
  layer holds the reply (polling ``radiusd_resume_pending`` on reactor timers) until the app
  approves or denies, or ``[mfa] push_timeout_seconds`` pass. A password that ends in six
  ASCII digits is taken as password + TOTP code instead (this plugin's ``factors`` say so),
  so such passwords cannot use push on append-mode NASes.
- Challenge mode: the request is created and the NAS gets an Access-Challenge ("Approve
  request NN on your phone, or enter a code"). The answer with the State and an empty or
  non-numeric password waits up to ``push_timeout_seconds`` (capped at the challenge's life) for
  the app; a numeric answer is checked as a TOTP code instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from pydantic import Field, field_validator

from radiusd.challenges import state_hash
from radiusd.config import Secret, Section
from radiusd.decisions import Accept, PushPending, Reason, Reject
from radiusd.plugin import Factor, PluginContext, hookimpl
from radiusd.services.push import APPROVED, DENIED, PENDING, new_number

NAME = "push"
CODE_FACTOR = "totp"
PROMPT = "Approve request {number} on your phone, or enter the 6-digit code from your authenticator app"


class PushSection(Section):
    """``[push]``: the optional wake-up webhook. The approval timeout is ``[mfa]
    push_timeout_seconds``."""

    webhook_url: str = ""  # "": no webhook; else POSTed {"type": "push.created", "push_id", "expires_at"}
    webhook_headers: dict[str, Secret] = {}
    webhook_timeout_seconds: float = Field(5, gt=0, le=30)

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("webhook_url must be an http:// or https:// URL")
        return value


class Plugin:
    # A 6-digit code typed instead of approving (appended, or as the challenge answer) is TOTP.
    factors = (Factor(NAME, appended_code=True, code_factor=CODE_FACTOR),)

    def __init__(self, context: PluginContext):
        self.context = context
        self.mfa = context.config.mfa
        self.devices = context.services.devices
        self.pushes = context.services.pushes

    @hookimpl(wrapper=True)
    def radiusd_factor_for(self, request, user):
        factor = yield
        if factor == CODE_FACTOR and self.devices.device_of(user.id) is not None:
            return NAME
        return factor

    @hookimpl
    def radiusd_second_factor(self, request, user, factor, otp):
        if factor != NAME:
            return None
        device = self.devices.device_of(user.id)
        if device is None:  # removed since radiusd_factor_for
            return Reject(Reason.OTP_REQUIRED, NAME, "the user's device was removed")
        if request.mfa_mode == "append":
            push = self.pushes.create(user.id, user.username, device_row=device, nas=request.nas,
                                      calling_station_id=request.calling_station_id)
            return PushPending(push["push_id"], push["expires_at"].timestamp(), user)
        number = new_number()
        ttl = self.mfa.challenge_ttl_seconds
        challenge = self.context.challenges.issue(user, request.nas, NAME, ttl, PROMPT.format(number=number))
        self.pushes.create(user.id, user.username, device_row=device, nas=request.nas,
                           calling_station_id=request.calling_station_id, state_hash=state_hash(challenge.state),
                           ttl_seconds=ttl, number=number)
        return challenge

    @hookimpl
    def radiusd_answer_challenge(self, request, user, challenge, response):
        """An empty or non-numeric answer (numeric ones went to TOTP): wait for the app."""
        if challenge.factor != NAME:
            return None
        push = self.pushes.for_state(state_hash(request.state))
        if push is None or push.user_id != user.id:
            return Reject(Reason.BAD_STATE, NAME, "no push request belongs to this challenge")
        now = datetime.fromtimestamp(self.context.clock(), timezone.utc)
        deadline = min(push.expires_at, now + timedelta(seconds=self.mfa.push_timeout_seconds))
        return PushPending(push.push_id, deadline.timestamp(), user)

    @hookimpl
    def radiusd_resume_pending(self, request, user, pending):
        if pending.decided_by != NAME:
            return None
        row = self.pushes.settle(pending.push_id, datetime.fromtimestamp(pending.deadline, timezone.utc))
        if row is None:
            return Reject(Reason.PUSH_TIMEOUT, NAME, "the push request is gone")
        if row.state == PENDING:
            return None
        if row.state == APPROVED:
            return Accept(decided_by=NAME)
        if row.state == DENIED:
            return Reject(Reason.PUSH_DENIED, NAME)
        return Reject(Reason.PUSH_TIMEOUT, NAME)
