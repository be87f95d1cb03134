"""WorkQueue: admission by measured service time, deadlines checked when a worker takes a job."""

from __future__ import annotations

import pytest

from radiusd.admission import Expired, Overloaded, WorkQueue
from tests.fakes import Clock, InlineReactor


class HeldPool:
    """A pool whose jobs run when the test says so, as a worker taking them from the queue would."""

    def __init__(self):
        self.jobs = []

    def callInThread(self, function, *args, **kwargs):
        self.jobs.append((function, args, kwargs))

    def run_next(self) -> None:
        function, args, kwargs = self.jobs.pop(0)
        function(*args, **kwargs)


def outcomes(deferred) -> list:
    seen = []
    deferred.addCallbacks(seen.append, lambda failure: seen.append(failure.value))
    return seen


def queue(pool, clock, **settings) -> WorkQueue:
    values = dict(threads=2, limit=100, target_seconds=1.0)
    values.update(settings)
    return WorkQueue(InlineReactor(), pool, clock=clock, **values)


def test_a_job_runs_in_the_pool_and_its_result_fires_on_the_reactor():
    pool, clock = HeldPool(), Clock(1000.0)
    work = queue(pool, clock)
    seen = outcomes(work.submit(lambda x: x * 2, 21, deadline=clock.now + 4))
    assert seen == [] and work.pending == 1
    pool.run_next()
    assert seen == [42] and work.pending == 0


def test_a_failing_job_fails_the_deferred_with_its_exception():
    pool, clock = HeldPool(), Clock(1000.0)
    seen = outcomes(queue(pool, clock).submit(lambda: 1 / 0))
    pool.run_next()
    assert isinstance(seen[0], ZeroDivisionError)


def test_a_job_taken_after_its_deadline_is_not_started():
    pool, clock = HeldPool(), Clock(1000.0)
    started = []
    seen = outcomes(queue(pool, clock).submit(started.append, "ran", deadline=clock.now + 4))
    clock.now += 4.5  # it waited in the queue past its deadline
    pool.run_next()
    assert started == [] and isinstance(seen[0], Expired)


def test_beyond_the_limit_work_is_refused_at_once():
    pool, clock = HeldPool(), Clock(1000.0)
    work = queue(pool, clock, limit=2)
    first, second = work.submit(lambda: 1), work.submit(lambda: 2)
    refused = outcomes(work.submit(lambda: 3))
    assert isinstance(refused[0], Overloaded) and len(pool.jobs) == 2
    outcomes(first), outcomes(second)


def test_admission_follows_the_measured_service_time():
    """Once a job is known to take ~0.1 s on 2 threads, a 1 s target admits about 20 jobs ahead:
    the queue holds what can be answered in time, and refuses the rest without queueing it."""
    pool, clock = HeldPool(), Clock(1000.0)
    work = queue(pool, clock, target_seconds=1.0)
    work.service_seconds = 0.1
    admitted = [outcomes(work.submit(lambda: None, deadline=clock.now + 4)) for _ in range(30)]
    refused = [seen for seen in admitted if seen and isinstance(seen[0], Overloaded)]
    assert work.pending == 19 and len(refused) == 11
    assert work.expected_seconds() == pytest.approx((19 / 2 + 1) * 0.1)


def test_a_job_that_cannot_finish_before_its_own_deadline_is_refused():
    pool, clock = HeldPool(), Clock(1000.0)
    work = queue(pool, clock, target_seconds=10.0)
    work.service_seconds = 0.5
    for _ in range(4):
        work.submit(lambda: None, deadline=clock.now + 100)
    seen = outcomes(work.submit(lambda: None, deadline=clock.now + 2.0))  # expected: (4/2 + 1) × 0.5 = 1.5 s
    assert seen == []
    late = outcomes(work.submit(lambda: None, deadline=clock.now + 1.0))
    assert isinstance(late[0], Overloaded)


def test_a_free_worker_always_takes_a_job_even_after_a_stall_inflated_the_service_time():
    """Jobs stuck for 30 s during a database outage must not stop admission once it heals."""
    pool, clock = HeldPool(), Clock()
    work = queue(pool, clock, threads=2, target_seconds=1.0)
    work.service_seconds = 30.0
    first, second = outcomes(work.submit(lambda: 1)), outcomes(work.submit(lambda: 2))
    third = outcomes(work.submit(lambda: 3))
    assert isinstance(third[0], Overloaded) and len(pool.jobs) == 2
    pool.run_next()
    assert first == [1] and outcomes(work.submit(lambda: 4)) == []  # a worker is free again
    pool.run_next(), pool.run_next()
    assert second == [2]


def test_the_service_time_is_a_moving_average_of_what_jobs_took(monkeypatch):
    import radiusd.admission as admission

    ticks = iter([0.0, 0.2, 0.2, 10.0, 10.4, 10.4])  # each job: start, end, and its completion
    monkeypatch.setattr(admission, "perf_counter", lambda: next(ticks))
    pool, clock = HeldPool(), Clock(1000.0)
    work = queue(pool, clock)
    work.submit(lambda: None), work.submit(lambda: None)
    pool.run_next()
    assert work.service_seconds == pytest.approx(0.2)  # the first measurement is taken as it is
    pool.run_next()
    assert work.service_seconds == pytest.approx(0.2 + 0.1 * (0.4 - 0.2))


def test_while_jobs_wait_the_estimate_follows_the_pools_real_throughput(monkeypatch):
    """Two threads that each take 0.1 s but complete one job every 0.2 s between them (the GIL,
    other processes): the queue ahead is priced at 0.2 s a job, not 0.05."""
    import radiusd.admission as admission

    now = [0.0]
    monkeypatch.setattr(admission, "perf_counter", lambda: now[0])
    pool, clock = HeldPool(), Clock()
    work = queue(pool, clock, threads=2, target_seconds=100.0)
    for _ in range(60):
        work.submit(lambda: now.__setitem__(0, now[0] + 0.1))
    for _ in range(50):
        pool.run_next()  # each run advances the clock 0.1 s; completions land 0.2 s apart below
        now[0] += 0.1
    assert work.gap_seconds == pytest.approx(0.2, rel=0.01)
    assert work.expected_seconds() == pytest.approx(10 * work.gap_seconds + 0.1)


def test_a_stall_priced_into_the_estimate_decays_once_jobs_run_normally_again(monkeypatch):
    """After a database outage the estimate holds a huge pace; normal completions (saturated or
    not) bring it back down, so admission opens again."""
    import radiusd.admission as admission

    now = [0.0]
    monkeypatch.setattr(admission, "perf_counter", lambda: now[0])
    pool, clock = HeldPool(), Clock()
    work = queue(pool, clock, threads=2, target_seconds=1.0)
    work.gap_seconds, work.service_seconds = 6.0, 6.0  # what two 12 s stuck jobs left behind
    for _ in range(60):
        work.submit(lambda: now.__setitem__(0, now[0] + 0.02))
        pool.run_next()
    assert work.gap_seconds < 0.05 and work.service_seconds < 0.05
    assert not work.too_late(deadline=clock.now + 4)

