"""Admission control for a worker pool: take only the work that can be finished in time.

An unbounded thread-pool queue turns overload into collapse: every request waits behind the
ones before it, they all miss their deadline, the NAS retransmits, and the server ends up
doing nothing but work nobody waits for any more. ``WorkQueue`` instead measures how fast jobs
get done (moving averages of a job's run time and, while jobs wait, of the time between two
completions: the pool's real throughput, GIL and other processes included) and admits a new job
only when the jobs ahead of it and itself can be done within ``target_seconds`` and before the
job's deadline;
the rest are refused at once (``Overloaded``), which costs nothing. A job whose deadline has
passed by the time a worker takes it is not started (``Expired``).

Everything here runs on the reactor thread except the job itself.
"""

from __future__ import annotations

import time
from time import perf_counter
from typing import Callable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

SMOOTHING = 0.1  # weight of the newest service time in the moving average


class Overloaded(Exception):
    """Refused at admission: the queue cannot finish this job in time."""


class Expired(Exception):
    """A worker took the job after its deadline: not started."""


class WorkQueue:
    """A thread pool behind an admission check. ``submit`` returns a Deferred that fires with
    the job's result (on the reactor), or fails with ``Overloaded`` at once or ``Expired``."""

    def __init__(self, reactor, pool, *, threads: int, limit: int, target_seconds: float,
                 clock: Callable[[], float] = time.time):
        self.reactor = reactor
        self.pool = pool
        self.threads = threads
        self.limit = limit
        self.target_seconds = target_seconds
        self.clock = clock  # the deadlines' clock: epoch seconds, read in the worker too
        self.pending = 0  # admitted and not finished: queued or running
        self.service_seconds = 0.0  # moving average of one job's run time
        self.gap_seconds = 0.0  # moving average of the time between completions while jobs wait
        self.last_finished: float | None = None

    def expected_seconds(self) -> float:
        """How long a job admitted now would take to finish: the queue ahead, then itself."""
        per_job = self.gap_seconds or self.service_seconds / self.threads
        return self.pending * per_job + self.service_seconds

    def too_late(self, deadline: float) -> bool:
        """Whether the queue ahead is more than can be done within the target or the deadline.
        Only asked when no worker is free: a free worker always takes the job, so a service time
        measured during a stall (a few very slow jobs) can never stop admission altogether."""
        expected = self.expected_seconds()
        return expected > self.target_seconds or self.clock() + expected > deadline

    def measure(self, took: float) -> None:
        """A job ran for ``took`` seconds and just finished (on the reactor)."""
        now = perf_counter()
        if self.pending > self.threads and self.last_finished is not None:
            pace = now - self.last_finished  # saturated (jobs were waiting): the pool's real pace
        else:
            pace = took / self.threads  # not saturated: what the threads could do; decays a stall's outlier
        self.gap_seconds = moving_average(self.gap_seconds, pace)
        self.last_finished = now
        self.service_seconds = moving_average(self.service_seconds, took)

    def submit(self, job: Callable, *args, deadline: float = float("inf")) -> Deferred:
        result: Deferred = Deferred()
        if self.pending >= self.limit or (self.pending >= self.threads and self.too_late(deadline)):
            result.errback(Overloaded())
            return result
        self.pending += 1

        def run() -> None:
            if self.clock() > deadline:
                outcome, value, took = False, Expired(), None
            else:
                started = perf_counter()
                try:
                    outcome, value = True, job(*args)
                except BaseException:
                    outcome, value = False, Failure()  # made here, where the traceback is
                took = perf_counter() - started
            self.reactor.callFromThread(finish, outcome, value, took)

        def finish(succeeded: bool, value, took: float | None) -> None:
            if took is not None:
                self.measure(took)
            self.pending -= 1
            if succeeded:
                result.callback(value)
            else:
                result.errback(value)

        self.pool.callInThread(run)
        return result


def moving_average(average: float, sample: float) -> float:
    """The exponentially weighted average with ``sample`` added; the first sample as it is."""
    return average + SMOOTHING * (sample - average) if average else sample
