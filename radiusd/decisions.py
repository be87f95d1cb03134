"""Pipeline outcomes: frozen values that cross from the worker pool back to the reactor.

Names follow FreeRADIUS's rcodes where they overlap (ok → Accept, reject → Reject), so its
operators recognise them. ``Reason`` is closed: it doubles as the ``reason`` metric label.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from radiusd.model import User


class Reason(StrEnum):
    OK = "ok"
    CHALLENGE = "challenge"
    UNKNOWN_USER = "unknown_user"
    BAD_PASSWORD = "bad_password"
    NO_PASSWORD = "no_password"
    DISABLED = "disabled"
    EXPIRED = "expired"
    BLOCKED = "blocked"
    OTP_REQUIRED = "otp_required"
    BAD_OTP = "bad_otp"
    OTP_REPLAY = "otp_replay"
    CHALLENGE_EXPIRED = "challenge_expired"
    BAD_STATE = "bad_state"
    SMS_RATE_LIMITED = "sms_rate_limited"
    PUSH_PENDING = "push_pending"  # held, never final: resolved into one of the two below or ok
    PUSH_DENIED = "push_denied"
    PUSH_TIMEOUT = "push_timeout"
    BACKEND_ERROR = "backend_error"
    UNSUPPORTED_AUTH_TYPE = "unsupported_auth_type"
    # The directory refused a correct-looking bind for account state (AD "data" codes).
    LDAP_PASSWORD_EXPIRED = "ldap_password_expired"
    LDAP_MUST_CHANGE = "ldap_must_change_password"
    LDAP_DISABLED = "ldap_disabled"
    LDAP_EXPIRED = "ldap_expired"
    LDAP_LOCKED = "ldap_locked"
    LDAP_RESTRICTED = "ldap_restricted"


ReplyAttribute = tuple[str, "str | int"]


@dataclass(frozen=True, slots=True)
class Accept:
    attributes: tuple[ReplyAttribute, ...] = ()
    decided_by: str = ""
    reason: Reason = Reason.OK


@dataclass(frozen=True, slots=True)
class Reject:
    reason: Reason
    decided_by: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Challenge:
    state: bytes = field(repr=False)
    prompt: str
    factor: str
    decided_by: str = ""
    reason: Reason = Reason.CHALLENGE


@dataclass(frozen=True, slots=True)
class BackendFailure:
    """No answer could be decided; ``[server] on_backend_error`` picks drop or Reject."""

    backend: str
    detail: str = ""
    reason: Reason = Reason.BACKEND_ERROR


@dataclass(frozen=True, slots=True)
class Abandoned:
    """Not decided, and nothing of it committed: refused at admission or past its deadline
    (``[server] request_budget_seconds``). Answered with nothing (RADIUS) or 503 (HTTP); never
    counted as a decision, so a retransmission is new work."""

    why: str  # "overload" (refused at admission), "expired" (queued past its deadline), "late"
    reason: str = "overload"  # the drop reason (SPEC §3)


@dataclass(frozen=True, slots=True)
class PasswordOk:
    """What an ``authenticate`` hook answers when the password matched."""

    decided_by: str = ""


@dataclass(frozen=True, slots=True)
class PushPending:
    """Not decided yet: push request ``push_id`` awaits the user's phone until ``deadline``
    (epoch seconds). The pipeline's synchronous part ends here; the caller (protocol layer,
    ``POST /auth``) polls ``Pipeline.resume`` on reactor timers, never a sleeping thread, and
    the resumed decision is the one that is answered and told to ``post_auth``."""

    push_id: str
    deadline: float
    user: "User" = field(repr=False)
    decided_by: str = "push"
    reason: Reason = Reason.PUSH_PENDING


Decision = Accept | Reject | Challenge | BackendFailure | PushPending | Abandoned
