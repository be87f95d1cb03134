"""The SMS codes sent to each user, counted for the per-user send limit (SPEC §3.1)."""

from __future__ import annotations

from datetime import timedelta
from typing import Callable

from sqlalchemy import delete, func, insert, select

from radiusd.db.engine import Database
from radiusd.db.tables import sms_messages, users
from radiusd.services import Clocked


class SmsMessageService(Clocked):
    def __init__(self, database: Database, clock: Callable[[], float]):
        self.database = database
        self.clock = clock

    def reserve(self, user_id: int, *, limit: int, window_seconds: int) -> int | None:
        """Count and record a message in one write transaction serialised per user (SQLite:
        BEGIN IMMEDIATE; PostgreSQL: the user's row locked), so concurrent logins on any thread,
        process or instance cannot exceed ``limit`` per ``window_seconds``. The reserved row's
        id, or None if over."""
        now = self.now()
        since = now - timedelta(seconds=window_seconds)
        with self.database.writer.begin() as conn:
            conn.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())
            sent = conn.execute(select(func.count()).select_from(sms_messages)
                                .where(sms_messages.c.user_id == user_id, sms_messages.c.sent_at > since)).scalar()
            if sent >= limit:
                return None
            return conn.execute(insert(sms_messages).values(user_id=user_id, sent_at=now)
                                .returning(sms_messages.c.id)).scalar()

    def release(self, message_id: int) -> None:
        """Forget a reserved message that was not sent: it does not count against the limit."""
        with self.database.writer.begin() as conn:
            conn.execute(delete(sms_messages).where(sms_messages.c.id == message_id))
