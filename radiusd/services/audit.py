"""Audit events: authentication decisions and administrative changes, one row each."""

from __future__ import annotations

from sqlalchemy import insert

from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, utcnow


def record_event(database: Database, type: str, *, username: str | None = None, client: str | None = None,
                 result: str = "", reason: str = "", actor: str = "", detail: dict | None = None) -> None:
    with database.writer.begin() as conn:
        conn.execute(insert(audit_events).values(
            occurred_at=utcnow(), type=type, username=username, client=client, result=result,
            reason=reason, actor=actor, detail=detail or {}))
