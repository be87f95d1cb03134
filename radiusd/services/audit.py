"""Audit events: authentication decisions and administrative changes, one row each."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select

from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, fitted, utcnow


def record_event(database: Database, type: str, *, username: str | None = None, client: str | None = None,
                 result: str = "", reason: str = "", actor: str = "", detail: dict | None = None) -> None:
    """One audit row; strings too long for their columns are cut with a marker, never refused."""
    with database.writer.begin() as conn:
        conn.execute(insert(audit_events).values(fitted(audit_events, dict(
            occurred_at=utcnow(), type=type, username=username, client=client, result=result,
            reason=reason, actor=actor, detail=detail or {}))))


def list_events(database: Database, *, username: str | None = None, since: datetime | None = None,
                type: str | None = None, before: int | None = None, limit: int | None = None) -> list[dict]:
    """Events newest first, filtered; ``before`` is the id of the last event seen (keyset)."""
    query = select(audit_events).order_by(audit_events.c.id.desc())
    if username is not None:
        query = query.where(audit_events.c.username == username)
    if since is not None:
        query = query.where(audit_events.c.occurred_at >= since)
    if type is not None:
        query = query.where(audit_events.c.type == type)
    if before is not None:
        query = query.where(audit_events.c.id < before)
    if limit is not None:
        query = query.limit(limit)
    with database.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [{"id": row.id, "occurred_at": row.occurred_at, "type": row.type, "username": row.username,
             "client": row.client, "result": row.result, "reason": row.reason, "actor": row.actor,
             "detail": row.detail or {}} for row in rows]
