"""Accounting sessions (SPEC §4): recording, listing, stale marking, expiry, termination.

Recording is one upsert per Accounting-Request (``INSERT … ON CONFLICT (nas, session_id) DO
UPDATE``, on SQLite and PostgreSQL alike), so Start, Interim-Update and Stop may arrive in any
order, twice, or on different server instances: an Interim or Stop for an unknown session
creates it, counters and ``updated_at`` only ever grow, a closed session is never reopened,
and only a Stop closes one. Accounting-On/Off closes every open session of the NAS that sent
it (by its source address, so one device of a CIDR entry does not close another's).

Termination sends RFC 5176 Disconnect-Requests through a ``disconnect`` callable the caller
supplies — the Twisted client inside ``radiusd serve``, a blocking one in ``radiusd-admin`` —
and records each result (ACK, NAK with its Error-Cause, timeout) on the session, in the audit
log and in ``radiusd_disconnect_requests_total``. An acknowledged session becomes
``terminated``. ``terminate_user_later`` is what disabling, blocking and expiry call: inside
the server it returns at once and the results are recorded when they arrive; it never raises,
so a NAS or database problem never undoes the change that triggered it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import and_, case, func, or_, select, update
from twisted.logger import Logger

from radiusd.accounting import (
    ACCOUNTING_OFF,
    ACCOUNTING_ON,
    SESSION_STATUS_TYPES,
    START,
    STOP,
    AccountingRequest,
)
from radiusd.config import AccountingSection
from radiusd.db.engine import Database
from radiusd.db.tables import fitted, sessions, users
from radiusd.disconnect import ACK, ERROR, DisconnectResult, DisconnectTarget
from radiusd.model import Nas
from radiusd.services import Invalid
from radiusd.services.audit import record_event
from radiusd.services.users import check_username

log = Logger(namespace="radiusd.sessions")

ACTIVE, STOPPED, TERMINATED, STALE = "active", "stopped", "terminated", "stale"
STATUSES = (ACTIVE, STOPPED, TERMINATED, STALE)
NAS_RESTART_CAUSE = "NAS-Reboot"  # Accounting-On/Off closes the NAS's sessions (as FreeRADIUS does)
TERMINATED_CAUSE = "Admin-Reset"  # until the NAS's own Stop says otherwise
MAX_OCTETS = 2 ** 63 - 1  # a signed BIGINT; Gigawords × 2^32 + Octets could exceed it in theory
COUNTED_RESULTS = frozenset({"ack", "nak", "timeout"})

Disconnect = Callable[[list[DisconnectTarget]], list[DisconnectResult]]
DisconnectLater = Callable[[list[DisconnectTarget], Callable[[list[DisconnectResult]], None]], None]


def _greatest(new, old):
    return case((new > old, new), else_=old)


def _least(new, old):
    return case((new < old, new), else_=old)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, timezone.utc)


def session_view(row) -> dict:
    """A session as the API and CLI show it (SPEC §4's fields, then who and what ended it)."""
    return {
        "session_id": row.session_id,
        "username": row.username,
        "nas": row.nas,
        "framed_ip_address": row.framed_ip_address,
        "calling_station_id": row.calling_station_id,
        "nas_port": row.nas_port,
        "started_at": row.started_at,
        "updated_at": row.updated_at,
        "stopped_at": row.stopped_at,
        "input_octets": row.input_octets,
        "output_octets": row.output_octets,
        "status": row.status,
        "stop_cause": row.stop_cause,
        "disconnect_result": row.disconnect_result,
        "disconnect_error_cause": row.disconnect_error_cause,
        "disconnect_at": row.disconnect_at,
    }


def no_disconnect_client(targets: list[DisconnectTarget]) -> list[DisconnectResult]:
    log.error("no Disconnect client in this process: {count} sessions not terminated", count=len(targets))
    return [DisconnectResult(target, ERROR) for target in targets]


@dataclass
class Links:
    """Where Disconnect-Requests go: the NAS list and the client, blocking and not."""

    nas_lookup: Callable[[str], Nas | None]
    disconnect: Disconnect
    disconnect_later: DisconnectLater | None


class SessionService:
    def __init__(self, database: Database, settings: AccountingSection, *, clock: Callable[[], float] = time.time,
                 nas_lookup: Callable[[str], Nas | None] = lambda name: None,
                 disconnect: Disconnect = no_disconnect_client, disconnect_later: DisconnectLater | None = None,
                 metrics=None, actor: str = "server", on_error: Callable[[str], None] | None = None):
        self.database = database
        self.settings = settings
        self.clock = clock
        self.links = Links(nas_lookup, disconnect, disconnect_later)
        self.metrics = metrics
        self.actor = actor
        self.on_error = on_error  # also told what ``terminate_user_later`` could not do (the CLI prints it)

    def attach(self, *, nas_lookup: Callable[[str], Nas | None], disconnect: Disconnect,
               disconnect_later: DisconnectLater | None) -> None:
        """Wire in the NAS list and the Disconnect client (``radiusd serve`` does, once started)."""
        self.links.nas_lookup, self.links.disconnect, self.links.disconnect_later = \
            nas_lookup, disconnect, disconnect_later

    def for_actor(self, actor: str) -> "SessionService":
        """The same service, with ``actor`` in the audit log (and the same ``links``, so a copy
        made before ``attach`` sends through what it attached)."""
        copy = object.__new__(SessionService)
        copy.__dict__.update(self.__dict__, actor=actor)
        return copy

    def now(self) -> datetime:
        return _utc(self.clock())

    # -- accounting (the accounting worker pool) -------------------------------------------------

    def record(self, request: AccountingRequest) -> AccountingRequest:
        """Record one Accounting-Request, committed before this returns; returns the request."""
        if request.status_type in SESSION_STATUS_TYPES:
            self._upsert(request)
        elif request.status_type in (ACCOUNTING_ON, ACCOUNTING_OFF):
            self._close_nas(request)
        return request

    def _insert(self):
        if self.database.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(sessions)

    def _upsert(self, request: AccountingRequest) -> None:
        event = _utc(request.event_time)
        interval = request.interim_interval or self.settings.default_interim_seconds
        stale_after = event + timedelta(seconds=self.settings.stale_after_intervals * interval)
        started = event
        if request.status_type != START and request.session_time is not None:
            started = event - timedelta(seconds=min(request.session_time, 10 * 365 * 86400))
        stop = request.status_type == STOP
        statement = self._insert().values(fitted(sessions, dict(
            nas=request.nas, nas_address=request.source, session_id=request.session_id,
            username=request.user_name, nas_ip_address=request.nas_ip_address,
            nas_identifier=request.nas_identifier, nas_port=request.nas_port,
            framed_ip_address=request.framed_ip_address, calling_station_id=request.calling_station_id,
            started_at=started, updated_at=event, stopped_at=event if stop else None,
            input_octets=min(request.input_octets or 0, MAX_OCTETS),
            output_octets=min(request.output_octets or 0, MAX_OCTETS),
            session_time=request.session_time, status=STOPPED if stop else ACTIVE,
            stop_cause=request.terminate_cause if stop else None, interim_interval=request.interim_interval,
            stale_after=stale_after)))
        new, old = statement.excluded, sessions.c
        changes = {
            "nas_address": new.nas_address,
            "username": func.coalesce(old.username, new.username),
            "nas_ip_address": func.coalesce(new.nas_ip_address, old.nas_ip_address),
            "nas_identifier": func.coalesce(new.nas_identifier, old.nas_identifier),
            "nas_port": func.coalesce(new.nas_port, old.nas_port),
            "framed_ip_address": func.coalesce(new.framed_ip_address, old.framed_ip_address),
            "calling_station_id": func.coalesce(new.calling_station_id, old.calling_station_id),
            "started_at": _least(new.started_at, old.started_at),
            "updated_at": _greatest(new.updated_at, old.updated_at),
            "input_octets": _greatest(new.input_octets, old.input_octets),
            "output_octets": _greatest(new.output_octets, old.output_octets),
            "session_time": func.coalesce(_greatest(new.session_time, old.session_time), new.session_time),
            "interim_interval": func.coalesce(new.interim_interval, old.interim_interval),
            "stale_after": _greatest(new.stale_after, old.stale_after),
        }
        if stop:
            changes.update(
                status=case((old.status.in_((ACTIVE, STALE)), STOPPED), else_=old.status),
                stopped_at=func.coalesce(old.stopped_at, new.stopped_at),
                stop_cause=func.coalesce(new.stop_cause, old.stop_cause))
        else:  # news of a session thought stale revives it; a closed one stays closed
            changes["status"] = case((and_(old.status == STALE, new.updated_at > old.updated_at), ACTIVE),
                                     else_=old.status)
        with self.database.writer.begin() as conn:
            conn.execute(statement.on_conflict_do_update(index_elements=["nas", "session_id"], set_=changes))

    def _close_nas(self, request: AccountingRequest) -> None:
        event = _utc(request.event_time)
        with self.database.writer.begin() as conn:
            closed = conn.execute(update(sessions).where(
                sessions.c.nas == request.nas, sessions.c.nas_address == request.source,
                sessions.c.status.in_((ACTIVE, STALE))).values(
                status=STOPPED, stopped_at=event, stop_cause=NAS_RESTART_CAUSE,
                updated_at=_greatest(event, sessions.c.updated_at))).rowcount
        if closed:
            log.info("{type} from {nas} ({source}) closed {count} sessions", type=request.status_type,
                     nas=request.nas, source=request.source, count=closed)

    # -- queries -----------------------------------------------------------------------------------------

    def list_user_sessions(self, username: str, *, status: str | None = ACTIVE, after: int | None = None,
                           limit: int | None = None) -> list[tuple[int, dict]]:
        """(key, view) of the user's sessions with ``status`` (None: all, closed ones too),
        oldest first; ``after`` is the key of the last one seen (keyset pagination)."""
        check_username(username)
        if status is not None and status not in STATUSES:
            raise Invalid("status", f"status must be one of {', '.join(STATUSES)}")
        return [(row.id, session_view(row)) for row in self._rows(username, status, after=after, limit=limit)]

    def _rows(self, username: str, status: str | None = ACTIVE, *, after: int | None = None,
              limit: int | None = None):
        query = select(sessions).where(sessions.c.username == username).order_by(sessions.c.id)
        if status is not None:
            query = query.where(sessions.c.status == status)
        if after is not None:
            query = query.where(sessions.c.id > after)
        if limit is not None:
            query = query.limit(limit)
        with self.database.engine.connect() as conn:
            return conn.execute(query).all()

    def count_active(self) -> int:
        with self.database.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(sessions).where(sessions.c.status == ACTIVE)).scalar()

    # -- housekeeping (a periodic task in a thread) ------------------------------------------------------

    def sweep(self) -> None:
        """Stale marking, expiry of users and retention, in that order."""
        self.mark_stale()
        self.expire_users()
        self.purge()

    def mark_stale(self) -> int:
        """Active sessions past ``stale_after`` (no update for ``stale_after_intervals`` × their
        interim interval) become stale."""
        with self.database.writer.begin() as conn:
            count = conn.execute(update(sessions).where(sessions.c.status == ACTIVE,
                                                        sessions.c.stale_after < self.now())
                                 .values(status=STALE)).rowcount
        if count:
            log.info("{count} sessions without accounting updates marked stale", count=count)
        return count

    def purge(self) -> int:
        """Closed sessions last updated more than ``session_retention_days`` ago are deleted."""
        if not self.settings.session_retention_days:
            return 0
        cutoff = self.now() - timedelta(days=self.settings.session_retention_days)
        with self.database.writer.begin() as conn:
            return conn.execute(sessions.delete().where(sessions.c.status != ACTIVE,
                                                        sessions.c.updated_at < cutoff)).rowcount

    def expire_users(self, username: str | None = None) -> list[str]:
        """Users whose expiry has passed and was not acted on yet: each gets one audit event
        ``expired`` and has its sessions terminated. Each user is claimed with a conditional
        UPDATE, so of several instances sweeping at once exactly one acts."""
        now = self.now()
        due = and_(users.c.expires_at <= now,
                   or_(users.c.expiry_noticed_at.is_(None), users.c.expiry_noticed_at < users.c.expires_at))
        query = select(users.c.id, users.c.username, users.c.expires_at).where(due)
        if username is not None:
            query = query.where(users.c.username == username)
        with self.database.engine.connect() as conn:
            candidates = conn.execute(query).all()
        expired = []
        for row in candidates:
            with self.database.writer.begin() as conn:
                claimed = conn.execute(update(users).where(users.c.id == row.id, due)
                                       .values(expiry_noticed_at=now)).rowcount == 1
            if not claimed:
                continue
            record_event(self.database, "expired", username=row.username, result="expired", reason="expires_at",
                         actor="expiry", detail={"expires_at": row.expires_at.isoformat()})
            log.info("user [{user}] expired: terminating their sessions", user=row.username)
            self.terminate_user_later(row.username, "expired")
            expired.append(row.username)
        return expired

    def notice_expiry(self, username: str) -> None:
        """``expire_users`` for one user whose expiry was just set in the past; never raises."""
        try:
            self.expire_users(username)
        except Exception as exc:
            log.error("could not act on the expiry of [{user}] now (the next sweep will): {error}",
                      user=username, error=type(exc).__name__)

    # -- termination -------------------------------------------------------------------------------------

    def terminate_user(self, username: str, reason: str = "admin") -> list[dict]:
        """Disconnect every open session of the user and wait for the NAS's answers; each
        session's view with its ``result`` and ``error_cause``."""
        check_username(username)
        targets, unreachable = self._targets(username)
        results = self.links.disconnect(targets) if targets else []
        return self.record_results(unreachable + list(results), reason)

    def terminate_user_later(self, username: str, reason: str) -> None:
        """Disconnect every open session of the user; inside the server, without waiting.
        Never raises: the disable, block or expiry that called it stands regardless."""
        try:
            targets, unreachable = self._targets(username)
            if unreachable:
                self.record_results(unreachable, reason)
            if not targets:
                return
            if self.links.disconnect_later is None:
                self.record_results(self.links.disconnect(targets), reason)
            else:
                self.links.disconnect_later(targets, lambda results: self.record_results(results, reason))
        except Exception as exc:
            log.error("could not terminate the sessions of [{user}] ({reason}): {error}", user=username,
                      reason=reason, error=type(exc).__name__)
            if self.on_error is not None:
                self.on_error(f"could not terminate the sessions of {username}: {type(exc).__name__}")

    def _targets(self, username: str) -> tuple[list[DisconnectTarget], list[DisconnectResult]]:
        """Where to send each open session's Disconnect-Request: the NAS's own address when its
        entry is one host, else the address its accounting came from; its ``coa_port`` and
        secret. Sessions of a NAS no longer configured get an ``error`` result at once."""
        targets, unreachable = [], []
        for row in self._rows(username):
            nas = self.links.nas_lookup(row.nas)
            host = row.nas_address if nas is None or nas.network.num_addresses > 1 \
                else str(nas.network.network_address)
            target = DisconnectTarget(
                session_key=row.id, session_id=row.session_id, username=row.username, nas=row.nas, host=host,
                port=nas.coa_port if nas else 0, secret=nas.secret if nas else b"",
                nas_ip_address=row.nas_ip_address, nas_identifier=row.nas_identifier,
                framed_ip_address=row.framed_ip_address)
            if nas is None:
                log.error("session {session} of [{user}]: NAS {nas} is no longer configured", session=row.session_id,
                          user=row.username, nas=row.nas)
                unreachable.append(DisconnectResult(target, ERROR))
            else:
                targets.append(target)
        return targets, unreachable

    def record_results(self, results: list[DisconnectResult], reason: str) -> list[dict]:
        """Store each result on its session (ACK: ``terminated``), audit and count it."""
        if not results:
            return []
        now = self.now()
        with self.database.writer.begin() as conn:
            for outcome in results:
                values = dict(disconnect_result=outcome.result, disconnect_error_cause=outcome.error_cause,
                              disconnect_at=now)
                if outcome.result == ACK:
                    values.update(
                        status=case((sessions.c.status.in_((ACTIVE, STALE)), TERMINATED), else_=sessions.c.status),
                        stopped_at=func.coalesce(sessions.c.stopped_at, now),
                        stop_cause=func.coalesce(sessions.c.stop_cause, TERMINATED_CAUSE))
                conn.execute(update(sessions).where(sessions.c.id == outcome.target.session_key).values(**values))
        for outcome in results:
            target = outcome.target
            log.info("Disconnect {result}{cause}: [{user}] session {session} (from client {nas}, {tries} tries, {why})",
                     result=outcome.result.upper(), cause=f" ({outcome.error_cause})" if outcome.error_cause else "",
                     user=target.username or "", session=target.session_id, nas=target.nas,
                     tries=outcome.attempts, why=reason)
            record_event(self.database, "session", username=target.username or None,
                         client=target.nas, result=outcome.result, reason=reason, actor=self.actor,
                         detail={"session_id": target.session_id, "error_cause": outcome.error_cause,
                                 "attempts": outcome.attempts})
            if self.metrics is not None and outcome.result in COUNTED_RESULTS:
                self.metrics.child(self.metrics.disconnect_requests, outcome.result).inc()
        by_key = {outcome.target.session_key: outcome for outcome in results}
        with self.database.engine.connect() as conn:
            rows = conn.execute(select(sessions).where(sessions.c.id.in_(list(by_key))).order_by(sessions.c.id)).all()
        return [{**session_view(row), "result": by_key[row.id].result, "error_cause": by_key[row.id].error_cause}
                for row in rows]
