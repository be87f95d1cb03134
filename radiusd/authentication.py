"""The one way a request is authenticated, for RADIUS and for ``POST /auth`` alike.

``Authentication.decide(request)`` returns a Deferred that always fires with a Decision and
never fails:

1. the request is admitted to the auth worker pool, or refused at once (``admission.py``);
2. ``Pipeline.run`` decides in a worker thread (``pipeline.py``, the hooks of ``hookspecs.py``);
3. a held push (``PushPending``) is waited for without a waiting thread (``hold_push``);
4. any failure becomes a decision here, in one place (``to_decision``): ``BackendFailure``
   for a backend, ``Abandoned`` for work refused, expired or finished too late;
5. the decision is counted once (``radiusd_auth_decisions_total``, ``radiusd_backend_errors_total``)
   and shown to the health monitor.

The callers only translate: the RADIUS port turns a Decision into a reply or a drop
(``protocol.py``), the admin API into JSON or a 503 (``admin_api/handlers.py``).
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from radiusd.admission import Expired, Overloaded, WorkQueue
from radiusd.decisions import Abandoned, BackendFailure, Decision, PushPending
from radiusd.errors import backend_of
from radiusd.logs import FailureLog
from radiusd.metrics import Metrics
from radiusd.model import AuthRequest
from radiusd.pipeline import Pipeline
from radiusd.polling import poll

log = Logger(namespace="radiusd.pipeline")
failures = FailureLog(log)  # one line per failed request, a traceback per exception type a minute
PUSH_POLL_SECONDS = 0.25  # a held push's state is read this often (one short query in the auth pool)
OVERLOAD_LOG_SECONDS = 10.0  # refusals are logged as one line per interval, with their count


class Authentication:
    def __init__(self, reactor, queue: WorkQueue, pipeline: Pipeline, metrics: Metrics, *,
                 observe: Callable[[Decision], None] | None = None):
        self.reactor = reactor
        self.queue = queue
        self.pipeline = pipeline
        self.metrics = metrics
        self.observe = observe  # the health monitor's view of backend errors
        self.refused = 0
        self.refusals_logged_at = float("-inf")

    def decide(self, request: AuthRequest) -> Deferred:
        done = self.queue.submit(self.pipeline.run, request, deadline=request.deadline)
        done.addCallback(self.hold_push, request)
        done.addErrback(self.to_decision)
        done.addCallback(self.count)
        return done

    def hold_push(self, decision: Decision, request: AuthRequest):
        """A push awaiting the user's phone: ask the pipeline again every quarter second (a short
        query in the pool, reactor timers between) until the phone or the deadline decides."""
        if not isinstance(decision, PushPending):
            return decision
        return poll(self.reactor, self.queue.pool, lambda: self.pipeline.resume(request, decision),
                    PUSH_POLL_SECONDS)

    def to_decision(self, failure: Failure) -> Decision:
        """Every failure out of the pool or the pipeline, mapped once: never an Accept."""
        if failure.check(Overloaded, Expired):
            self.note_refusal()
            return Abandoned("overload" if failure.check(Overloaded) else "expired")
        backend = backend_of(failure.value)
        failures.failure("pipeline failed in backend {backend}", failure, backend=backend)
        return BackendFailure(backend=backend, detail=type(failure.value).__name__)

    def note_refusal(self) -> None:
        """One log line per interval for work refused under overload, however much there is."""
        self.refused += 1
        now = self.reactor.seconds()
        if now - self.refusals_logged_at >= OVERLOAD_LOG_SECONDS:
            log.warn("overload: {count} requests refused (more than the auth pool can answer within "
                     "request_budget_seconds)", count=self.refused)
            self.refused = 0
            self.refusals_logged_at = now

    def count(self, decision: Decision) -> Decision:
        if not isinstance(decision, Abandoned):
            self.metrics.child(self.metrics.auth_decisions, str(decision.reason)).inc()
            if isinstance(decision, BackendFailure):
                self.metrics.child(self.metrics.backend_errors, decision.backend).inc()
        if self.observe is not None:
            self.observe(decision)
        return decision
