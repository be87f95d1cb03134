"""SMS OTP: for users without a verified SoftOTP but with a phone, a 6-digit code by SMS.

After the password the code is sent through the configured gateway and the NAS gets an
Access-Challenge; the code is single-use (it lives in its challenge, as a keyed digest),
valid ``[mfa] sms_code_ttl_seconds``, and sending is limited per user to
``[sms] max_per_window`` per ``window_seconds``. Append-mode NASes cannot show the prompt, so
an SMS-only user there is refused (``otp_required``)."""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from sqlalchemy import func, insert, select

from radiusd.db.tables import sms_messages
from radiusd.decisions import Accept, Reason, Reject
from radiusd.hookspecs import PluginContext, hookimpl
from radiusd.services.otp import is_code
from radiusd.sms import make_gateway

NAME = "sms"
PROMPT = "Enter the code sent to your phone"
CODE_PURPOSE = "sms-code"


class Plugin:
    def __init__(self, context: PluginContext):
        self.context = context
        self.settings = context.config.sms
        self.gateway = make_gateway(self.settings)

    @hookimpl
    def radiusd_factor_for(self, request, user):
        return NAME if user.phone else None

    @hookimpl
    def radiusd_second_factor(self, request, user, factor, otp):
        if factor != NAME:
            return None
        if request.mfa_mode == "append":
            return Reject(Reason.OTP_REQUIRED, NAME, "SMS codes need a NAS in challenge mode")
        if not self._may_send(user):
            return Reject(Reason.SMS_RATE_LIMITED, NAME)
        code = f"{secrets.randbelow(10 ** 6):06d}"
        message = self.settings.message.replace("{issuer}", self.context.config.mfa.issuer).replace("{code}", code)
        self.gateway.send(user.phone, message)
        with self.context.database.writer.begin() as conn:
            conn.execute(insert(sms_messages).values(user_id=user.id, sent_at=self.context.challenges.now()))
        return self.context.challenges.issue(user, request.nas, NAME, self.context.config.mfa.sms_code_ttl_seconds,
                                             PROMPT, self.context.seed_key.digest(code.encode(), CODE_PURPOSE))

    @hookimpl
    def radiusd_answer_challenge(self, request, user, challenge, response):
        if challenge.factor != NAME:
            return None
        code = response.decode("ascii", errors="replace")
        expected = challenge.code_hash or ""
        if is_code(code) and hmac.compare_digest(self.context.seed_key.digest(code.encode(), CODE_PURPOSE), expected):
            return Accept(decided_by=NAME)
        return Reject(Reason.BAD_OTP, NAME)

    def _may_send(self, user) -> bool:
        since = self.context.challenges.now() - timedelta(seconds=self.settings.window_seconds)
        with self.context.database.engine.connect() as conn:
            sent = conn.execute(select(func.count()).select_from(sms_messages)
                                .where(sms_messages.c.user_id == user.id, sms_messages.c.sent_at > since)).scalar()
        return sent < self.settings.max_per_window
