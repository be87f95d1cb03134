"""The web console's server-side sessions (SPEC §10), for the HTTP layer to carry in a cookie.

A session id and its CSRF token are 256-bit random strings returned once, by ``create``; the
database keeps only their SHA-256 digests, so reading it lets nobody take a session over. A
session ends when unused for ``session_idle_minutes``, ``session_max_hours`` after it began,
at logout, or when its operator is removed. Each check of a session is one conditional UPDATE
(still within both limits → ``last_seen_at = now``), so concurrent requests agree on whether it
is alive. A login that has passed the password but not yet the TOTP is an ``mfa_pending``
session; ``complete_mfa`` replaces it with a full one under a new id (no session fixation).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import delete, insert, or_, select, update

from radiusd.config import ConsoleSection
from radiusd.db.engine import Database
from radiusd.db.tables import console_sessions, fitted, operators
from radiusd.services import Clocked

TOKEN_BYTES = 32


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewSession:
    """What the browser gets, once: the cookie value and the CSRF token of its forms."""

    id: str
    csrf_token: str


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    """A live session: who it speaks for (their role as it is now) and its CSRF digest."""

    operator_id: int
    operator: str
    role: str
    mfa_pending: bool
    created_at: datetime
    csrf_hash: str

    def csrf_valid(self, token: str | None) -> bool:
        """True for this session's CSRF token (constant-time); another session's is refused."""
        return token is not None and hmac.compare_digest(self.csrf_hash, token_digest(token))


class ConsoleSessionService(Clocked):
    def __init__(self, database: Database, console: ConsoleSection, clock: Callable[[], float]):
        self.database = database
        self.idle = timedelta(minutes=console.session_idle_minutes)
        self.lifetime = timedelta(hours=console.session_max_hours)
        self.clock = clock

    def create(self, operator_id: int, source: str, *, mfa_pending: bool = False) -> NewSession:
        session = NewSession(secrets.token_urlsafe(TOKEN_BYTES), secrets.token_urlsafe(TOKEN_BYTES))
        now = self.now()
        with self.database.writer.begin() as conn:
            conn.execute(insert(console_sessions).values(fitted(console_sessions, dict(
                id_hash=token_digest(session.id), operator_id=operator_id,
                csrf_hash=token_digest(session.csrf_token), mfa_pending=mfa_pending, source=source,
                created_at=now, last_seen_at=now))))
        return session

    def validate(self, session_id: str | None) -> ConsoleSession | None:
        """The live session with this id, its idle time restarted; None for an unknown or
        ended one (an expired one is deleted)."""
        if not session_id:
            return None
        now, digest = self.now(), token_digest(session_id)
        with self.database.writer.begin() as conn:
            alive = conn.execute(
                update(console_sessions)
                .where(console_sessions.c.id_hash == digest, console_sessions.c.last_seen_at > now - self.idle,
                       console_sessions.c.created_at > now - self.lifetime)
                .values(last_seen_at=now)
                .returning(console_sessions.c.operator_id)).first()
            if alive is None:
                conn.execute(delete(console_sessions).where(console_sessions.c.id_hash == digest))
                return None
            row = conn.execute(
                select(console_sessions, operators.c.name, operators.c.role)
                .join(operators, operators.c.id == console_sessions.c.operator_id)
                .where(console_sessions.c.id_hash == digest)).one()
        return ConsoleSession(row.operator_id, row.name, row.role, row.mfa_pending, row.created_at, row.csrf_hash)

    def complete_mfa(self, session_id: str, source: str) -> NewSession | None:
        """Replace a live ``mfa_pending`` session by a full one with a new id; None if it is not one."""
        session = self.validate(session_id)
        if session is None or not session.mfa_pending or not self.end(session_id):
            return None  # not pending, or a concurrent request completed it first
        return self.create(session.operator_id, source)

    def end(self, session_id: str) -> bool:
        """Logout: True if the session existed."""
        with self.database.writer.begin() as conn:
            return conn.execute(delete(console_sessions)
                                .where(console_sessions.c.id_hash == token_digest(session_id))).rowcount == 1

    def end_all_for_operator(self, operator_id: int) -> int:
        with self.database.writer.begin() as conn:
            return conn.execute(delete(console_sessions)
                                .where(console_sessions.c.operator_id == operator_id)).rowcount

    def sweep(self) -> int:
        """Delete the sessions past either limit; how many."""
        now = self.now()
        with self.database.writer.begin() as conn:
            return conn.execute(delete(console_sessions).where(or_(
                console_sessions.c.last_seen_at <= now - self.idle,
                console_sessions.c.created_at <= now - self.lifetime))).rowcount
