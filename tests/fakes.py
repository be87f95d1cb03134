"""Test doubles shared by the unit tests: the protocol harness (a RADIUS port over a fake
transport, Twisted's ``Clock`` and a worker pool the test drives) and pyrad-built packets.

Only what cannot run for real in a unit test is faked here: the transport and the pool. The
protocol, ``Authentication``, the duplicate cache and the metrics are the real ones.
"""

from __future__ import annotations

import ipaddress
import random
from types import SimpleNamespace

from pyrad import packet as pyrad_packet
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from radiusd.authentication import Authentication
from radiusd.clients import NasRegistry
from radiusd.config import ServerSection
from radiusd.dedupe import DuplicateCache
from radiusd.metrics import Metrics
from radiusd.model import Nas
from radiusd.nas_activity import MessageAuthenticatorSightings
from radiusd.packets import Attr
from radiusd.protocol import AuthProtocol
from tests.support import DICTIONARY

SECRET = b"protocol-secret-0123"
OTHER_SECRET = b"some-other-secret-456"
NAS1 = ("192.0.2.10", 40000)          # requires Message-Authenticator
LEGACY = ("198.51.100.7", 40001)      # in a /24 that does not require it
V6NAS = ("2001:db8:1::5", 40002, 0, 0)
UNKNOWN = ("203.0.113.5", 40003)


# -- the protocol harness -----------------------------------------------------------------------------------

class FakeTransport:
    def __init__(self):
        self.written: list[tuple[bytes, tuple]] = []
        self.reading = True

    def write(self, data, addr):
        self.written.append((data, addr))

    def stopReading(self):
        self.reading = False


class InlinePool:
    """A thread pool stand-in that runs the call at once (``deferToThreadPool``'s contract)."""

    def callInThreadWithCallback(self, on_result, function, *args, **kwargs):
        try:
            on_result(True, function(*args, **kwargs))
        except Exception as error:  # pragma: no cover - not exercised
            on_result(False, error)

    def callInThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class InlineReactor(Clock):
    """Twisted's ``Clock`` that also takes calls "from a thread" (at once, as they come inline)."""

    def callFromThread(self, function, *args, **kwargs):
        function(*args, **kwargs)


class Dispatcher:
    """Stands in for the auth worker pool (a ``WorkQueue``): records every request and hands
    back a Deferred the test fires with a decision (or fails)."""

    def __init__(self):
        self.requests = []
        self.pending: list[Deferred] = []
        self.pool = InlinePool()  # a held push is polled here, through the pipeline the test sets

    def submit(self, job, request, deadline: float = float("inf")) -> Deferred:
        self.requests.append(request)
        done = Deferred()
        self.pending.append(done)
        return done

    def __call__(self, request) -> Deferred:
        return self.submit(None, request)


class Harness:
    """A protocol (the auth port's unless ``protocol_class`` says otherwise) over a fake transport."""

    def __init__(self, protocol_class=AuthProtocol, **settings):
        values = dict(dedupe_seconds=10, reject_delay_seconds=1.0, max_pending_requests=100,
                      on_backend_error="drop")
        values.update(settings)
        self.settings = ServerSection(**values)
        self.clock = InlineReactor()
        self.metrics = Metrics()
        self.transport = FakeTransport()
        self.dispatcher = Dispatcher()
        self.is_ready = True
        registry = NasRegistry([
            Nas(name="nas1", network=ipaddress.ip_network("192.0.2.10/32"), secret=SECRET,
                require_message_authenticator=True),
            Nas(name="legacy", network=ipaddress.ip_network("198.51.100.0/24"), secret=SECRET,
                require_message_authenticator=False),
            Nas(name="v6nas", network=ipaddress.ip_network("2001:db8:1::/64"), secret=SECRET),
        ])
        self.attributes = b""  # what the encoder gives the next decision answered
        ports = dict(registry=registry, dedupe=DuplicateCache(self.settings.dedupe_seconds, self.clock.seconds),
                     metrics=self.metrics, settings=self.settings, clock=self.clock, ready=lambda: self.is_ready)
        if issubclass(protocol_class, AuthProtocol):  # the real entry point over the test's pool
            self.authentication = Authentication(self.clock, self.dispatcher, SimpleNamespace(run=None),
                                                 self.metrics)
            self.sightings = MessageAuthenticatorSightings()
            self.protocol = protocol_class(dispatch=self.authentication.decide, sightings=self.sightings,
                                           encode=lambda decision: self.attributes, **ports)
        else:
            self.protocol = protocol_class(dispatch=self.dispatcher, **ports)
        self.protocol.makeConnection(self.transport)

    def receive(self, data: bytes, addr=NAS1) -> None:
        self.protocol.datagramReceived(data, addr)

    def sample(self, name: str, **labels) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def dropped(self, reason: str, client: str | None = None) -> float:
        """Drops for ``reason``, of one client (a NAS name or ``unknown``) or of all."""
        return sum(sample.value for family in self.metrics.registry.collect() for sample in family.samples
                   if sample.name == "radiusd_dropped_packets_total" and sample.labels["reason"] == reason
                   and client in (None, sample.labels["client"]))

    def dropped_total(self) -> float:
        return sum(sample.value for family in self.metrics.registry.collect()
                   for sample in family.samples if sample.name == "radiusd_dropped_packets_total")

    def decisions(self, reason: str) -> float:
        return self.sample("radiusd_auth_decisions_total", reason=reason)

    def answer(self, index: int, decision, attributes: bytes = b"") -> None:
        """The pool decided request ``index``; the reply carries ``attributes`` as encoded."""
        self.attributes = attributes
        self.dispatcher.pending[index].callback(decision)


# -- packets (built with pyrad, an implementation independent of ours) -----------------------------------------------------------------------------------

def access_request(*, secret=SECRET, message_authenticator=True, identifier=None, user="alice",
                   password="correct-horse", proxy_states=(), **attributes):
    request = pyrad_packet.AuthPacket(code=pyrad_packet.AccessRequest, secret=secret, dict=DICTIONARY,
                                      id=random.randrange(256) if identifier is None else identifier)
    if message_authenticator:
        request.add_message_authenticator()
    request["User-Name"] = user
    if password is not None:
        request["User-Password"] = request.PwCrypt(password)
    return encoded(request, attributes, proxy_states)


def encoded(request, attributes: dict, proxy_states=()):
    """``request`` with ``attributes`` (``_`` for ``-`` in names) and Proxy-States added, its
    bytes in ``request.wire``."""
    for name, value in attributes.items():
        request[name.replace("_", "-")] = value
    for value in proxy_states:
        request.AddAttribute("Proxy-State", value)
    request.wire = request.RequestPacket()
    return request


def status_server(*, secret=SECRET, message_authenticator=True):
    request = pyrad_packet.AuthPacket(code=pyrad_packet.StatusServer, secret=secret, dict=DICTIONARY,
                                      id=random.randrange(256))
    if message_authenticator:
        request.add_message_authenticator()
    request.wire = request.RequestPacket()
    return request


def verified(request, data: bytes):
    """The reply decoded by pyrad after checking both authenticators and the attribute order."""
    reply = request.CreateReply(packet=data)
    assert request.VerifyReply(reply, data, enforce_ma=True), "reply does not verify with pyrad"
    assert reply.verify_message_authenticator(original_authenticator=request.authenticator,
                                              original_code=request.code)
    assert data[20] == Attr.MESSAGE_AUTHENTICATOR, "Message-Authenticator is not the first attribute"
    return reply


def flip(data: bytes, index: int) -> bytes:
    """``data`` with one bit of octet ``index`` changed."""
    return data[:index] + bytes((data[index] ^ 0x01,)) + data[index + 1:]
