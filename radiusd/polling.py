"""Waiting without a waiting thread: ask a question in a worker pool, and again every
``interval`` seconds on reactor timers, until it has an answer.

A held push (the RADIUS reply waiting for the user's phone) and the device's long poll
(``GET /mobile/push?wait=N``) both wait this way: each attempt is one short call in the pool
(a database read), and between attempts nothing but a ``callLater`` exists, so neither the
reactor nor a worker thread is held while the user decides.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool

T = TypeVar("T")


def poll(reactor, pool, attempt: Callable[[], T | None], interval: float, *, deadline: float | None = None,
         expired: Callable[[], T] | None = None) -> Deferred:
    """A Deferred of ``attempt()``'s first non-None answer (the first attempt runs at once).

    With ``deadline`` (``reactor.seconds()`` time), it fires with ``expired()`` once no answer
    came by then. A failing attempt fails the Deferred; cancelling it stops the timer."""
    timer = None

    def cancel(_):
        if timer is not None and timer.active():
            timer.cancel()

    result = Deferred(cancel)

    def ask() -> None:
        if not result.called:
            deferToThreadPool(reactor, pool, attempt).addCallbacks(answered, failed)

    def answered(value) -> None:
        nonlocal timer
        if result.called:  # cancelled meanwhile
            return
        if value is not None:
            result.callback(value)
            return
        now = reactor.seconds()
        if deadline is not None and now >= deadline:
            result.callback(expired() if expired is not None else None)
            return
        timer = reactor.callLater(interval if deadline is None else min(interval, deadline - now), ask)

    def failed(failure) -> None:
        if not result.called:
            result.errback(failure)

    ask()
    return result
