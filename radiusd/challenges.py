"""Challenge State: protocol state, so it lives in core and in the database.

A State is 20 random bytes; only its SHA-256 is stored, so reading the table does not let
anyone answer a challenge. Taking a State deletes it in the same statement (single use across
every instance sharing the database); it must then be unexpired, from the same NAS and for
the same user. A user has at most ``max_pending`` challenges: a new one beyond that replaces
the oldest, in the transaction that stores it, with the user's row locked on PostgreSQL so
that instances creating challenges for one user at once cannot overshoot the cap.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import bindparam, delete, insert, select

from radiusd.config import MfaSection
from radiusd.db.engine import Database
from radiusd.services import Clocked
from radiusd.db.tables import challenges, users
from radiusd.decisions import Challenge, Reason
from radiusd.metrics import Metrics
from radiusd.model import User

STATE_BYTES = 20


@dataclass(frozen=True, slots=True)
class PendingChallenge:
    user_id: int
    username: str
    nas: str
    factor: str
    code_hash: str | None
    expires_at: datetime


def state_hash(state: bytes) -> str:
    return hashlib.sha256(state).hexdigest()


_TAKE = (delete(challenges).where(challenges.c.state_hash == bindparam("h"))
         .returning(challenges.c.user_id, challenges.c.username, challenges.c.nas, challenges.c.factor,
                    challenges.c.code_hash, challenges.c.expires_at))


class ChallengeStore(Clocked):
    def __init__(self, database: Database, clock: Callable[[], float], metrics: Metrics, *,
                 max_pending: int = MfaSection.model_fields["max_pending_challenges"].default):
        self.database = database
        self.clock = clock
        self.metrics = metrics
        self.max_pending = max_pending

    def create(self, user: User, nas: str, factor: str, ttl_seconds: int, code_hash: str | None = None) -> bytes:
        """Store a new challenge and return its State (the only copy of it); the user's oldest
        challenges beyond ``max_pending`` go in the same transaction."""
        state = secrets.token_bytes(STATE_BYTES)
        now = self.now()
        mine = challenges.c.user_id == user.id
        newest = (select(challenges.c.state_hash).where(mine)
                  .order_by(challenges.c.created_at.desc(), challenges.c.state_hash.desc()).limit(self.max_pending))
        with self.database.writer.begin() as conn:
            # serialises this user's challenge writers (SQLite's writer lock already does)
            conn.execute(select(users.c.id).where(users.c.id == user.id).with_for_update(key_share=True))
            conn.execute(delete(challenges).where(challenges.c.expires_at < now))
            conn.execute(insert(challenges).values(
                state_hash=state_hash(state), user_id=user.id, username=user.username, nas=nas, factor=factor,
                code_hash=code_hash, created_at=now, expires_at=now + timedelta(seconds=ttl_seconds)))
            conn.execute(delete(challenges).where(mine, challenges.c.state_hash.not_in(newest)))
        return state

    def issue(self, user: User, nas: str, factor: str, ttl_seconds: int, prompt: str,
              code_hash: str | None = None) -> Challenge:
        """Store a challenge and return the Access-Challenge decision carrying its State."""
        state = self.create(user, nas, factor, ttl_seconds, code_hash)
        self.metrics.challenges.labels(factor=factor).inc()
        return Challenge(state, prompt, factor, factor)

    def take(self, state: bytes, *, nas: str, username: str | None) -> PendingChallenge | Reason:
        """Consume the State: the pending challenge, or the reason it cannot be answered."""
        with self.database.writer.begin() as conn:
            row = conn.execute(_TAKE, {"h": state_hash(state)}).first()
        if row is None or row.nas != nas or row.username != username:
            return Reason.BAD_STATE
        if row.expires_at <= self.now():
            return Reason.CHALLENGE_EXPIRED
        return PendingChallenge(row.user_id, row.username, row.nas, row.factor, row.code_hash, row.expires_at)
