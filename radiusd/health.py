"""The ops site: ``/metrics`` (Prometheus), ``/livez`` and ``/readyz``.

A monitor pings the database every few seconds from the worker pool, and runs the plugins'
named checks (e.g. ``ldap``) beside it; ``/readyz`` and the Status-Server answer read the last
results, so neither ever blocks the reactor. Status-Server follows the database only: local
users still log in while a directory is down.
"""

from __future__ import annotations

import json
from typing import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from radiusd.db.engine import Database
from radiusd.metrics import Metrics

log = Logger(namespace="radiusd.health")
CHECK_INTERVAL_SECONDS = 2.0
NOT_CHECKED = "not checked yet"


class HealthMonitor:
    """Keeps ``checks`` (name → error text or None) up to date; ``ok`` when all pass."""

    def __init__(self, reactor, pool, database: Database, interval: float = CHECK_INTERVAL_SECONDS,
                 refresh=lambda: None, probes: dict[str, Callable[[], None]] | None = None):
        self.reactor = reactor
        self.pool = pool
        self.database = database
        self.refresh = refresh  # gauges read from the database, refreshed after each good ping
        self.probes = dict(probes or {})  # name → callable raising when unhealthy (plugins')
        self.checks: dict[str, str | None] = {"database": None, **{name: NOT_CHECKED for name in self.probes}}
        self._probing: set[str] = set()
        self._loop = LoopingCall(self.check)
        self._loop.clock = reactor
        self.interval = interval

    @property
    def ok(self) -> bool:
        return all(error is None for error in self.checks.values())

    @property
    def database_ok(self) -> bool:
        return self.checks["database"] is None

    def start(self):
        return self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def check(self):
        for name, probe in self.probes.items():
            if name not in self._probing:  # a slow probe is not started twice, nor waited for
                self._probing.add(name)
                deferToThreadPool(self.reactor, self.pool, probe).addBoth(self._probed, name)
        done = deferToThreadPool(self.reactor, self.pool, self._ping_and_refresh)
        done.addCallbacks(self._passed, self._failed)
        return done

    def _ping_and_refresh(self) -> None:
        self.database.ping()
        self.refresh()

    def _passed(self, _):
        if self.checks["database"] is not None:
            log.info("database reachable again")
        self.checks["database"] = None

    def _failed(self, failure):
        if self.checks["database"] is None:
            log.error("database unreachable: {error}", error=type(failure.value).__name__)
        self.checks["database"] = f"unreachable ({type(failure.value).__name__})"

    def _probed(self, result, name: str) -> None:
        self._probing.discard(name)
        error = None
        if isinstance(result, Failure):
            error = getattr(result.value, "detail", "") or f"{type(result.value).__name__}: {result.value}"
        if error and self.checks[name] in (None, NOT_CHECKED):
            log.error("{check} check failing: {error}", check=name, error=error)
        elif error is None and self.checks[name] not in (None, NOT_CHECKED):
            log.info("{check} check passes again", check=name)
        self.checks[name] = error


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
        failing = {name: error for name, error in self.monitor.checks.items() if error}
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


def ops_root(metrics: Metrics, monitor: HealthMonitor) -> Resource:
    root = Resource()
    root.putChild(b"metrics", MetricsPage(metrics))
    root.putChild(b"livez", Livez())
    root.putChild(b"readyz", Readyz(monitor))
    return root
