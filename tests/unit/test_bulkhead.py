"""Bulkheads: a remote backend holds at most its share of the auth threads; the rest fail fast."""

from __future__ import annotations

import threading

import pytest

from radiusd.bulkhead import Bulkheads
from radiusd.errors import BackendError, backend_of


def test_past_its_limit_a_backend_fails_at_once_and_other_backends_are_untouched():
    bulkheads = Bulkheads(2)
    with bulkheads.enter("ldap"), bulkheads.enter("ldap"):
        with pytest.raises(BackendError) as refused:
            with bulkheads.enter("ldap"):
                pass
        assert backend_of(refused.value) == "ldap"
        with bulkheads.enter("sms"):  # another backend has its own slots
            pass
    with bulkheads.enter("ldap"):  # slots are given back, also after an exception
        pass


def test_a_slot_is_given_back_when_the_call_raises():
    bulkheads = Bulkheads(1)
    with pytest.raises(TimeoutError):
        with bulkheads.enter("ldap"):
            raise TimeoutError("the directory did not answer")
    with bulkheads.enter("ldap"):
        pass


def test_threads_stalled_in_a_backend_never_exceed_the_limit():
    bulkheads, stall, inside = Bulkheads(3), threading.Event(), []
    refused = []

    def call():
        try:
            with bulkheads.enter("ldap"):
                inside.append(1)
                stall.wait(5)
        except BackendError:
            refused.append(1)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for _ in range(100):
        if len(inside) + len(refused) == 8 or len(refused) == 5:
            break
        threading.Event().wait(0.01)
    assert len(inside) == 3 and len(refused) == 5
    stall.set()
    for thread in threads:
        thread.join(5)
