"""SMS OTP: for users without a verified SoftOTP but with a phone, a 6-digit code by SMS.

After the password the code is sent through the configured gateway and the NAS gets an
Access-Challenge; the code is single-use (it lives in its challenge, as a keyed digest),
valid ``[mfa] sms_code_ttl_seconds``, and sending is limited per user to
``[sms] max_per_window`` per ``window_seconds``. Append-mode NASes cannot show the prompt, so
an SMS-only user there is refused (``otp_required``)."""

from __future__ import annotations

import hmac
import secrets
from typing import Literal

import phonenumbers
from pydantic import Field, field_validator, model_validator

from radiusd.config import ConfigPath, Secret, Section
from radiusd.decisions import Accept, Reason, Reject
from radiusd.plugin import Factor, PluginContext, hookimpl
from radiusd.services.otp import is_code
from radiusd.sms import make_gateway

NAME = "sms"
PROMPT = "Enter the code sent to your phone"
CODE_PURPOSE = "sms-code"


class SmsSection(Section):
    """``[sms]``: the gateway SMS codes go through, and the per-user sending limit."""

    gateway: Literal["file", "http"] = "file"
    default_region: str = "TR"  # numbers given without + are national numbers of this region (ISO 3166)
    spool_path: ConfigPath = Field("var/sms.spool", validate_default=True)
    max_per_window: int = Field(3, ge=1)
    window_seconds: int = Field(600, gt=0)
    message: str = "Your {issuer} code is {code}"
    # http gateway: {phone} and {message} in url and body are replaced, escaped for the place
    url: str = ""
    method: Literal["POST", "PUT", "GET"] = "POST"
    headers: dict[str, Secret] = {}
    body: str = '{"to": "{phone}", "text": "{message}"}'
    content_type: str = "application/json"
    success_statuses: list[int] = [200, 201, 202, 204]
    timeout_seconds: float = Field(5, gt=0, le=30)

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"{value!r} is not a region phonenumbers knows (ISO 3166 alpha-2, e.g. TR, DE, US)")
        return value.upper()

    @model_validator(mode="after")
    def _http_needs_url(self):
        if self.gateway == "http" and not self.url.startswith(("http://", "https://")):
            raise ValueError("gateway http needs url = \"http(s)://...\"")
        if "{code}" not in self.message:
            raise ValueError("message must contain {code}")
        return self


class Plugin:
    factors = (Factor(NAME),)  # the code arrives later, by SMS: never appended

    def __init__(self, context: PluginContext):
        self.context = context
        self.settings = context.config.sms
        self.gateway = make_gateway(self.settings)
        self.messages = context.services.sms_messages

    @hookimpl
    def radiusd_factor_for(self, request, user):
        return NAME if user.phone else None

    @hookimpl
    def radiusd_second_factor(self, request, user, factor, otp):
        if factor != NAME:
            return None
        if request.mfa_mode == "append":
            return Reject(Reason.OTP_REQUIRED, NAME, "SMS codes need a NAS in challenge mode")
        reserved = self.messages.reserve(user.id, limit=self.settings.max_per_window,
                                         window_seconds=self.settings.window_seconds)
        if reserved is None:
            return Reject(Reason.SMS_RATE_LIMITED, NAME)
        code = f"{secrets.randbelow(10 ** 6):06d}"
        message = self.settings.message.replace("{issuer}", self.context.config.mfa.issuer).replace("{code}", code)
        try:
            with self.context.bulkheads.enter("sms"):  # a stalled gateway may not take every auth thread
                self.gateway.send(user.phone, message)
        except Exception:  # a message that was not sent does not count against the limit
            self.messages.release(reserved)
            raise
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
