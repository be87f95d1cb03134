"""RFC 5176 Disconnect-Request: the packet, the reply check, the retry schedule, and two clients.

One ``DisconnectExchange`` holds everything about talking to a NAS about one session: it
builds the request (session identification, Event-Timestamp, Message-Authenticator, the
Request Authenticator of RFC 5176 §2.3), hands out the wait before each try (the first
``disconnect_timeout_seconds``, doubled for each retry, ``disconnect_attempts`` tries of the
identical bytes, as RFC 5080 §2.2.1 wants retransmissions), and turns a datagram into a
result once it is a verified reply. The two clients only drive exchanges:

- ``DisconnectClient``: Twisted, inside ``radiusd serve`` (reactor timers, one ephemeral
  UDP port per exchange, so replies never need matching across sessions);
- ``disconnect_blocking``: plain sockets and ``select``, for ``radiusd-admin``, which runs
  without a reactor.

A reply counts only if it comes from the address the request went to, carries the request's
Identifier, and its Response Authenticator verifies; a Message-Authenticator, when present,
must verify too (with the request's authenticator, RFC 5176 §3.3; older FreeRADIUS signs
ACK/NAK over zero octets, which is accepted as well). Anything else is ignored and the
exchange keeps waiting.
"""

from __future__ import annotations

import secrets
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from radiusd.accounting import value_name
from radiusd.clients import normalise_address
from radiusd.config import AccountingSection
from radiusd.packets import (
    ZERO_AUTHENTICATOR,
    Attr,
    Code,
    MalformedPacket,
    encode_attribute,
    encode_signed_request,
    message_authenticator_valid,
    parse_frame,
    response_authenticator_valid,
)

log = Logger(namespace="radiusd.disconnect")

ACK, NAK, TIMEOUT, ERROR = "ack", "nak", "timeout", "error"  # ERROR: no request could be sent


@dataclass(frozen=True, slots=True)
class DisconnectTarget:
    """One session to end, and where and how to ask its NAS."""

    session_key: int  # sessions.id
    session_id: str  # Acct-Session-Id
    username: str | None
    nas: str
    host: str
    port: int
    secret: bytes = field(repr=False)
    nas_ip_address: str | None = None
    nas_identifier: str | None = None
    framed_ip_address: str | None = None


@dataclass(frozen=True, slots=True)
class DisconnectResult:
    target: DisconnectTarget
    result: str  # ack, nak, timeout, error
    error_cause: str | None = None  # the NAK's (or ACK's) Error-Cause, by its dictionary name
    attempts: int = 0


def request_attributes(target: DisconnectTarget, timestamp: int) -> bytes:
    """NAS identification and session identification attributes (RFC 5176 §3), Event-Timestamp."""
    parts = []
    if target.username:
        parts.append(encode_attribute(Attr.USER_NAME, target.username.encode()))
    parts.append(encode_attribute(Attr.ACCT_SESSION_ID, target.session_id.encode()))
    if target.nas_ip_address:
        parts.append(encode_attribute(Attr.NAS_IP_ADDRESS, socket.inet_aton(target.nas_ip_address)))
    elif target.nas_identifier:
        parts.append(encode_attribute(Attr.NAS_IDENTIFIER, target.nas_identifier.encode()))
    if target.framed_ip_address:
        parts.append(encode_attribute(Attr.FRAMED_IP_ADDRESS, socket.inet_aton(target.framed_ip_address)))
    parts.append(encode_attribute(Attr.EVENT_TIMESTAMP, struct.pack("!I", timestamp & 0xFFFFFFFF)))
    return b"".join(parts)


class DisconnectExchange:
    """A Disconnect-Request to one NAS for one session, its retries and its outcome."""

    def __init__(self, target: DisconnectTarget, settings: AccountingSection, *,
                 identifier: int | None = None, timestamp: float | None = None):
        self.target = target
        self.address = (target.host, target.port)
        self.identifier = secrets.randbelow(256) if identifier is None else identifier
        self.wire = encode_signed_request(
            Code.DISCONNECT_REQUEST, self.identifier,
            request_attributes(target, int(time.time() if timestamp is None else timestamp)), target.secret)
        self.authenticator = self.wire[4:20]
        self._waits = [settings.disconnect_timeout_seconds * 2 ** n for n in range(settings.disconnect_attempts)]
        self.attempts = 0

    def next_wait(self) -> float | None:
        """Before each send: how long to wait for a reply, or None when the tries are spent."""
        if self.attempts >= len(self._waits):
            return None
        self.attempts += 1
        return self._waits[self.attempts - 1]

    def reply(self, data: bytes, source) -> DisconnectResult | None:
        """The result if ``data`` from ``source`` is this request's verified reply, else None."""
        if (normalise_address(source[0]), source[1]) != (normalise_address(self.target.host), self.target.port):
            return None
        try:
            frame = parse_frame(data)
        except MalformedPacket:
            return None
        if frame.code not in (Code.DISCONNECT_ACK, Code.DISCONNECT_NAK) or frame.identifier != self.identifier:
            return None
        secret = self.target.secret
        if not response_authenticator_valid(frame, self.authenticator, secret):
            log.warn("Disconnect reply from {nas} with a bad Response Authenticator ignored", nas=self.target.nas)
            return None
        if frame.message_authenticator_at is not None and not (
                message_authenticator_valid(frame, secret, self.authenticator)
                or message_authenticator_valid(frame, secret, ZERO_AUTHENTICATOR)):
            log.warn("Disconnect reply from {nas} with a bad Message-Authenticator ignored", nas=self.target.nas)
            return None
        cause = frame.first(Attr.ERROR_CAUSE)
        error_cause = value_name("Error-Cause", struct.unpack("!I", cause)[0]) if cause and len(cause) == 4 else None
        return DisconnectResult(self.target, ACK if frame.code == Code.DISCONNECT_ACK else NAK, error_cause,
                                self.attempts)

    def timed_out(self) -> DisconnectResult:
        return DisconnectResult(self.target, TIMEOUT, None, self.attempts)


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# -- inside the server: Twisted ----------------------------------------------------------------

class _ExchangeProtocol(DatagramProtocol):
    noisy = False

    def __init__(self, exchange: DisconnectExchange, clock):
        self.exchange = exchange
        self.clock = clock
        self.done: Deferred = Deferred()
        self._timer = None

    def startProtocol(self):
        self._send()

    def _send(self) -> None:
        wait = self.exchange.next_wait()
        if wait is None:
            self._finish(self.exchange.timed_out())
            return
        try:
            self.transport.write(self.exchange.wire, self.exchange.address)
        except OSError as exc:  # no route, say: the try counts, the timer still runs
            log.warn("Disconnect-Request to {nas} not sent: {error}", nas=self.exchange.target.nas, error=exc)
        self._timer = self.clock.callLater(wait, self._send)

    def datagramReceived(self, data, addr):
        result = self.exchange.reply(data, addr)
        if result is not None:
            self._finish(result)

    def _finish(self, result: DisconnectResult) -> None:
        if self.done.called:
            return
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self.transport.stopListening()
        self.done.callback(result)


class DisconnectClient:
    """Sends Disconnect-Requests from the reactor; each fires with its ``DisconnectResult``."""

    def __init__(self, reactor, settings: AccountingSection):
        self.reactor = reactor
        self.settings = settings

    def disconnect(self, target: DisconnectTarget) -> Deferred:
        protocol = _ExchangeProtocol(DisconnectExchange(target, self.settings), self.reactor)
        try:
            self.reactor.listenUDP(0, protocol, interface="::" if _family(target.host) == socket.AF_INET6 else "")
        except Exception as exc:
            log.error("cannot open a socket for a Disconnect-Request: {error}", error=exc)
            return succeed(DisconnectResult(target, ERROR))
        return protocol.done

    def disconnect_all(self, targets: list[DisconnectTarget]) -> Deferred:
        """Every target at once; fires with the results in the targets' order."""
        return gatherResults([self.disconnect(target) for target in targets], consumeErrors=True)


# -- outside the server: blocking sockets -------------------------------------------------------

def disconnect_blocking(targets: list[DisconnectTarget], settings: AccountingSection) -> list[DisconnectResult]:
    """Every target at once, each from its own socket; returns when all have a result."""
    results: dict[int, DisconnectResult] = {}
    pending: dict[socket.socket, tuple[int, DisconnectExchange, float]] = {}

    def send(index: int, exchange: DisconnectExchange, sock: socket.socket) -> None:
        wait = exchange.next_wait()
        if wait is None:
            results[index] = exchange.timed_out()
            del pending[sock]
            sock.close()
            return
        try:
            sock.sendto(exchange.wire, exchange.address)
        except OSError:
            pass  # the try counts; the wait still runs
        pending[sock] = (index, exchange, time.monotonic() + wait)

    for index, target in enumerate(targets):
        sock = socket.socket(_family(target.host), socket.SOCK_DGRAM)
        sock.setblocking(False)
        pending[sock] = (index, DisconnectExchange(target, settings), 0.0)
        send(index, pending[sock][1], sock)
    while pending:
        deadline = min(due for _, _, due in pending.values())
        readable, _, _ = select.select(list(pending), [], [], max(0.0, deadline - time.monotonic()))
        for sock in readable:
            index, exchange, _ = pending[sock]
            try:
                data, source = sock.recvfrom(4096)
            except OSError:  # an ICMP error surfacing: keep waiting for the deadline
                continue
            result = exchange.reply(data, source)
            if result is not None:
                results[index] = result
                del pending[sock]
                sock.close()
        now = time.monotonic()
        for sock, (index, exchange, due) in list(pending.items()):
            if due <= now:
                send(index, exchange, sock)
    return [results[index] for index in range(len(targets))]
