"""Streamed replies (``GET /users/export``): a body produced chunk by chunk off the reactor.

A handler answers a ``Stream`` instead of a ``Reply``; the resource sends its status and
headers, then a ``ChunkProducer`` asks the route's worker pool for one chunk at a time and
writes it, only while the client keeps up (an ``IPushProducer`` registered on the request:
twisted pauses it when the transport's buffer is full). twisted.web sends the body with
chunked transfer encoding; if producing a chunk fails, the connection is closed before the
final chunk, so the client sees a truncated body rather than a short but complete-looking one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from zope.interface import implementer

log = Logger(namespace="radiusd.admin_api")


@dataclass(frozen=True)
class Stream:
    """A handler's streamed answer. ``chunks`` is advanced only in worker threads, one call
    at a time; nothing else about it is touched by the reactor."""

    chunks: Iterator[bytes]
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()
    status: int = 200
    hold_seconds: float = 0.0
    client: str = ""


@implementer(IPushProducer)
class ChunkProducer:
    def __init__(self, reactor, pool, request, chunks: Iterator[bytes]):
        self.reactor = reactor
        self.pool = pool
        self.request = request
        self.chunks = chunks
        self.paused = False
        self.busy = False  # a chunk is being produced
        self.stopped = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._more()

    def _more(self) -> None:
        if self.paused or self.busy or self.stopped:
            return
        self.busy = True
        produced = deferToThreadPool(self.reactor, self.pool, next, self.chunks, None)
        produced.addCallbacks(self._write, self._failed)

    def _write(self, chunk: bytes | None) -> None:
        self.busy = False
        if self.stopped:
            return
        if chunk is None:
            self.stopped = True
            self.request.unregisterProducer()
            self.request.finish()
            return
        if chunk:
            self.request.write(chunk)
        self._more()

    def _failed(self, failure) -> None:
        self.busy = False
        log.failure("a streamed API reply failed; closing the connection", failure=failure)
        if self.stopped:
            return
        self.stopped = True
        self.request.unregisterProducer()
        self.request.loseConnection()

    # IPushProducer

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._more()

    def stopProducing(self) -> None:
        self.stopped = True
