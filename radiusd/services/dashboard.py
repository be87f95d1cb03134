"""The console's Dashboard figures (SPEC §10): one aggregate query per figure, never a row each."""

from __future__ import annotations

from datetime import timedelta
from typing import Callable

from sqlalchemy import case, func, select

from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, otp_enrolments, sessions, users
from radiusd.services import Clocked
from radiusd.services.blocks import blocked_clause
from radiusd.services.sessions import ACTIVE

STATUSES = ("active", "disabled", "blocked", "expired")
DECISION_WINDOW = timedelta(hours=1)


class DashboardService(Clocked):
    def __init__(self, database: Database, clock: Callable[[], float]):
        self.database = database
        self.clock = clock

    def figures(self) -> dict:
        """Users by status (model.User.status's order: disabled, blocked, expired, active),
        SoftOTP enrolments verified and pending, decisions of the last hour by reason, and the
        open accounting sessions."""
        now = self.now()
        status = case((users.c.enabled.is_(False), "disabled"), (blocked_clause(now), "blocked"),
                      (users.c.expires_at <= now, "expired"), else_="active")
        with self.database.engine.connect() as conn:
            by_status = dict(conn.execute(select(status, func.count()).group_by(status)).all())
            enrolments = dict(conn.execute(select(otp_enrolments.c.verified, func.count())
                                           .group_by(otp_enrolments.c.verified)).all())
            decisions = conn.execute(
                select(audit_events.c.reason, func.count())
                .where(audit_events.c.type == "auth", audit_events.c.occurred_at > now - DECISION_WINDOW)
                .group_by(audit_events.c.reason).order_by(func.count().desc(), audit_events.c.reason)).all()
            open_sessions = conn.execute(select(func.count()).select_from(sessions)
                                         .where(sessions.c.status == ACTIVE)).scalar()
        return {"users": {name: by_status.get(name, 0) for name in STATUSES},
                "blocked": by_status.get("blocked", 0),
                "softotp": {"verified": enrolments.get(True, 0), "pending": enrolments.get(False, 0)},
                "decisions": [{"reason": reason, "count": count} for reason, count in decisions],
                "open_sessions": open_sessions}
