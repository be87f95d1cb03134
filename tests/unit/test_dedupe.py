"""radiusd.dedupe: RFC 5080 duplicate detection with a fake clock."""

from __future__ import annotations

import pytest

from radiusd.dedupe import IN_PROGRESS, DuplicateCache
from tests.fakes import Clock

KEY = ("192.0.2.10", 40000, 7, b"A" * 16)
REPLY = b"\x02\x07\x00\x14" + b"R" * 16


@pytest.fixture
def clock():
    return Clock(1000.0)


@pytest.fixture
def cache(clock):
    return DuplicateCache(10, clock)


def test_new_request_is_unknown(cache):
    assert cache.lookup(KEY) is None
    assert len(cache) == 0


def test_request_being_processed_is_in_progress(cache):
    cache.begin(KEY)
    assert cache.lookup(KEY) is IN_PROGRESS
    assert len(cache) == 1


def test_answered_request_returns_the_cached_reply_bytes(cache):
    cache.begin(KEY)
    cache.complete(KEY, REPLY)
    assert cache.lookup(KEY) == REPLY
    assert len(cache) == 0


def test_cached_reply_lives_for_the_lifetime_then_expires(cache, clock):
    cache.begin(KEY)
    cache.complete(KEY, REPLY)
    clock.now += 9.999
    assert cache.lookup(KEY) == REPLY
    clock.now += 0.001
    assert cache.lookup(KEY) is None
    clock.now -= 5  # once expired it is gone, even if asked again with an earlier time
    assert cache.lookup(KEY) is None


def test_any_key_part_distinguishes_requests(cache):
    cache.begin(KEY)
    cache.complete(KEY, REPLY)
    host, port, identifier, authenticator = KEY
    for other in [("192.0.2.11", port, identifier, authenticator), (host, port + 1, identifier, authenticator),
                  (host, port, identifier + 1, authenticator), (host, port, identifier, b"B" * 16)]:
        assert cache.lookup(other) is None


def test_forgotten_request_is_processed_afresh(cache):
    cache.begin(KEY)
    cache.forget(KEY)
    assert cache.lookup(KEY) is None
    assert len(cache) == 0


def test_lifetime_zero_caches_nothing(clock):
    cache = DuplicateCache(0, clock)
    cache.begin(KEY)
    assert cache.lookup(KEY) is IN_PROGRESS
    cache.complete(KEY, REPLY)
    assert cache.lookup(KEY) is None
    assert len(cache) == 0


def test_older_entries_expire_while_newer_stay(cache, clock):
    first, second = KEY, ("192.0.2.10", 40000, 8, b"A" * 16)
    cache.begin(first)
    cache.complete(first, b"first")
    clock.now += 6
    cache.begin(second)
    cache.complete(second, b"second")
    clock.now += 5
    assert cache.lookup(first) is None
    assert cache.lookup(second) == b"second"


def test_completing_again_refreshes_the_reply_and_lifetime(cache, clock):
    cache.begin(KEY)
    cache.complete(KEY, b"old")
    clock.now += 8
    cache.begin(KEY)
    cache.complete(KEY, b"new")
    clock.now += 8
    assert cache.lookup(KEY) == b"new"
