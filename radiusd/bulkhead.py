"""Bulkheads: no remote backend may hold every auth thread.

The pipeline runs in one pool; a stalled LDAP server, SMS gateway or push webhook would
otherwise let its requests occupy every thread until their timeouts, and local users — whose
logins need nothing remote — would queue behind them. So each remote backend gets at most
``limit`` threads at once; a request that would need one more fails at once with a
``BackendError`` for that backend (fail closed: ``on_backend_error`` decides drop or Reject),
without waiting, because a thread waiting for a slot is a thread taken from everyone else.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

from radiusd.errors import BackendError


class Bulkheads:
    def __init__(self, limit: int):
        self.limit = limit
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def _semaphore(self, backend: str) -> threading.BoundedSemaphore:
        with self._lock:
            return self._slots.setdefault(backend, threading.BoundedSemaphore(self.limit))

    @contextmanager
    def enter(self, backend: str):
        """Hold one of ``backend``'s slots for the ``with`` block, or raise at once."""
        slots = self._semaphore(backend)
        if not slots.acquire(blocking=False):
            raise BackendError(backend, f"busy: {self.limit} auth threads already wait on it")
        try:
            yield
        finally:
            slots.release()
