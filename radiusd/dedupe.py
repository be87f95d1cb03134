"""RFC 5080 §2.2.2 duplicate detection: requests in progress and cached reply bytes.

A request is keyed by source address and port, Identifier and Request Authenticator. While
it is processed, a retransmission is dropped; once answered, the exact reply bytes are kept
for ``dedupe_seconds`` and sent again without any processing. Reactor thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

RequestKey = tuple[str, int, int, bytes]
IN_PROGRESS = object()


class DuplicateCache:
    def __init__(self, lifetime: float, clock: Callable[[], float]):
        self.lifetime = lifetime
        self._clock = clock
        self._in_progress: set[RequestKey] = set()
        self._answered: OrderedDict[RequestKey, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._in_progress)

    def lookup(self, key: RequestKey):
        """IN_PROGRESS, the cached reply bytes, or None for a new request."""
        if key in self._in_progress:
            return IN_PROGRESS
        entry = self._answered.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._answered[key]
            return None
        return entry[1]

    def begin(self, key: RequestKey) -> None:
        self._in_progress.add(key)

    def complete(self, key: RequestKey, reply: bytes) -> None:
        self._in_progress.discard(key)
        if self.lifetime <= 0:
            return
        now = self._clock()
        self._expire(now)
        self._answered[key] = (now + self.lifetime, reply)
        self._answered.move_to_end(key)

    def forget(self, key: RequestKey) -> None:
        """Processing ended without a reply: a retransmission is processed afresh."""
        self._in_progress.discard(key)

    def _expire(self, now: float) -> None:
        answered = self._answered
        while answered:
            key, (expires, _) = next(iter(answered.items()))
            if expires > now:
                break
            del answered[key]
