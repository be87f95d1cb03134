"""The ops site: ``/metrics`` (Prometheus), ``/livez`` and ``/readyz``.

A monitor probes the database every few seconds from a worker thread, and runs the plugins'
named checks (e.g. ``ldap``) beside it. Every probe is bounded: one that has not returned
within ``[ops] health_timeout_seconds`` has failed, and is not started again until its thread
comes back, so a hung database turns the check red instead of leaving the last "ok" in place.
The pipeline reports each decided request (``record_request``); more backend errors than
``[ops] backend_error_ratio`` over the window makes the server not ready as well.

``/readyz`` and the Status-Server answer read these results, so neither ever blocks the reactor.
``ready`` (Status-Server) follows the database and the backend error rate only: local users
still log in while a directory is down, which ``/readyz`` shows.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import Site

from radiusd.config import OpsSection
from radiusd.db.engine import Database
from radiusd.metrics import Metrics

log = Logger(namespace="radiusd.health")
CHECK_INTERVAL_SECONDS = 2.0
NOT_CHECKED = "not checked yet"
DATABASE = "database"
BACKEND_ERRORS = "backend_errors"
REFRESH = "refresh"
MIN_WINDOW_REQUESTS = 10  # fewer decided requests in the window say nothing about an error rate
DATABASE_SHARE = 0.8  # of the probe timeout, for the database's own timeouts: its error names the cause


class ErrorWindow:
    """Backend errors among the requests decided in the last ``seconds``, kept in one-second
    buckets so that memory does not grow with the request rate, with running totals so that the
    question (asked for every Status-Server) costs no sum. Reactor thread only."""

    def __init__(self, clock, seconds: float, ratio: float, minimum: int = MIN_WINDOW_REQUESTS):
        self.clock = clock
        self.seconds = seconds
        self.ratio = ratio
        self.minimum = minimum
        self._buckets: deque[list[int]] = deque()  # [second, requests, errors], oldest first
        self.requests = self.errors = 0  # the buckets' totals

    def record(self, error: bool) -> None:
        second = int(self.clock.seconds())
        if not self._buckets or self._buckets[-1][0] != second:
            self._expire()
            self._buckets.append([second, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += bool(error)
        self.requests += 1
        self.errors += bool(error)

    def clear(self) -> None:
        self._buckets.clear()
        self.requests = self.errors = 0

    def failing(self) -> str | None:
        """Why the error rate is too high, or None."""
        if not self.errors:
            return None
        self._expire()
        if self.requests < self.minimum or self.errors <= self.ratio * self.requests:
            return None
        return f"{self.errors} of {self.requests} requests in the last {self.seconds:g} s failed on a backend"

    def _expire(self) -> None:
        horizon = self.clock.seconds() - self.seconds
        while self._buckets and self._buckets[0][0] + 1 <= horizon:
            _, requests, errors = self._buckets.popleft()
            self.requests -= requests
            self.errors -= errors


def describe(error: BaseException) -> str:
    """One line naming what failed: a plugin's ``detail``, else the driver error's type and first line."""
    detail = getattr(error, "detail", "")
    if detail:
        return detail
    cause = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's exception
    first_line = (str(cause).strip().splitlines() or [""])[0][:200]
    return f"{type(cause).__name__}: {first_line}" if first_line else type(cause).__name__


class HealthMonitor:
    """Keeps ``checks`` (name → error text or None) up to date; ``ready`` while the database
    and the backend error rate pass.

    ``run(function)`` runs a blocking function in a worker thread and returns a Deferred of
    its result; ``refresh`` (gauges read from the database) runs that way after each good
    database probe.
    """

    def __init__(self, clock, run: Callable[[Callable[[], None]], Deferred], database: Database,
                 settings: OpsSection, *, interval: float = CHECK_INTERVAL_SECONDS,
                 refresh: Callable[[], None] = lambda: None, probes: dict[str, Callable[[], None]] | None = None):
        self.clock = clock
        self.run = run
        self.timeout = settings.health_timeout_seconds
        self.interval = interval
        self.refresh = refresh
        self.probes = {DATABASE: lambda: database.probe(self.timeout * DATABASE_SHARE), **(probes or {})}
        self.errors = ErrorWindow(clock, settings.backend_error_window_seconds, settings.backend_error_ratio)
        self._results: dict[str, str | None] = {name: NOT_CHECKED for name in self.probes}
        self._results.update({DATABASE: None, BACKEND_ERRORS: None})  # ``radiusd serve`` checked the database
        self._running: set[str] = set()  # probes (and the refresh) whose thread has not returned
        self._timers: dict = {}  # name → the pending timeout of its run
        self._loop = LoopingCall(self.check)
        self._loop.clock = clock

    @property
    def checks(self) -> dict[str, str | None]:
        return {**self._results, BACKEND_ERRORS: self.errors.failing()}  # the window, as of now

    @property
    def failing(self) -> dict[str, str]:
        """The checks that fail now, with why (``/readyz``)."""
        return {name: error for name, error in self.checks.items() if error}

    @property
    def ready(self) -> bool:
        """Whether to answer Status-Server: the database answers in time and the pipeline's
        backend error rate is below the threshold."""
        return self._results[DATABASE] is None and self.errors.failing() is None

    def record_request(self, backend_error: bool) -> None:
        """Reactor thread, once per decided Access-Request: did a backend fail it?"""
        self.errors.record(backend_error)

    def start(self):
        return self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()

    def check(self) -> None:
        """Start every probe whose previous run has returned; returns at once (the loop must
        not wait on a probe that may hang)."""
        self._note(BACKEND_ERRORS, self.errors.failing())
        for name, probe in self.probes.items():
            if name not in self._running:
                self._start(name, probe)

    def _start(self, name: str, probe: Callable[[], None]) -> None:
        self._running.add(name)
        timer = self._timers[name] = self.clock.callLater(self.timeout, self._note, name,
                                                          f"no answer within {self.timeout:g} s")

        def returned(result):
            self._running.discard(name)
            if not timer.active():
                return  # too late: the timeout has counted it, the next run decides
            timer.cancel()
            self._note(name, describe(result.value) if isinstance(result, Failure) else None)
            if name == DATABASE and not isinstance(result, Failure):
                self._refresh()

        self.run(probe).addBoth(returned)

    def _refresh(self) -> None:
        if REFRESH in self._running:
            return
        self._running.add(REFRESH)

        def failed(failure):
            log.warn("gauges not refreshed: {error}", error=describe(failure.value))

        self.run(self.refresh).addErrback(failed).addBoth(lambda _: self._running.discard(REFRESH))

    def _note(self, name: str, error: str | None) -> None:
        if name == DATABASE:
            error = error and f"unreachable ({error})"
        before = self._results[name]
        if error and before in (None, NOT_CHECKED):
            log.error("{check} check failing: {error}", check=name, error=error)
        elif error is None and before not in (None, NOT_CHECKED):
            log.info("{check} check passes again", check=name)
            if name == DATABASE:
                self.errors.clear()  # errors of the outage are explained; readiness returns with the database
        self._results[name] = error


class JsonResource(Resource):
    isLeaf = True

    def respond(self, request, status: int, body: dict) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(body).encode()


class Livez(JsonResource):
    def render_GET(self, request):
        return self.respond(request, 200, {"status": "ok"})


class Readyz(JsonResource):
    def __init__(self, monitor: HealthMonitor):
        super().__init__()
        self.monitor = monitor

    def render_GET(self, request):
        failing = self.monitor.failing
        if failing:
            return self.respond(request, 503, {"status": "unavailable", "failing": failing})
        return self.respond(request, 200, {"status": "ok"})


class MetricsPage(Resource):
    isLeaf = True

    def __init__(self, metrics: Metrics):
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return generate_latest(self.metrics.registry)


class OpsSite(Site):
    """The ops site, whose requests (a Prometheus scrape every few seconds, probes) are logged
    at debug: at info they would bury everything else."""

    noisy = False

    def log(self, request) -> None:
        log.debug("ops {method} {path} {status}", method=request.method.decode("ascii", "replace"),
                  path=request.path.decode("ascii", "replace"), status=request.code)


def ops_root(metrics: Metrics, monitor: HealthMonitor) -> Resource:
    root = Resource()
    root.putChild(b"metrics", MetricsPage(metrics))
    root.putChild(b"livez", Livez())
    root.putChild(b"readyz", Readyz(monitor))
    return root
