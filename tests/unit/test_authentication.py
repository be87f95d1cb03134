"""Authentication.decide: the one entry point never fails, maps every failure once and counts
every decision once, whoever asked (the RADIUS port or POST /auth)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from sqlalchemy.exc import OperationalError
from twisted.logger import globalLogPublisher

from radiusd.admission import WorkQueue
from radiusd.authentication import OVERLOAD_LOG_SECONDS, Authentication
from radiusd.decisions import Abandoned, Accept, BackendFailure, Reason, Reject
from radiusd.errors import BackendError
from radiusd.metrics import Metrics
from radiusd.model import AuthRequest
from tests.fakes import InlinePool, InlineReactor, auth_request

REQUEST = AuthRequest(nas="nas1", mfa_mode="challenge", user_name="alice", password=b"pw", state=None,
                      auth_type="pap", received_at=0.0, deadline=float("inf"))


def entry_point(run, *, limit=10, observed=None):
    reactor, metrics = InlineReactor(), Metrics()
    queue = WorkQueue(reactor, InlinePool(), threads=1, limit=limit, target_seconds=2.0)
    observe = observed.append if observed is not None else None
    return Authentication(reactor, queue, SimpleNamespace(run=run), metrics, observe=observe), metrics


def decided(authentication) -> list:
    seen = []
    authentication.decide(REQUEST).addCallback(seen.append)
    return seen


def count(metrics, name, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("decision", [Accept(), Reject(Reason.BAD_PASSWORD)])
def test_a_decision_is_passed_on_and_counted_once(decision):
    observed = []
    authentication, metrics = entry_point(lambda request: decision, observed=observed)
    assert decided(authentication) == [decision]
    assert count(metrics, "radiusd_auth_decisions_total", reason=str(decision.reason)) == 1
    assert observed == [decision]


@pytest.mark.parametrize("error, backend", [
    (OperationalError("SELECT 1", {}, Exception("gone")), "db"),
    (BackendError("ldap", "unreachable"), "ldap"),
    (RuntimeError("a plugin bug"), "plugin"),
])
def test_a_failure_becomes_a_backend_failure_counted_once_never_an_exception(error, backend):
    def run(request):
        raise error

    authentication, metrics = entry_point(run)
    [decision] = decided(authentication)
    assert decision == BackendFailure(backend=backend, detail=type(error).__name__)
    assert count(metrics, "radiusd_auth_decisions_total", reason="backend_error") == 1
    assert count(metrics, "radiusd_backend_errors_total", backend=backend) == 1


def test_work_refused_under_overload_is_abandoned_uncounted_and_logged_once_per_interval():
    lines = []
    observer = lambda event: lines.append(event) if event.get("log_namespace") == "radiusd.pipeline" else None
    globalLogPublisher.addObserver(observer)
    try:
        authentication, metrics = entry_point(lambda request: Accept(), limit=0)
        for _ in range(50):
            assert decided(authentication) == [Abandoned("overload")]
        authentication.reactor.advance(OVERLOAD_LOG_SECONDS)
        decided(authentication)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert [event["count"] for event in lines] == [1, 50]
    assert sum(sample.value for family in metrics.registry.collect() for sample in family.samples
               if sample.name == "radiusd_auth_decisions_total") == 0


# -- a held push, with the real plugins ------------------------------------------------------------

def test_authentication_holds_a_push_until_the_phone_decides_and_counts_the_final_decision_once(make_world):
    world = make_world()
    user_id = world.add_user("judy")
    world.activate("judy")
    reactor = InlineReactor()
    queue = WorkQueue(reactor, InlinePool(), threads=1, limit=10, target_seconds=2, clock=world.clock)
    authentication = Authentication(reactor, queue, world.runtime.pipeline, world.runtime.metrics)
    decided = []
    authentication.decide(auth_request("judy", mfa_mode="append")).addCallback(decided.append)
    reactor.advance(0.25)
    assert decided == []  # held: no thread waits, a timer asks again
    pushes = world.services().pushes
    [push] = pushes.pending_for(user_id)
    pushes.decide(push["push_id"], user_id=user_id, approve=True)
    reactor.advance(0.25)
    assert isinstance(decided[0], Accept)
    counted = world.runtime.metrics.registry.get_sample_value
    assert counted("radiusd_auth_decisions_total", {"reason": "ok"}) == 1
    assert counted("radiusd_auth_decisions_total", {"reason": "push_pending"}) is None
