"""Request models at the edge of the API: strict JSON types, unknown fields refused.

Read-only and internal state (status, blocked, counters, seeds, client types of existing
clients) has no field here, so a request naming it is a 422 ``unknown_field``: there is no
mass assignment. Business rules stay in ``radiusd.services``, which validate again.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from radiusd.services.users import UserFields

MAX_PAGE = 500
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def _rfc3339(value):
    """Query times are RFC 3339 with an offset; not epoch numbers, not local times."""
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time with an offset, e.g. 2030-01-31T00:00:00Z")
    return value


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339)]
# Passwords are taken as given: never stripped (UserFields strips its other strings).
Password = Annotated[str, StringConstraints(strip_whitespace=False, max_length=128)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- queries ---------------------------------------------------------------------------------------

class Page(Query):
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(None, max_length=512)


class UserQuery(Page):
    q: str | None = Field(None, max_length=128)
    status: Literal["active", "disabled", "expired", "blocked"] | None = None
    expires_before: Timestamp | None = None


class SessionQuery(Page):
    status: Literal["active", "stopped", "terminated", "stale", "all"] = "active"


class AuditQuery(Page):
    username: str | None = Field(None, max_length=64)
    since: Timestamp | None = None
    type: str | None = Field(None, max_length=32)


# -- users -----------------------------------------------------------------------------------------

class UserCreate(UserFields):
    """A new user: the profile fields, the username and an optional password (with its
    confirmation)."""

    username: str = Field(min_length=1, max_length=64)
    password: Password | None = None
    password_confirmation: Password | None = None


class UserUpdate(UserFields):
    """PATCH: only the fields given change (``null`` clears ``expires_at`` and
    ``framed_ip_address``)."""


class PasswordChange(Body):
    password: Password
    password_confirmation: Password


# -- bulk operations on users -----------------------------------------------------------------------

MAX_BULK_USERS = 1000
Username = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class ImportQuery(Query):
    """``POST /users/import``: the body is the CSV file (text/csv)."""

    dry_run: bool = True
    on_conflict: Literal["fail", "skip", "update"] = "fail"


class BulkPasswordReset(Body):
    """Either ``usernames`` or a filter (``status`` and/or ``q``, as ``GET /users``)."""

    usernames: list[Username] | None = Field(None, min_length=1, max_length=MAX_BULK_USERS)
    status: Literal["active", "disabled", "expired", "blocked"] | None = None
    q: str | None = Field(None, min_length=1, max_length=128)


class BulkExpiration(Body):
    usernames: list[Username] = Field(min_length=1, max_length=MAX_BULK_USERS)
    expires_at: datetime | None  # required; null: never expires


class BlockRequest(Body):
    duration_seconds: int | None = None
    permanent: bool = False
    reason: str = Field(max_length=255)


class LockoutSettings(Body):
    """PUT replaces the settings: every field is required."""

    max_failures: int
    window_seconds: int
    block_seconds: int
    permanent: bool


# -- SoftOTP ---------------------------------------------------------------------------------------

class OtpCode(Body):
    otp: str  # any text: a malformed code is simply not valid


class RemoteConfig(Body):
    pin_required: bool
    biometric_required: bool


class BulkRemoteConfig(Body):
    usernames: list[str] = Field(min_length=1, max_length=1000)
    pin_required: bool | None = None
    biometric_required: bool | None = None


# -- API clients and NAS devices ---------------------------------------------------------------------

class ApiClientCreate(Body):
    type: Literal["admin", "agent", "user"]
    name: str = Field(min_length=1, max_length=60)


class NasCreate(Body):
    name: str = Field(min_length=1, max_length=64)
    address: str = Field(max_length=64)
    secret: str = Field(min_length=1, max_length=128)
    require_message_authenticator: bool | None = None
    mfa_mode: Literal["challenge", "append"] | None = None
    coa_port: int = 3799


class NasUpdate(Body):
    """PATCH: only the fields given change; ``null`` resets ``mfa_mode`` and
    ``require_message_authenticator`` to the server's default."""

    address: str = Field(None, max_length=64)
    secret: str = Field(None, min_length=1, max_length=128)
    require_message_authenticator: bool | None = None
    mfa_mode: Literal["challenge", "append"] | None = None
    coa_port: int = None


# -- checks for integrations -------------------------------------------------------------------------

class AuthCheck(Body):
    """``POST /auth``: the first round (username and password), or the answer to a challenge
    (username, the code in ``password`` and the ``state`` the challenge returned)."""

    username: str = Field(min_length=1, max_length=253)
    password: Password
    state: str | None = Field(None, max_length=128)


class OtpCheck(Body):
    username: str = Field(min_length=1, max_length=253)
    otp: str  # any text: a malformed code is answered {"valid": false}


# -- the authenticator app and push approval -----------------------------------------------------------

class PushStart(Body):
    """``POST /push``: a user application asks the user's authenticator app to approve."""

    username: str = Field(min_length=1, max_length=64)
    description: str = Field("", max_length=128)  # shown on the device, e.g. "Sign-in to the intranet"


class MobileActivate(Body):
    activation_code: str = Field(min_length=1, max_length=64)
    otp: str = Field(max_length=16)
    device_name: str = Field(min_length=1, max_length=64)
    platform: str = Field(min_length=1, max_length=32)


class ConfigAck(Body):
    version: int = Field(ge=1)


class PushDecision(Body):
    decision: Literal["approve", "deny"]


class PushWait(Query):
    wait: int = Field(0, ge=0, le=30)
