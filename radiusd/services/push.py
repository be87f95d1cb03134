"""Push approval requests (SPEC §3.1): created by the ``push`` plugin after a correct password
or by a user-type API client (``POST /push``), decided by the user's device
(``POST /mobile/push/{id}``), and polled by whoever waits for the decision.

All state is in the ``push_requests`` table, so any instance may create a request and any
instance may take the device's decision. A request is ``pending`` until the device approves or
denies it, or until it expires; every transition is one conditional UPDATE
(``WHERE state = 'pending'``), so a decision and an expiry racing each other cannot both win,
and a decided request cannot be decided again. Each request carries a two-digit number shown
both to the user (challenge prompt, API answer) and on the device, to match.

An optional webhook (``[push] webhook_url``) is POSTed a wake-up for every new request, from a
small background pool: it carries the push id and expiry only, and failures are logged and
otherwise ignored (the device's long poll finds the request anyway).
"""

from __future__ import annotations

import json
import secrets
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Callable

from sqlalchemy import delete, insert, select, update
from twisted.logger import Logger

from radiusd.db.engine import Database
from radiusd.db.tables import fitted, push_requests
from radiusd.services import Clocked, Conflict, NotFound
from radiusd.services.audit import record_event

if TYPE_CHECKING:  # the plugin imports this module
    from radiusd.plugins.push import PushSection

log = Logger(namespace="radiusd.push")

PENDING, APPROVED, DENIED, EXPIRED = "pending", "approved", "denied", "expired"
STATES = (PENDING, APPROVED, DENIED, EXPIRED)
PUSH_ID_BYTES = 16
KEEP_DECIDED = timedelta(days=1)  # requests are kept this long after they expire, then purged


def new_number() -> str:
    """The two-digit number shown on both sides of a push (10-99)."""
    return f"{10 + secrets.randbelow(90)}"


def view(row) -> dict:
    """A push request as the API shows it (to its requester and to the user's device)."""
    return {"push_id": row.push_id, "username": row.username, "status": row.state, "number": row.number,
            "nas": row.nas, "calling_station_id": row.calling_station_id, "description": row.description,
            "created_at": row.created_at, "expires_at": row.expires_at, "decided_at": row.decided_at}


class PushService(Clocked):
    def __init__(self, database: Database, clock: Callable[[], float], *, ttl_seconds: int, metrics=None,
                 notifier: "WebhookNotifier | None" = None, actor: str = "pipeline"):
        self.database = database
        self.clock = clock
        self.ttl_seconds = ttl_seconds
        self.metrics = metrics
        self.notifier = notifier
        self.actor = actor


    def _count(self, event: str) -> None:
        if self.metrics is not None:
            self.metrics.push_requests.labels(event=event).inc()

    # -- creating ------------------------------------------------------------------------------------

    def create(self, user_id: int, username: str, *, device_row: int | None, nas: str = "",
               calling_station_id: str | None = "", description: str = "", requested_by: str | None = None,
               state_hash: str | None = None, ttl_seconds: int | None = None, number: str | None = None) -> dict:
        """A new pending request; notifies the webhook after it is committed."""
        now = self.now()
        values = fitted(push_requests, dict(
            push_id=secrets.token_urlsafe(PUSH_ID_BYTES), user_id=user_id, username=username,
            device_id=device_row, state=PENDING, number=number or new_number(), nas=nas,
            calling_station_id=calling_station_id or "", description=description, requested_by=requested_by,
            state_hash=state_hash, created_at=now, expires_at=now + timedelta(seconds=ttl_seconds or self.ttl_seconds),
            decided_at=None))
        with self.database.writer.begin() as conn:
            conn.execute(delete(push_requests).where(push_requests.c.expires_at < now - KEEP_DECIDED))
            conn.execute(insert(push_requests).values(**values))
        self._count("created")
        created = {**values, "status": PENDING}
        if self.notifier is not None:
            self.notifier.notify(created["push_id"], created["expires_at"])
        return {key: created[key] for key in ("push_id", "username", "status", "number", "nas", "calling_station_id",
                                              "description", "created_at", "expires_at", "decided_at")}

    # -- reading and expiring --------------------------------------------------------------------------

    def _row(self, **where):
        query = select(push_requests)
        for name, value in where.items():
            query = query.where(push_requests.c[name] == value)
        with self.database.engine.connect() as conn:
            return conn.execute(query).first()

    def settle(self, push_id: str, deadline: datetime | None = None):
        """The request's row after expiring it if it is still pending past its expiry (or past
        ``deadline``, when the waiter gives up earlier); None if there is no such request.

        A plain read while pending and in time, so a waiter polling it costs no write lock."""
        row = self._row(push_id=push_id)
        if row is None or row.state != PENDING:
            return row
        now = self.now()
        if now < row.expires_at and (deadline is None or now < deadline):
            return row
        with self.database.writer.begin() as conn:
            expired = conn.execute(update(push_requests)
                                   .where(push_requests.c.id == row.id, push_requests.c.state == PENDING)
                                   .values(state=EXPIRED, decided_at=now)).rowcount
        if expired:
            self._count("expired")
        return self._row(push_id=push_id)

    def show(self, push_id: str, *, requested_by: str) -> dict:
        """A request started by the API client ``requested_by`` (others' are not found)."""
        row = self.settle(push_id)
        if row is None or row.requested_by != requested_by:
            raise NotFound("push request", push_id)
        return view(row)

    def for_state(self, state_hash: str):
        """The request a challenge's State belongs to (challenge mode), or None."""
        return self._row(state_hash=state_hash)

    def pending_for(self, user_id: int) -> list[dict]:
        """The user's pending, unexpired requests, oldest first."""
        query = (select(push_requests)
                 .where(push_requests.c.user_id == user_id, push_requests.c.state == PENDING,
                        push_requests.c.expires_at > self.now())
                 .order_by(push_requests.c.id))
        with self.database.engine.connect() as conn:
            return [view(row) for row in conn.execute(query).all()]

    # -- deciding ---------------------------------------------------------------------------------------

    def decide(self, push_id: str, *, user_id: int, approve: bool) -> dict:
        """The device's answer to one of its user's pending, unexpired requests; once only."""
        now = self.now()
        state = APPROVED if approve else DENIED
        with self.database.writer.begin() as conn:
            changed = conn.execute(
                update(push_requests)
                .where(push_requests.c.push_id == push_id, push_requests.c.user_id == user_id,
                       push_requests.c.state == PENDING, push_requests.c.expires_at > now)
                .values(state=state, decided_at=now)).rowcount
        row = self.settle(push_id)
        if row is None or row.user_id != user_id:
            raise NotFound("push request", push_id)
        if not changed:
            raise Conflict("push_id", f"the push request is {row.state} and cannot be decided now")
        self._count(state)
        record_event(self.database, "push", username=row.username, result=state, reason=f"push.{state}",
                     actor=self.actor, detail={"push_id": push_id, "nas": row.nas})
        return view(row)


# -- the wake-up webhook ------------------------------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _background() -> ThreadPoolExecutor:
    """One small pool per process for webhook calls (never the auth or API pools)."""
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="radiusd-push-webhook")
        return _executor


class WebhookNotifier:
    """POSTs ``{"type": "push.created", "push_id", "expires_at"}`` to ``[push] webhook_url``."""

    def __init__(self, settings: PushSection):
        self.settings = settings

    @property
    def enabled(self) -> bool:
        return bool(self.settings.webhook_url)

    def notify(self, push_id: str, expires_at: datetime) -> None:
        if self.enabled:
            body = json.dumps({"type": "push.created", "push_id": push_id,
                               "expires_at": expires_at.isoformat()}).encode()
            _background().submit(self.post, body)

    def post(self, body: bytes) -> bool:
        """One attempt; True when the receiver answered 2xx. Never raises."""
        headers = {"Content-Type": "application/json", "User-Agent": "radiusd-push-webhook"}
        try:
            headers.update({name: ref.reveal() for name, ref in self.settings.webhook_headers.items()})
            request = urllib.request.Request(self.settings.webhook_url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(request, timeout=self.settings.webhook_timeout_seconds) as response:
                response.read(1024)
            return True
        except urllib.error.HTTPError as exc:  # the URL is not logged: it may carry a credential
            log.warn("push webhook answered HTTP {status}; ignored", status=exc.code)
        except Exception as exc:
            log.warn("push webhook failed ({error}); ignored", error=type(exc).__name__)
        return False
