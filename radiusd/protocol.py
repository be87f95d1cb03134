"""The auth port: a dumb, total transport (Twisted Names' DNSDatagramProtocol is the model).

It finds the NAS, validates, authenticates the packet, deduplicates and dispatches to the
worker pool; it never raises and never blocks. Validation follows SPEC §3 in order, and each
failure is a drop counted by reason. Replies are signed here, cached for retransmissions,
and Rejects leave no earlier than ``reject_delay_seconds`` after receipt (a reactor timer).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from radiusd.clients import NasRegistry, normalise_address
from radiusd.config import ServerSection
from radiusd.decisions import Accept, BackendFailure, Challenge, Decision
from radiusd.dedupe import IN_PROGRESS, DuplicateCache
from radiusd.errors import to_decision
from radiusd.metrics import Metrics
from radiusd.model import Nas
from radiusd.packets import (
    Attr,
    AuthRequest,
    Code,
    Frame,
    MalformedPacket,
    decode_access_request,
    encode_response,
    message_authenticator_valid,
    parse_frame,
)

log = Logger(namespace="radiusd.protocol")

REPLY_CODES = {Accept: Code.ACCESS_ACCEPT, Challenge: Code.ACCESS_CHALLENGE}
CODE_LABELS = {Code.ACCESS_ACCEPT: "accept", Code.ACCESS_REJECT: "reject", Code.ACCESS_CHALLENGE: "challenge"}


class Dropped(Exception):
    """Internal signal: drop the datagram and count ``reason``."""

    def __init__(self, reason: str):
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the worker pool hands back: the decision and its encoded reply attributes."""

    decision: Decision
    attributes: bytes = b""


class AuthProtocol(DatagramProtocol):
    """One auth socket. Several share the registry, duplicate cache, metrics and dispatcher."""

    accepted_codes = (Code.ACCESS_REQUEST, Code.STATUS_SERVER)
    noisy = False

    def __init__(self, *, registry: NasRegistry, dedupe: DuplicateCache, metrics: Metrics,
                 settings: ServerSection, clock: IReactorTime,
                 dispatch: Callable[[AuthRequest], Deferred], ready: Callable[[], bool]):
        self.registry = registry
        self.dedupe = dedupe
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.dispatch = dispatch
        self.ready = ready
        self._in_flight: set[Deferred] = set()

    # -- receiving ---------------------------------------------------------------------------

    def datagramReceived(self, data: bytes, addr) -> None:
        try:
            self._receive(data, addr)
        except Dropped as drop:
            self.metrics.child(self.metrics.dropped_packets, drop.reason).inc()
        except Exception:  # the transport never raises: anything unexpected is a drop
            log.failure("unexpected error handling a datagram")
            self.metrics.child(self.metrics.dropped_packets, "malformed").inc()

    def _receive(self, data: bytes, addr) -> None:
        received_at = self.clock.seconds()
        host = normalise_address(addr[0])
        nas = self.registry.find(host)
        if nas is None:
            raise Dropped("unknown_client")
        try:
            frame = parse_frame(data)
        except MalformedPacket:
            raise Dropped("malformed") from None
        if frame.code not in self.accepted_codes:
            raise Dropped("unknown_code")
        self._check_message_authenticator(frame, nas)
        key = (host, addr[1], frame.identifier, frame.authenticator)
        cached = self.dedupe.lookup(key)
        if cached is IN_PROGRESS:
            raise Dropped("duplicate_in_progress")
        if cached is not None:
            self.metrics.child(self.metrics.duplicate_requests, nas.name).inc()
            self.transport.write(cached, addr)
            return
        if frame.code == Code.STATUS_SERVER:
            self._answer_status_server(frame, nas, key, addr)
            return
        if len(self.dedupe) >= self.settings.max_pending_requests:
            raise Dropped("overload")
        try:
            request = decode_access_request(frame, nas.name, nas.mfa_mode, nas.secret, (host, addr[1]),
                                            time.time())
        except Exception:
            raise Dropped("malformed") from None
        self.metrics.child(self.metrics.access_requests, nas.name).inc()
        self._process(request, frame, nas, key, addr, received_at)

    def _check_message_authenticator(self, frame: Frame, nas: Nas) -> None:
        """SPEC §3 step 4 (BlastRADIUS): required, verified when present, needed with Proxy-State."""
        if frame.message_authenticator_at is None:
            if (nas.require_message_authenticator or frame.code == Code.STATUS_SERVER
                    or frame.first(Attr.PROXY_STATE) is not None):
                raise Dropped("missing_message_authenticator")
            return
        if not message_authenticator_valid(frame, nas.secret):
            raise Dropped("bad_authenticator")

    def _answer_status_server(self, frame: Frame, nas: Nas, key, addr) -> None:
        if not self.ready():
            raise Dropped("backend_error")
        self.metrics.child(self.metrics.status_server_requests, nas.name).inc()
        reply = encode_response(Code.ACCESS_ACCEPT, frame, nas.secret)
        self.dedupe.complete(key, reply)
        self.transport.write(reply, addr)

    # -- processing --------------------------------------------------------------------------

    def _process(self, request: AuthRequest, frame: Frame, nas: Nas, key, addr, received_at: float) -> None:
        self.dedupe.begin(key)
        self.metrics.requests_in_progress.inc()
        done = maybeDeferred(self.dispatch, request)
        done.addTimeout(self.settings.plugin_timeout_seconds, self.clock)
        done.addErrback(lambda failure: Outcome(to_decision(failure)))
        done.addCallback(self._reply, frame, nas, key, addr, received_at)
        done.addErrback(self._reply_failed, key)
        done.addBoth(self._finished, done)
        if not done.called:
            self._in_flight.add(done)

    def _reply(self, outcome: Outcome, frame: Frame, nas: Nas, key, addr, received_at: float):
        decision = outcome.decision
        self.metrics.child(self.metrics.auth_decisions, str(decision.reason)).inc()
        if isinstance(decision, BackendFailure):
            self.metrics.child(self.metrics.backend_errors, decision.backend).inc()
            if self.settings.on_backend_error == "drop":
                self.metrics.child(self.metrics.dropped_packets, "backend_error").inc()
                self.dedupe.forget(key)
                return None
        code = REPLY_CODES.get(type(decision), Code.ACCESS_REJECT)
        reply = encode_response(code, frame, nas.secret, outcome.attributes if code != Code.ACCESS_REJECT else b"")
        delay = received_at + self.settings.reject_delay_seconds - self.clock.seconds()
        if code == Code.ACCESS_REJECT and delay > 0:
            timer = Deferred()
            self.clock.callLater(delay, timer.callback, None)
            return timer.addCallback(lambda _: self._send(reply, code, nas, key, addr, received_at))
        self._send(reply, code, nas, key, addr, received_at)
        return None

    def _send(self, reply: bytes, code: Code, nas: Nas, key, addr, received_at: float) -> None:
        self.dedupe.complete(key, reply)
        self.transport.write(reply, addr)
        label = CODE_LABELS[code]
        self.metrics.child(self.metrics.access_responses, nas.name, label).inc()
        self.metrics.child(self.metrics.request_duration, label).observe(max(0.0, self.clock.seconds() - received_at))

    def _reply_failed(self, failure, key) -> None:
        log.failure("could not send a reply", failure=failure)
        self.metrics.child(self.metrics.dropped_packets, "backend_error").inc()
        self.dedupe.forget(key)

    def _finished(self, result, done: Deferred):
        self.metrics.requests_in_progress.dec()
        self._in_flight.discard(done)
        return None

    # -- shutdown ----------------------------------------------------------------------------

    def drain(self) -> Deferred:
        """Stop reading; fire when every request in progress has been answered."""
        if self.transport is not None:
            self.transport.stopReading()
        return DeferredList(list(self._in_flight))
