"""Frozen records the pipeline works with: users and NAS devices as read from storage."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    password_hash: str | None = field(repr=False)
    enabled: bool
    expires_at: datetime | None
    framed_ip_address: str | None
    mfa_exempt: bool
    reply_attributes: tuple[tuple[str, str], ...]
    phone: str = ""
    source: str = "local"
    blocked_until: datetime | None = None
    block_permanent: bool = False
    failed_attempts: int = 0

    def is_expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def is_blocked(self, now: datetime) -> bool:
        return self.block_permanent or (self.blocked_until is not None and self.blocked_until > now)

    def status(self, now: datetime) -> str:
        """active, disabled, blocked or expired (the first that applies, in that order)."""
        if not self.enabled:
            return "disabled"
        if self.is_blocked(now):
            return "blocked"
        return "expired" if self.is_expired(now) else "active"


@dataclass(frozen=True, slots=True)
class Nas:
    name: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    secret: bytes = field(repr=False)
    require_message_authenticator: bool = True
    mfa_mode: str = "challenge"
    coa_port: int = 3799
    origin: str = "config"


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """One authentication attempt as the hooks see it, whoever asked: an Access-Request decoded
    at the UDP boundary (``packets.decode_access_request``) or an agent's ``POST /auth``.

    ``nas`` names the asker (a NAS, or ``api:NAME`` for an agent); ``received_at`` and
    ``deadline`` are epoch seconds: work not finished by the deadline is abandoned (SPEC §2
    ``request_budget_seconds``)."""

    nas: str
    mfa_mode: str
    user_name: str | None
    password: bytes | None = field(repr=False)
    state: bytes | None = field(repr=False)
    auth_type: str  # "pap", "chap", "mschap", "eap" or "none"
    nas_identifier: str | None = None
    nas_port: int | None = None
    calling_station_id: str | None = None  # the end user's device (MAC, IP): the lockout's "source"
    called_station_id: str | None = None
    received_at: float = 0.0
    deadline: float = float("inf")
