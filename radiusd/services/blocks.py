"""Blocking (SPEC §3.2): failure counting, automatic and manual blocks, lockout settings.

Every change is one atomic statement: a failure is ``failed_attempts = failed_attempts + 1``
(restarting the series when its first failure left the window), and the block that follows is
a conditional UPDATE on the same row, so concurrent failures on any number of threads,
processes or instances are all counted and block exactly once. Block ends are stored UTC times.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable

from pydantic import ValidationError
from sqlalchemy import Table, and_, case, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from radiusd.config import LockoutSection
from radiusd.db.engine import Database
from radiusd.db.tables import settings, users
from radiusd.services import Clocked, Invalid, NotFound, first_error
from radiusd.services.audit import record_event

LOCKOUT = "lockout"
AUTOMATIC_REASON = "too many failed attempts"


def blocked_clause(now: datetime, table: Table = users):
    """SQL: the user (or the row of ``table``, which has the same lockout columns) is blocked at ``now``."""
    return or_(table.c.block_permanent.is_(True), table.c.blocked_until > now)


def not_blocked_clause(now: datetime, table: Table = users):
    return and_(table.c.block_permanent.is_(False), or_(table.c.blocked_until.is_(None), table.c.blocked_until <= now))


def count_failure(database: Database, table: Table, row_id: int, policy: LockoutSection,
                  now: datetime) -> tuple[bool, datetime | None]:
    """Count one failure of a user or operator (``table`` has the lockout columns of ``users``);
    block them if that reached the limit. Returns whether it blocked, and until when.

    A block ends the series (``first_failure_at`` cleared) but keeps the count on show."""
    # While blocked, failures (requests already past check_account) add to the count on show
    # but start no series; the first failure after the block ends starts a fresh one.
    series_over = and_(not_blocked_clause(now, table), or_(
        table.c.first_failure_at.is_(None),
        table.c.first_failure_at <= now - timedelta(seconds=policy.window_seconds)))
    until = None if policy.permanent else now + timedelta(seconds=policy.block_seconds)
    with database.writer.begin() as conn:
        conn.execute(update(table).where(table.c.id == row_id).values(
            failed_attempts=case((series_over, 1), else_=table.c.failed_attempts + 1),
            first_failure_at=case((series_over, now), else_=table.c.first_failure_at)))
        blocked = conn.execute(update(table).where(
            table.c.id == row_id, table.c.failed_attempts >= policy.max_failures, not_blocked_clause(now, table))
            .values(blocked_at=now, blocked_until=until, block_permanent=policy.permanent,
                    block_reason=AUTOMATIC_REASON, first_failure_at=None)).rowcount == 1
    return blocked, until


def clear_failures(database: Database, table: Table, row_id: int) -> None:
    with database.writer.begin() as conn:
        conn.execute(update(table).where(table.c.id == row_id, table.c.failed_attempts > 0)
                     .values(failed_attempts=0, first_failure_at=None))


class BlockService(Clocked):
    def __init__(self, database: Database, defaults: LockoutSection, clock: Callable[[], float],
                 actor: str = "cli", sessions=None):
        self.database = database
        self.defaults = defaults
        self.clock = clock
        self.actor = actor
        self.sessions = sessions  # a SessionService: a block terminates the user's sessions (SPEC §4)

    def _terminate_sessions(self, username: str) -> None:
        if self.sessions is not None:
            self.sessions.terminate_user_later(username, "blocked")


    # -- settings ----------------------------------------------------------------------------------

    def lockout_settings(self) -> LockoutSection:
        """The stored settings; the ``[lockout]`` section seeds them on first use (stored, so
        every instance sharing the database applies the same ones, SPEC §9)."""
        with self.database.engine.connect() as conn:
            stored = conn.execute(select(settings.c.value).where(settings.c.name == LOCKOUT)).scalar()
        if stored is None:
            try:
                with self.database.writer.begin() as conn:
                    conn.execute(insert(settings).values(name=LOCKOUT, value=self.defaults.model_dump(),
                                                         updated_at=self.now()))
            except IntegrityError:  # another instance seeded them first: theirs stand
                pass
            with self.database.engine.connect() as conn:
                stored = conn.execute(select(settings.c.value).where(settings.c.name == LOCKOUT)).scalar()
        return LockoutSection.model_validate(stored)

    def set_lockout_settings(self, changes: dict) -> LockoutSection:
        try:
            updated = LockoutSection.model_validate({**self.lockout_settings().model_dump(), **changes})
        except ValidationError as exc:
            raise first_error(exc) from None
        value, now = updated.model_dump(), self.now()
        with self.database.writer.begin() as conn:
            if conn.execute(update(settings).where(settings.c.name == LOCKOUT)
                            .values(value=value, updated_at=now)).rowcount == 0:
                conn.execute(insert(settings).values(name=LOCKOUT, value=value, updated_at=now))
        record_event(self.database, "admin", result="ok", reason="settings.lockout", actor=self.actor, detail=value)
        return updated

    # -- counting (pipeline) -------------------------------------------------------------------------

    def record_failure(self, user_id: int, username: str) -> bool:
        """Count one failure; block the user if that reached the limit. True if it blocked."""
        blocked, until = count_failure(self.database, users, user_id, self.lockout_settings(), self.now())
        if blocked:
            record_event(self.database, "block", username=username, result="blocked", reason="automatic",
                         actor="lockout", detail={"until": until.isoformat() if until else None,
                                                  "permanent": until is None})
            self._terminate_sessions(username)
        return blocked

    def clear_failures(self, user_id: int) -> None:
        clear_failures(self.database, users, user_id)

    # -- administration ------------------------------------------------------------------------------

    def block(self, username: str, *, seconds: int | None = None, permanent: bool = False, reason: str) -> dict:
        if permanent == (seconds is not None):
            raise Invalid("duration_seconds", "give either a duration in seconds or permanent")
        if seconds is not None and not 1 <= seconds <= 10 * 365 * 86400:
            raise Invalid("duration_seconds", "duration must be 1 second to 10 years")
        reason = (reason or "").strip()
        if not 1 <= len(reason) <= 255:
            raise Invalid("reason", "a reason of 1 to 255 characters is required")
        now = self.now()
        until = None if permanent else now + timedelta(seconds=seconds)
        with self.database.writer.begin() as conn:
            if conn.execute(update(users).where(users.c.username == username).values(
                    blocked_at=now, blocked_until=until, block_permanent=permanent, block_reason=reason,
                    updated_at=now)).rowcount == 0:
                raise NotFound("user", username)
        record_event(self.database, "block", username=username, result="blocked", reason="manual", actor=self.actor,
                     detail={"until": until.isoformat() if until else None, "permanent": permanent,
                             "reason": reason})
        self._terminate_sessions(username)
        return self.blocked_entry(username)

    def unblock(self, username: str) -> None:
        now = self.now()
        with self.database.writer.begin() as conn:
            found = conn.execute(select(users.c.id, blocked_clause(now).label("blocked"))
                                 .where(users.c.username == username)).first()
            if found is None:
                raise NotFound("user", username)
            if not found.blocked:
                raise NotFound("block", username)
            conn.execute(update(users).where(users.c.id == found.id).values(
                blocked_at=None, blocked_until=None, block_permanent=False, block_reason="",
                failed_attempts=0, first_failure_at=None, updated_at=now))
        record_event(self.database, "block", username=username, result="unblocked", reason="manual",
                     actor=self.actor)

    def list_blocked(self, *, after: str | None = None, limit: int | None = None) -> list[dict]:
        """Blocked users by username (those after ``after``, at most ``limit``)."""
        now = self.now()
        query = select(users).where(blocked_clause(now)).order_by(users.c.username)
        if after is not None:
            query = query.where(users.c.username > after)
        if limit is not None:
            query = query.limit(limit)
        with self.database.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [blocked_view(row, now) for row in rows]

    def blocked_entry(self, username: str) -> dict:
        now = self.now()
        with self.database.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.username == username)).first()
        if row is None:
            raise NotFound("user", username)
        return blocked_view(row, now)

    def count_blocked(self) -> int:
        with self.database.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(users).where(blocked_clause(self.now()))).scalar()


def blocked_view(row, now: datetime) -> dict:
    remaining = None if row.block_permanent or row.blocked_until is None else \
        max(0, int((row.blocked_until - now).total_seconds()))
    return {"username": row.username, "reason": row.block_reason, "blocked_at": row.blocked_at,
            "blocked_until": None if row.block_permanent else row.blocked_until,
            "remaining_seconds": remaining, "permanent": row.block_permanent,
            "failed_attempts": row.failed_attempts}
