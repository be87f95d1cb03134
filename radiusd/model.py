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
