"""The health monitor: bounded probes, readiness, the backend error window, ``/readyz``.

Time is a ``task.Clock``; worker threads are stood in for by ``Threads``, whose Deferreds the
test fires (or, for a hung probe, never does). The database probes run for real on SQLite.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from radiusd.config import OpsSection
from radiusd.db.engine import Database
from radiusd.health import BACKEND_ERRORS, CHECK_INTERVAL_SECONDS, DATABASE, HealthMonitor, Readyz

SETTINGS = OpsSection(health_timeout_seconds=1, backend_error_ratio=0.5, backend_error_window_seconds=10)


class Threads:
    """The worker pool's stand-in: each run is a pending Deferred, named by its function."""

    def __init__(self):
        self.runs: list[tuple[object, Deferred]] = []

    def __call__(self, function) -> Deferred:
        done = Deferred()
        self.runs.append((function, done))
        return done

    def pending(self, function) -> list[Deferred]:
        return [done for run, done in self.runs if run is function and not done.called]


@pytest.fixture
def database(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'radiusd.db'}", pool_size=1)
    database.ping()
    yield database
    database.dispose()


def monitor_with(run, database, **kwargs) -> tuple[HealthMonitor, Clock]:
    clock = Clock()
    return HealthMonitor(clock, run, database, SETTINGS, **kwargs), clock


def readyz(monitor: HealthMonitor) -> tuple[int, dict]:
    request = DummyRequest([b""])
    body = Readyz(monitor).render_GET(request)
    return request.responseCode or 200, json.loads(body)


def test_a_hung_database_probe_fails_at_its_timeout_and_is_not_started_again_until_it_returns(database):
    threads = Threads()
    monitor, clock = monitor_with(threads, database)
    monitor.start()
    (hung,) = threads.runs
    assert monitor.ready

    clock.advance(SETTINGS.health_timeout_seconds)
    assert not monitor.ready
    assert monitor.checks[DATABASE] == "unreachable (no answer within 1 s)"
    assert readyz(monitor) == (503, {"status": "unavailable",
                                     "failing": {DATABASE: "unreachable (no answer within 1 s)"}})

    clock.advance(CHECK_INTERVAL_SECONDS * 3)
    assert len(threads.runs) == 1  # still hung: no second thread piles up behind it
    hung[1].callback(None)  # it answers, late: that says nothing about now
    assert not monitor.ready

    clock.advance(CHECK_INTERVAL_SECONDS)
    assert len(threads.runs) == 2
    threads.runs[1][1].callback(None)
    assert monitor.ready and not monitor.failing
    assert readyz(monitor) == (200, {"status": "ok"})
    monitor.stop()
    assert not clock.getDelayedCalls()


def test_a_write_locked_sqlite_database_is_not_ready_and_recovers_without_restart(database, tmp_path):
    monitor, _ = monitor_with(maybeDeferred, database)  # the real probe, in the test's thread
    monitor.check()
    assert monitor.ready

    holder = sqlite3.connect(tmp_path / "radiusd.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        monitor.check()
        assert not monitor.ready
        assert monitor.checks[DATABASE] == "unreachable (OperationalError: database is locked)"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    monitor.check()
    assert monitor.ready


def test_an_unwritable_sqlite_database_is_not_ready(tmp_path, database):
    read_only = Database(f"sqlite:///file:{tmp_path / 'radiusd.db'}?mode=ro&uri=true", pool_size=1)
    try:
        monitor, _ = monitor_with(maybeDeferred, read_only)
        monitor.check()
        assert not monitor.ready
        assert "readonly" in monitor.checks[DATABASE]
    finally:
        read_only.dispose()


def test_a_hung_plugin_check_shows_in_readyz_but_leaves_status_server_answered(database):
    threads = Threads()

    def ldap():
        raise AssertionError("not run by the stand-in pool")

    monitor, clock = monitor_with(threads, database, probes={"ldap": ldap})
    monitor.start()
    assert monitor.checks["ldap"] == "not checked yet"
    for function, done in threads.runs:
        if function is not ldap:
            done.callback(None)
    clock.advance(SETTINGS.health_timeout_seconds)
    assert monitor.checks["ldap"] == "no answer within 1 s"
    assert monitor.ready and monitor.failing
    assert readyz(monitor)[1]["failing"] == {"ldap": "no answer within 1 s"}


def test_a_failing_probe_reports_its_error_in_one_line(database):
    threads = Threads()
    monitor, _ = monitor_with(threads, database)
    monitor.check()
    threads.runs[0][1].errback(ConnectionRefusedError("refused\nsecond line"))
    assert monitor.checks[DATABASE] == "unreachable (ConnectionRefusedError: refused)"
    assert not monitor.ready
    monitor.stop()


def test_gauges_refresh_after_a_good_database_probe_one_at_a_time(database):
    threads = Threads()

    def refresh():
        pass

    monitor, clock = monitor_with(threads, database, refresh=refresh)
    monitor.start()
    threads.runs[0][1].callback(None)
    assert len(threads.pending(refresh)) == 1
    clock.advance(CHECK_INTERVAL_SECONDS)
    threads.runs[-1][1].callback(None)
    assert len(threads.pending(refresh)) == 1  # the first refresh still runs: no second one
    threads.pending(refresh)[0].errback(RuntimeError("pool exhausted"))  # logged, not a failed check
    assert monitor.ready
    monitor.stop()


# -- the backend error window ------------------------------------------------------------------

def record(monitor: HealthMonitor, requests: int, errors: int) -> None:
    for index in range(requests):
        monitor.record_request(backend_error=index < errors)


def test_more_backend_errors_than_the_ratio_make_the_server_not_ready_until_they_age_out(database):
    monitor, clock = monitor_with(Threads(), database)
    record(monitor, 10, 5)
    assert monitor.ready  # half is not above 0.5
    record(monitor, 2, 2)
    assert not monitor.ready
    status, body = readyz(monitor)
    assert status == 503
    assert body["failing"] == {BACKEND_ERRORS: "7 of 12 requests in the last 10 s failed on a backend"}

    clock.advance(5)
    record(monitor, 20, 0)  # good requests dilute the window
    assert monitor.ready
    record(monitor, 30, 30)
    assert not monitor.ready
    clock.advance(SETTINGS.backend_error_window_seconds + 1)  # all aged out, no traffic since
    assert monitor.ready and monitor.checks[BACKEND_ERRORS] is None


def test_a_few_requests_say_nothing_about_the_error_rate(database):
    monitor, _ = monitor_with(Threads(), database)
    record(monitor, 9, 9)
    assert monitor.ready
    record(monitor, 1, 1)
    assert not monitor.ready


def test_the_window_slides_by_the_second(database):
    monitor, clock = monitor_with(Threads(), database)
    record(monitor, 10, 10)
    clock.advance(6)
    record(monitor, 10, 0)
    assert monitor.ready  # 10 of 20
    clock.advance(5)  # the errors' second has left the window (t = 11); the good ones remain
    record(monitor, 1, 1)
    assert monitor.ready and monitor.checks[BACKEND_ERRORS] is None


def test_the_database_coming_back_clears_the_errors_of_its_outage(database):
    threads = Threads()
    monitor, _ = monitor_with(threads, database)
    monitor.check()
    threads.runs[0][1].errback(ConnectionRefusedError("refused"))
    record(monitor, 20, 20)
    assert not monitor.ready
    monitor.check()
    threads.runs[-1][1].callback(None)  # the database answers again
    assert monitor.ready
    monitor.stop()
