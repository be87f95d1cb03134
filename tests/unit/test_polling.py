"""radiusd.polling: waiting on reactor timers, never a sleeping thread."""

from __future__ import annotations

from radiusd.polling import poll
from tests.fakes import InlinePool, InlineReactor


def test_poll_asks_at_once_then_on_timers_until_an_answer():
    reactor, answers = InlineReactor(), iter([None, None, "done"])
    calls = []
    result = poll(reactor, InlinePool(), lambda: calls.append(1) or next(answers), 0.25)
    assert len(calls) == 1 and not result.called
    reactor.advance(0.25)
    assert len(calls) == 2 and not result.called
    reactor.advance(0.25)
    assert result.result == "done" and reactor.getDelayedCalls() == []


def test_poll_answers_expired_at_the_deadline_and_cancelling_stops_it():
    reactor = InlineReactor()
    result = poll(reactor, InlinePool(), lambda: None, 0.5, deadline=1.2, expired=lambda: "empty")
    reactor.pump([0.5, 0.5, 0.2])
    assert result.result == "empty"
    stopped = poll(reactor, InlinePool(), lambda: None, 0.5)
    stopped.cancel()
    stopped.addErrback(lambda failure: None)
    assert reactor.getDelayedCalls() == []
