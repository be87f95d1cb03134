"""The RADIUS ports: dumb, total transports (Twisted Names' DNSDatagramProtocol is the model).

``RadiusProtocol`` is what both ports share: it finds the NAS, validates the frame, checks
the code, applies the port's authenticator policy, deduplicates (RFC 5080), refuses work past
``max_pending_requests`` and dispatches; it never raises and never blocks.
Validation follows SPEC §3 in order, and each failure is a drop counted by reason. Replies
are signed here and cached for retransmissions.

``AuthProtocol`` (the auth port) decodes Access-Requests and hands them to
``Authentication.decide``; it only turns the Decision into a reply or a drop. Rejects leave no
earlier than ``reject_delay_seconds`` after receipt (a reactor timer). ``AccountingProtocol``
(the accounting port) answers an Accounting-Request only once it is recorded.

Every drop is counted by reason and client (the NAS name, ``unknown`` for an unknown source)
and logged as a warning naming the NAS or the source address, the reason and the packet code,
in FreeRADIUS's words where it has them ("... with invalid Message-Authenticator! (Shared
secret is incorrect.)"): the first per (source address, reason), then at most one a minute
saying how many were suppressed, so a flood costs no more than a line a minute per source.

A request stays in the duplicate cache as "in progress" until its work really ends, however
long that takes: a retransmission is never new work while the first copy is queued or running.
"""

from __future__ import annotations

import time
from typing import Callable

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from radiusd.accounting import STATUS_TYPES, AccountingRequest, decode_accounting_request
from radiusd.clients import NasRegistry, normalise_address
from radiusd.config import ServerSection
from radiusd.decisions import Abandoned, Accept, BackendFailure, Challenge, Decision
from radiusd.dedupe import IN_PROGRESS, DuplicateCache
from radiusd.errors import backend_of
from radiusd.logs import FailureLog, Throttle
from radiusd.metrics import Metrics
from radiusd.model import Nas
from radiusd.nas_activity import MessageAuthenticatorSightings
from radiusd.packets import (
    ZERO_AUTHENTICATOR,
    Attr,
    Code,
    Frame,
    MalformedPacket,
    accounting_authenticator_valid,
    decode_access_request,
    encode_response,
    message_authenticator_valid,
    parse_frame,
)

log = Logger(namespace="radiusd.protocol")
failures = FailureLog(log)

REPLY_CODES = {Accept: Code.ACCESS_ACCEPT, Challenge: Code.ACCESS_CHALLENGE}
CODE_LABELS = {Code.ACCESS_ACCEPT: "accept", Code.ACCESS_REJECT: "reject", Code.ACCESS_CHALLENGE: "challenge"}
RECORDED_STATUS_TYPES = frozenset(STATUS_TYPES.values())
UNKNOWN_CLIENT = "unknown"  # the client label of a drop from an address no NAS entry covers

# Each drop reason's log line; {client}, {source}, {code} and {reason} are always given.
DROP_MESSAGES = {
    "unknown_client": "Ignoring {code} from unknown client {source}: no NAS entry covers this address ({reason})",
    "malformed": "Dropped a malformed {code} from client {client} ({source}) ({reason})",
    "unknown_code": "Dropped {code} from client {client} ({source}): this port does not answer it ({reason})",
    "missing_message_authenticator": "Received {code} from client {client} ({source}) without Message-Authenticator: "
                                     "the NAS entry requires one (require_message_authenticator), or the packet "
                                     "carries Proxy-State or is a Status-Server ({reason})",
    "bad_authenticator": "Received packet from {source} with invalid Message-Authenticator! (Shared secret is "
                         "incorrect.) client {client}, {code} ({reason})",
    "duplicate_in_progress": "Dropped a retransmitted {code} from client {client} ({source}): the first copy is "
                             "still being processed ({reason})",
    "overload": "Dropped {code} from client {client} ({source}): the server is overloaded, or the request "
                "could not be answered within request_budget_seconds ({reason})",
    "backend_error": "Dropped {code} from client {client} ({source}): a backend failed or the server is not "
                     "ready, on_backend_error = drop ({reason})",
}
SUPPRESSED = " ({suppressed} more like this suppressed since the last)"


def code_name(code: int | None) -> str:
    """"Access-Request" for 1, as RADIUS texts spell codes."""
    try:
        return Code(code).name.title().replace("_", "-")
    except ValueError:
        return f"packet code {code}"


class Dropped(Exception):
    """Internal signal: drop the datagram and count ``reason``."""

    def __init__(self, reason: str):
        self.reason = reason


class RadiusProtocol(DatagramProtocol):
    """One RADIUS socket. Several share the registry, duplicate cache, metrics and dispatcher.

    A port says which codes it takes (``accepted_codes``), how it authenticates a packet
    (``_check_authenticators``), what answers Status-Server (``status_reply_code``), how a
    request is decoded and dispatched (``_handle``), and what becomes of the worker's result
    (``_reply``) or failure (``_recover``)."""

    accepted_codes: tuple[int, ...] = ()
    status_reply_code: int = Code.ACCESS_ACCEPT
    drop_messages = DROP_MESSAGES
    noisy = False

    def __init__(self, *, registry: NasRegistry, dedupe: DuplicateCache, metrics: Metrics,
                 settings: ServerSection, clock: IReactorTime,
                 dispatch: Callable[[object], Deferred], ready: Callable[[], bool]):
        self.registry = registry
        self.dedupe = dedupe
        self.metrics = metrics
        self.settings = settings
        self.clock = clock
        self.dispatch = dispatch
        self.ready = ready
        self.drop_log = Throttle(clock=clock.seconds)
        self._in_flight: set[Deferred] = set()

    # -- receiving ---------------------------------------------------------------------------

    def datagramReceived(self, data: bytes, addr) -> None:
        nas = None
        try:
            received_at = self.clock.seconds()
            host = normalise_address(addr[0])
            nas = self.registry.find(host)
            self._receive(data, addr, host, nas, received_at)
        except Dropped as drop:
            self._dropped(drop.reason, nas, addr, data[0] if data else None)
        except Exception:  # the transport never raises: anything unexpected is a drop
            failures.failure("unexpected error handling a datagram")
            self._dropped("malformed", nas, addr, data[0] if data else None)

    def _dropped(self, reason: str, nas: Nas | None, addr, code: int | None) -> None:
        """Count a drop and log it, at most a line a minute per (source address, reason)."""
        client = nas.name if nas is not None else UNKNOWN_CLIENT
        self.metrics.child(self.metrics.dropped_packets, reason, client).inc()
        suppressed = self.drop_log.admit((addr[0], reason))
        if suppressed is None:
            return
        message = self.drop_messages.get(reason, "Dropped {code} from client {client} ({source}) ({reason})")
        log.warn(message + SUPPRESSED if suppressed else message, client=client, source=addr[0], reason=reason,
                 code=code_name(code), suppressed=suppressed)

    def _receive(self, data: bytes, addr, host: str, nas: Nas | None, received_at: float) -> None:
        if nas is None:
            raise Dropped("unknown_client")
        try:
            frame = parse_frame(data)
        except MalformedPacket:
            raise Dropped("malformed") from None
        if frame.code not in self.accepted_codes:
            raise Dropped("unknown_code")
        self._check_authenticators(frame, nas)
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
        self._handle(frame, nas, host, key, addr, received_at)

    def _check_authenticators(self, frame: Frame, nas: Nas) -> None:
        """SPEC §3 step 4 for this port; raise Dropped to refuse the packet."""
        raise NotImplementedError

    def _handle(self, frame: Frame, nas: Nas, host: str, key, addr, received_at: float) -> None:
        """Decode (any failure: Dropped("malformed")), count, then ``_process``."""
        raise NotImplementedError

    def _answer_status_server(self, frame: Frame, nas: Nas, key, addr) -> None:
        """RFC 5997: answered without any lookup, dropped while the database is unreachable."""
        if not self.ready():
            raise Dropped("backend_error")
        self.metrics.child(self.metrics.status_server_requests, nas.name).inc()
        reply = encode_response(self.status_reply_code, frame, nas.secret)
        self.dedupe.complete(key, reply)
        self.transport.write(reply, addr)

    # -- processing --------------------------------------------------------------------------

    def _process(self, request, frame: Frame, nas: Nas, key, addr, received_at: float) -> None:
        self.dedupe.begin(key)
        self.metrics.requests_in_progress.inc()
        done = maybeDeferred(self.dispatch, request)
        done.addCallbacks(self._reply, self._recover, callbackArgs=(frame, nas, key, addr, received_at),
                          errbackArgs=(frame, nas, key, addr))
        done.addErrback(self._reply_failed, frame, nas, key, addr)
        done.addBoth(self._finished, done)
        if not done.called:
            self._in_flight.add(done)

    def _reply(self, result, frame: Frame, nas: Nas, key, addr, received_at: float):
        raise NotImplementedError

    def _recover(self, failure, frame: Frame, nas: Nas, key, addr) -> None:
        """The dispatcher failed (the accounting port's recorder); the auth port's never does."""
        raise NotImplementedError

    def _drop_unanswered(self, frame: Frame, nas: Nas, key, addr, reason: str = "backend_error") -> None:
        """No reply: counted, and a retransmission is processed afresh."""
        self._dropped(reason, nas, addr, frame.code)
        self.dedupe.forget(key)

    def _reply_failed(self, failure, frame: Frame, nas: Nas, key, addr) -> None:
        log.failure("could not send a reply", failure=failure)
        self._drop_unanswered(frame, nas, key, addr)

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


class AuthProtocol(RadiusProtocol):
    """The auth port (SPEC §3): Access-Request to the pipeline, Status-Server → Access-Accept."""

    accepted_codes = (Code.ACCESS_REQUEST, Code.STATUS_SERVER)
    status_reply_code = Code.ACCESS_ACCEPT

    def __init__(self, *, encode: Callable[[Decision], bytes], sightings: MessageAuthenticatorSightings, **kwargs):
        """``dispatch`` is ``Authentication.decide``; ``encode`` gives a decision's reply
        attributes; ``sightings`` notes whether each NAS's Access-Requests carry
        Message-Authenticator (``radiusd-admin nas list`` shows it)."""
        super().__init__(**kwargs)
        self.encode = encode
        self.sightings = sightings

    def _check_authenticators(self, frame: Frame, nas: Nas) -> None:
        if frame.code == Code.ACCESS_REQUEST:
            self.sightings.note(nas.name, frame.message_authenticator_at is not None, self.clock.seconds())
        self._check_message_authenticator(frame, nas)

    def _check_message_authenticator(self, frame: Frame, nas: Nas) -> None:
        """SPEC §3 step 4 (BlastRADIUS): required, verified when present, needed with Proxy-State."""
        if frame.message_authenticator_at is None:
            if (nas.require_message_authenticator or frame.code == Code.STATUS_SERVER
                    or frame.first(Attr.PROXY_STATE) is not None):
                raise Dropped("missing_message_authenticator")
            return
        if not message_authenticator_valid(frame, nas.secret):
            raise Dropped("bad_authenticator")

    def _handle(self, frame: Frame, nas: Nas, host: str, key, addr, received_at: float) -> None:
        try:
            now = time.time()
            request = decode_access_request(frame, nas.name, nas.mfa_mode, nas.secret, now,
                                            now + self.settings.request_budget_seconds)
        except Exception:
            raise Dropped("malformed") from None
        self.metrics.child(self.metrics.access_requests, nas.name).inc()
        self._process(request, frame, nas, key, addr, received_at)

    def _reply(self, decision: Decision, frame: Frame, nas: Nas, key, addr, received_at: float):
        if isinstance(decision, Abandoned):
            self._drop_unanswered(frame, nas, key, addr, decision.reason)
            return None
        if isinstance(decision, BackendFailure) and self.settings.on_backend_error == "drop":
            self._drop_unanswered(frame, nas, key, addr)
            return None
        code = REPLY_CODES.get(type(decision), Code.ACCESS_REJECT)
        reply = encode_response(code, frame, nas.secret, self.encode(decision) if code != Code.ACCESS_REJECT else b"")
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


class AccountingProtocol(RadiusProtocol):
    """The accounting port (SPEC §4): Accounting-Request → recorded, then Accounting-Response;
    Status-Server → Accounting-Response (RFC 5997 §4).

    An Accounting-Request must carry a valid Request Authenticator (RFC 2866 §3), which
    already covers every attribute with the shared secret; a Message-Authenticator is verified
    when present (its HMAC taken over 16 zero octets, as for Disconnect-Request) but not
    required, whatever the NAS's ``require_message_authenticator`` (a BlastRADIUS defence for
    Access-Requests). Status-Server always requires one. The dispatcher records the request
    and returns once it is committed; a failure is a drop, so the NAS retransmits or fails over."""

    accepted_codes = (Code.ACCOUNTING_REQUEST, Code.STATUS_SERVER)
    status_reply_code = Code.ACCOUNTING_RESPONSE
    drop_messages = {**DROP_MESSAGES, "bad_authenticator": (
        "Received {code} packet from client {client} ({source}) with invalid Request Authenticator or "
        "Message-Authenticator! (Shared secret is incorrect.) ({reason})")}

    def _check_authenticators(self, frame: Frame, nas: Nas) -> None:
        if frame.code == Code.STATUS_SERVER:
            if frame.message_authenticator_at is None:
                raise Dropped("missing_message_authenticator")
            if not message_authenticator_valid(frame, nas.secret):
                raise Dropped("bad_authenticator")
            return
        if not accounting_authenticator_valid(frame, nas.secret):
            raise Dropped("bad_authenticator")
        if frame.message_authenticator_at is not None and \
                not message_authenticator_valid(frame, nas.secret, ZERO_AUTHENTICATOR):
            raise Dropped("bad_authenticator")

    def _handle(self, frame: Frame, nas: Nas, host: str, key, addr, received_at: float) -> None:
        try:
            request = decode_accounting_request(frame, nas.name, host, time.time())
        except Exception:
            raise Dropped("malformed") from None
        self._process(request, frame, nas, key, addr, received_at)

    def _recover(self, failure, frame: Frame, nas: Nas, key, addr) -> None:
        backend = backend_of(failure.value)
        failures.failure("accounting request not recorded ({backend})", failure, backend=backend)
        self.metrics.child(self.metrics.backend_errors, backend).inc()
        self._drop_unanswered(frame, nas, key, addr)

    def _reply(self, recorded: AccountingRequest, frame: Frame, nas: Nas, key, addr, received_at: float):
        reply = encode_response(Code.ACCOUNTING_RESPONSE, frame, nas.secret, ma_authenticator=ZERO_AUTHENTICATOR)
        self.dedupe.complete(key, reply)
        self.transport.write(reply, addr)
        if recorded.status_type in RECORDED_STATUS_TYPES:
            self.metrics.child(self.metrics.accounting_requests, nas.name, recorded.status_type).inc()
        return None
