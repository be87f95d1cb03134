"""AuthProtocol in process: a fake transport, Twisted's Clock, and a dispatcher the test drives.

Every drop of SPEC §3 is counted by reason, never reaches the dispatcher, writes nothing and
leaves the protocol able to answer the next valid request. Replies are verified with pyrad.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import struct

import pytest
from pyrad import packet as pyrad_packet
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from radiusd.clients import NasRegistry
from radiusd.config import ServerSection
from radiusd.decisions import Accept, BackendFailure, Challenge, Reason, Reject
from radiusd.dedupe import DuplicateCache
from radiusd.metrics import Metrics
from radiusd.model import Nas
from radiusd.packets import Attr, encode_attribute, hide_password
from radiusd.protocol import AuthProtocol, Outcome
from tests.support import DICTIONARY

SECRET = b"protocol-secret-0123"
OTHER_SECRET = b"some-other-secret-456"
NAS1 = ("192.0.2.10", 40000)          # requires Message-Authenticator
LEGACY = ("198.51.100.7", 40001)      # in a /24 that does not require it
V6NAS = ("2001:db8:1::5", 40002, 0, 0)
UNKNOWN = ("203.0.113.5", 40003)
DROP_REASONS = ("unknown_client", "malformed", "unknown_code", "missing_message_authenticator",
                "bad_authenticator", "duplicate_in_progress", "overload", "backend_error")


# -- harness -----------------------------------------------------------------------------------

class FakeTransport:
    def __init__(self):
        self.written: list[tuple[bytes, tuple]] = []
        self.reading = True

    def write(self, data, addr):
        self.written.append((data, addr))

    def stopReading(self):
        self.reading = False


class Dispatcher:
    """Records every request and hands back a Deferred the test fires."""

    def __init__(self):
        self.requests = []
        self.pending: list[Deferred] = []

    def __call__(self, request):
        self.requests.append(request)
        done = Deferred()
        self.pending.append(done)
        return done


class Harness:
    """A protocol (the auth port's unless ``protocol_class`` says otherwise) over a fake transport."""

    def __init__(self, protocol_class=AuthProtocol, **settings):
        values = dict(dedupe_seconds=10, reject_delay_seconds=1.0, max_pending_requests=100,
                      plugin_timeout_seconds=5, on_backend_error="drop")
        values.update(settings)
        self.settings = ServerSection(**values)
        self.clock = Clock()
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
        self.protocol = protocol_class(
            registry=registry, dedupe=DuplicateCache(self.settings.dedupe_seconds, self.clock.seconds),
            metrics=self.metrics, settings=self.settings, clock=self.clock, dispatch=self.dispatcher,
            ready=lambda: self.is_ready)
        self.protocol.makeConnection(self.transport)

    def receive(self, data: bytes, addr=NAS1) -> None:
        self.protocol.datagramReceived(data, addr)

    def sample(self, name: str, **labels) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def dropped(self, reason: str) -> float:
        return self.sample("radiusd_dropped_packets_total", reason=reason)

    def dropped_total(self) -> float:
        return sum(sample.value for family in self.metrics.registry.collect()
                   for sample in family.samples if sample.name == "radiusd_dropped_packets_total")

    def decisions(self, reason: str) -> float:
        return self.sample("radiusd_auth_decisions_total", reason=reason)

    def answer(self, index: int, decision, attributes: bytes = b"") -> None:
        self.dispatcher.pending[index].callback(Outcome(decision, attributes))


@pytest.fixture
def harness():
    return Harness()


@pytest.fixture
def logged_failures():
    """Every logged event that carries a traceback (an unexpected error in the protocol)."""
    events = []

    def observe(event):
        if "log_failure" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


# -- packets -----------------------------------------------------------------------------------

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


def attribute(number: int, value: bytes) -> bytes:
    return bytes((number, len(value) + 2)) + value


def raw(code=1, identifier=1, attributes=b"", length=None, authenticator=bytes(range(16))) -> bytes:
    length = 20 + len(attributes) if length is None else length
    return struct.pack("!BBH", code, identifier, length) + authenticator + attributes


def signed(code=1, attributes=b"", secret=SECRET, identifier=9, authenticator=bytes(range(32, 48))) -> bytes:
    """Message-Authenticator first, computed here (RFC 3579 §3.2), then ``attributes``."""
    unsigned = raw(code, identifier, attribute(80, bytes(16)) + attributes, authenticator=authenticator)
    return unsigned[:22] + hmac.new(secret, unsigned, hashlib.md5).digest() + unsigned[38:]


def user_attributes() -> bytes:
    authenticator = bytes(range(32, 48))
    return attribute(1, b"alice") + attribute(2, hide_password(b"correct-horse", SECRET, authenticator))


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes((data[index] ^ 0x01,)) + data[index + 1:]


def with_length(data: bytes, length: int) -> bytes:
    return data[:2] + struct.pack("!H", length) + data[4:]


def garbage() -> bytes:
    data = random.Random(20240611).randbytes(300)
    assert struct.unpack_from("!H", data, 2)[0] > 300  # its Length field lies
    return data


# (case, build, source, reason); build returns the datagram
DROPS = [
    # 1. unknown client, before anything else
    ("valid request from an unknown address", lambda: access_request().wire, UNKNOWN, "unknown_client"),
    ("valid request from the neighbour of a /32 NAS", lambda: access_request().wire, ("192.0.2.11", 1812),
     "unknown_client"),
    ("valid request from an unknown IPv6 address", lambda: access_request().wire,
     ("2001:db8:ffff::1", 1812, 0, 0), "unknown_client"),
    ("IPv4-mapped IPv6 form of an unknown address", lambda: access_request().wire,
     ("::ffff:203.0.113.5", 1812, 0, 0), "unknown_client"),
    ("garbage from an unknown address", garbage, UNKNOWN, "unknown_client"),
    ("unparseable source address", lambda: access_request().wire, ("not-an-ip", 1812), "unknown_client"),
    # 2. structure
    ("empty datagram", lambda: b"", NAS1, "malformed"),
    ("one octet", lambda: b"\x01", NAS1, "malformed"),
    ("19 octets", lambda: access_request().wire[:19], NAS1, "malformed"),
    ("Length field 19", lambda: with_length(access_request().wire, 19), NAS1, "malformed"),
    ("Length field 0", lambda: with_length(access_request().wire, 0), NAS1, "malformed"),
    ("Length field 4097 with 4097 octets received",
     lambda: raw(attributes=attribute(18, b"x" * 250) * 16 + attribute(18, b"x" * 43)), NAS1, "malformed"),
    ("huge 65000-octet datagram", lambda: raw(attributes=attribute(18, b"x" * 253) * 254
                                              + attribute(18, b"x" * 208)), NAS1, "malformed"),
    ("Length larger than the octets received",
     lambda: with_length(access_request().wire, len(access_request().wire) + 1), NAS1, "malformed"),
    ("attribute type 0", lambda: signed(attributes=attribute(0, b"zero")), NAS1, "malformed"),
    ("attribute length 0", lambda: signed(attributes=b"\x01\x00alice"), NAS1, "malformed"),
    ("attribute length 1", lambda: signed(attributes=b"\x01\x01alice"), NAS1, "malformed"),
    ("attribute overflowing the packet", lambda: signed(attributes=b"\x01\x20alice"), NAS1, "malformed"),
    ("one stray octet after the attributes", lambda: signed(attributes=attribute(1, b"alice") + b"\x01"),
     NAS1, "malformed"),
    ("two Message-Authenticators", lambda: signed(attributes=attribute(80, bytes(16))), NAS1, "malformed"),
    ("Message-Authenticator of length 17", lambda: raw(attributes=attribute(80, bytes(15))), NAS1, "malformed"),
    ("Message-Authenticator of length 19", lambda: raw(attributes=attribute(80, bytes(17))), NAS1, "malformed"),
    ("201 attributes", lambda: signed(attributes=attribute(18, b"m") * 200), NAS1, "malformed"),
    ("random garbage", garbage, NAS1, "malformed"),
    ("malformed response code: structure checked first",
     lambda: raw(code=2, attributes=attribute(0, b"x")), NAS1, "malformed"),
    # 3. code not expected on the auth port (checked before the Message-Authenticator)
    ("Access-Accept", lambda: signed(code=2), NAS1, "unknown_code"),
    ("Access-Reject", lambda: signed(code=3), NAS1, "unknown_code"),
    ("Accounting-Request", lambda: signed(code=4), NAS1, "unknown_code"),
    ("Accounting-Response", lambda: signed(code=5), NAS1, "unknown_code"),
    ("Access-Challenge", lambda: signed(code=11), NAS1, "unknown_code"),
    ("Disconnect-Request", lambda: signed(code=40), NAS1, "unknown_code"),
    ("Disconnect-ACK", lambda: signed(code=41), NAS1, "unknown_code"),
    ("Disconnect-NAK", lambda: signed(code=42), NAS1, "unknown_code"),
    ("CoA-Request", lambda: signed(code=43), NAS1, "unknown_code"),
    ("code 0", lambda: signed(code=0), NAS1, "unknown_code"),
    ("code 255", lambda: signed(code=255), NAS1, "unknown_code"),
    ("Accounting-Request without Message-Authenticator", lambda: raw(code=4), NAS1, "unknown_code"),
    # 4. Message-Authenticator policy
    ("Access-Request without Message-Authenticator where required",
     lambda: access_request(message_authenticator=False).wire, NAS1, "missing_message_authenticator"),
    ("IPv6 NAS without Message-Authenticator (the default requires it)",
     lambda: access_request(message_authenticator=False).wire, V6NAS, "missing_message_authenticator"),
    ("Proxy-State without Message-Authenticator where not required",
     lambda: access_request(message_authenticator=False, proxy_states=[b"p"]).wire, LEGACY,
     "missing_message_authenticator"),
    ("Status-Server without Message-Authenticator where not required",
     lambda: status_server(message_authenticator=False).wire, LEGACY, "missing_message_authenticator"),
    ("Status-Server without Message-Authenticator", lambda: status_server(message_authenticator=False).wire,
     NAS1, "missing_message_authenticator"),
    ("wrong Message-Authenticator", lambda: flip(access_request().wire, 25), NAS1, "bad_authenticator"),
    ("Message-Authenticator signed with another secret", lambda: access_request(secret=OTHER_SECRET).wire,
     NAS1, "bad_authenticator"),
    ("all-zero Message-Authenticator", lambda: raw(attributes=attribute(80, bytes(16)) + user_attributes()),
     NAS1, "bad_authenticator"),
    ("attribute changed after signing", lambda: flip(signed(attributes=user_attributes()), 40), NAS1,
     "bad_authenticator"),
    ("Request Authenticator changed after signing", lambda: flip(signed(attributes=user_attributes()), 4),
     NAS1, "bad_authenticator"),
    ("wrong Message-Authenticator where not required", lambda: flip(access_request().wire, 30), LEGACY,
     "bad_authenticator"),
    ("Status-Server with a wrong Message-Authenticator", lambda: flip(status_server().wire, 22), NAS1,
     "bad_authenticator"),
    ("Status-Server signed with another secret", lambda: status_server(secret=OTHER_SECRET).wire, NAS1,
     "bad_authenticator"),
]


@pytest.mark.parametrize("build,source,reason", [case[1:] for case in DROPS], ids=[case[0] for case in DROPS])
def test_invalid_datagram_is_dropped_counted_never_dispatched_and_the_next_request_is_answered(
        harness, logged_failures, build, source, reason):
    data = build()
    harness.receive(data, source)

    assert harness.dropped(reason) == 1
    assert harness.dropped_total() == 1
    assert harness.dispatcher.requests == []
    assert harness.transport.written == []
    assert harness.sample("radiusd_access_requests_total", client="nas1") == 0
    assert logged_failures == [], "the datagram raised inside the protocol"

    request = access_request()
    harness.receive(request.wire, NAS1)
    assert [r.user_name for r in harness.dispatcher.requests] == ["alice"]
    harness.answer(0, Accept())
    [(reply, addr)] = harness.transport.written
    assert addr == NAS1
    assert verified(request, reply).code == pyrad_packet.AccessAccept
    assert harness.dropped_total() == 1


def test_drop_table_covers_every_reason_and_at_least_thirty_packets():
    assert len(DROPS) >= 30
    assert {case[3] for case in DROPS} == set(DROP_REASONS) - {"duplicate_in_progress", "overload",
                                                                "backend_error"}


# -- valid variants reach the dispatcher -------------------------------------------------------

def test_ipv4_mapped_ipv6_source_of_a_known_nas_is_accepted_and_answered_at_that_address(harness):
    request = access_request()
    mapped = ("::ffff:192.0.2.10", 40000, 0, 0)
    harness.receive(request.wire, mapped)
    [decoded] = harness.dispatcher.requests
    assert decoded.nas == "nas1"
    assert decoded.source == ("192.0.2.10", 40000)
    harness.answer(0, Accept())
    [(reply, addr)] = harness.transport.written
    assert addr == mapped
    verified(request, reply)
    assert harness.dropped_total() == 0


def test_ipv6_nas_inside_its_network_is_accepted(harness):
    request = access_request()
    harness.receive(request.wire, V6NAS)
    assert [r.nas for r in harness.dispatcher.requests] == ["v6nas"]


def test_trailing_padding_after_length_is_ignored(harness):
    request = access_request()
    harness.receive(request.wire + bytes(64), NAS1)
    [decoded] = harness.dispatcher.requests
    assert decoded.password == b"correct-horse"
    harness.answer(0, Accept())
    verified(request, harness.transport.written[0][0])


def test_two_hundred_attributes_are_accepted(harness):
    harness.receive(signed(attributes=user_attributes() + attribute(25, b"c") * 197), NAS1)
    assert len(harness.dispatcher.requests) == 1


def test_request_without_message_authenticator_is_accepted_where_not_required(harness):
    request = access_request(message_authenticator=False)
    harness.receive(request.wire, LEGACY)
    [decoded] = harness.dispatcher.requests
    assert (decoded.nas, decoded.user_name, decoded.password) == ("legacy", "alice", b"correct-horse")
    harness.answer(0, Accept())
    reply = harness.transport.written[0][0]
    assert verified(request, reply).code == pyrad_packet.AccessAccept


def test_proxy_state_with_message_authenticator_is_accepted_and_echoed_in_order(harness):
    request = access_request(proxy_states=[b"proxy-one", b"proxy-two"])
    harness.receive(request.wire, LEGACY)
    harness.answer(0, Accept())
    reply = verified(request, harness.transport.written[0][0])
    assert reply["Proxy-State"] == [b"proxy-one", b"proxy-two"]


def test_attribute_with_an_invalid_value_is_ignored_not_fatal(harness):
    bad_address = attribute(Attr.NAS_IP_ADDRESS, b"\x0a\x00\x00")
    harness.receive(signed(attributes=user_attributes() + bad_address + attribute(1, b"\xff\xfe")), NAS1)
    [decoded] = harness.dispatcher.requests
    assert decoded.nas_ip_address is None
    assert decoded.user_name == "alice"  # the first User-Name is the valid one
    assert harness.dropped_total() == 0


# -- replies -----------------------------------------------------------------------------------

def test_accept_is_sent_at_once_with_the_outcome_attributes(harness):
    request = access_request(proxy_states=[b"ps"])
    harness.receive(request.wire, NAS1)
    harness.answer(0, Accept(), encode_attribute(Attr.FRAMED_IP_ADDRESS, bytes((10, 9, 8, 7))))
    [(data, _)] = harness.transport.written
    reply = verified(request, data)
    assert reply.code == pyrad_packet.AccessAccept
    assert reply["Framed-IP-Address"] == ["10.9.8.7"]
    assert reply["Proxy-State"] == [b"ps"]
    assert harness.sample("radiusd_access_responses_total", client="nas1", code="accept") == 1
    assert harness.sample("radiusd_access_requests_total", client="nas1") == 1
    assert harness.decisions("ok") == 1
    assert harness.clock.getDelayedCalls() == []  # the plugin timeout was cancelled


def test_challenge_is_sent_at_once_as_access_challenge(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.answer(0, Challenge(state=b"s" * 16, prompt="Code?", factor="totp"),
                   encode_attribute(Attr.STATE, b"s" * 16))
    reply = verified(request, harness.transport.written[0][0])
    assert reply.code == pyrad_packet.AccessChallenge
    assert reply["State"] == [b"s" * 16]


def test_reject_leaves_only_after_the_reject_delay(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.answer(0, Reject(Reason.BAD_PASSWORD), encode_attribute(Attr.REPLY_MESSAGE, b"leak"))
    assert harness.transport.written == []
    harness.clock.advance(0.99)
    assert harness.transport.written == []
    harness.clock.advance(0.02)
    [(data, _)] = harness.transport.written
    reply = verified(request, data)
    assert reply.code == pyrad_packet.AccessReject
    assert list(reply.keys()) == ["Message-Authenticator"]  # a Reject carries nothing else
    assert harness.decisions("bad_password") == 1
    assert harness.sample("radiusd_access_responses_total", client="nas1", code="reject") == 1


def test_reject_delay_counts_from_receipt_not_from_the_decision(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.clock.advance(0.4)
    harness.answer(0, Reject(Reason.UNKNOWN_USER))
    harness.clock.advance(0.59)
    assert harness.transport.written == []
    harness.clock.advance(0.02)
    assert len(harness.transport.written) == 1


def test_reject_decided_after_the_delay_is_sent_at_once(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.clock.advance(1.5)
    harness.answer(0, Reject(Reason.BAD_PASSWORD))
    assert verified(request, harness.transport.written[0][0]).code == pyrad_packet.AccessReject


def test_zero_reject_delay_sends_the_reject_at_once():
    harness = Harness(reject_delay_seconds=0)
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.answer(0, Reject(Reason.DISABLED))
    assert len(harness.transport.written) == 1


# -- duplicates (RFC 5080) ---------------------------------------------------------------------

def test_retransmission_while_in_progress_is_dropped_and_dispatched_once(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.receive(request.wire, NAS1)
    harness.receive(request.wire, NAS1)
    assert len(harness.dispatcher.requests) == 1
    assert harness.dropped("duplicate_in_progress") == 2
    harness.answer(0, Accept())
    assert len(harness.transport.written) == 1


def test_retransmission_during_the_reject_delay_is_still_in_progress(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.answer(0, Reject(Reason.BAD_PASSWORD))
    harness.receive(request.wire, NAS1)
    assert harness.dropped("duplicate_in_progress") == 1
    harness.clock.advance(1)
    assert len(harness.transport.written) == 1
    assert len(harness.dispatcher.requests) == 1


def test_retransmission_after_the_reply_gets_the_identical_cached_bytes_without_dispatch(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.answer(0, Accept(), encode_attribute(Attr.SESSION_TIMEOUT, struct.pack("!I", 60)))
    harness.clock.advance(3)
    harness.receive(request.wire, NAS1)
    harness.receive(request.wire, NAS1)
    first, second, third = (data for data, _ in harness.transport.written)
    assert first == second == third
    assert len(harness.dispatcher.requests) == 1
    assert harness.sample("radiusd_duplicate_requests_total", client="nas1") == 2
    assert harness.sample("radiusd_access_requests_total", client="nas1") == 1
    assert harness.decisions("ok") == 1


def test_retransmitted_reject_is_resent_from_the_cache(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.answer(0, Reject(Reason.BAD_PASSWORD))
    harness.clock.advance(1)
    harness.receive(request.wire, NAS1)
    assert [data for data, _ in harness.transport.written][0] == harness.transport.written[1][0]
    assert harness.decisions("bad_password") == 1


def test_cached_reply_expires_after_dedupe_seconds(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.answer(0, Accept())
    harness.clock.advance(9.9)
    harness.receive(request.wire, NAS1)
    assert len(harness.dispatcher.requests) == 1
    harness.clock.advance(0.2)
    harness.receive(request.wire, NAS1)
    assert len(harness.dispatcher.requests) == 2
    assert harness.sample("radiusd_duplicate_requests_total", client="nas1") == 1
    assert len(harness.transport.written) == 2


def test_same_identifier_with_a_new_authenticator_is_a_new_request(harness):
    first = access_request(identifier=77)
    second = access_request(identifier=77)
    assert first.authenticator != second.authenticator
    harness.receive(first.wire, NAS1)
    harness.receive(second.wire, NAS1)
    assert len(harness.dispatcher.requests) == 2
    assert harness.dropped_total() == 0


def test_same_bytes_from_another_source_port_is_a_new_request(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.receive(request.wire, (NAS1[0], NAS1[1] + 1))
    assert len(harness.dispatcher.requests) == 2


# -- backpressure, failures, timeouts ----------------------------------------------------------

def test_requests_beyond_max_pending_are_dropped_as_overload():
    harness = Harness(max_pending_requests=2)
    requests = [access_request(identifier=n) for n in range(4)]
    harness.receive(requests[0].wire, NAS1)
    harness.receive(requests[1].wire, NAS1)
    harness.receive(requests[2].wire, NAS1)
    assert len(harness.dispatcher.requests) == 2
    assert harness.dropped("overload") == 1
    assert harness.sample("radiusd_requests_in_progress") == 2
    harness.answer(0, Accept())
    harness.receive(requests[3].wire, NAS1)
    assert len(harness.dispatcher.requests) == 3
    assert harness.sample("radiusd_requests_in_progress") == 2


@pytest.mark.parametrize("fail", ["errback", "backend_failure"])
def test_failed_dispatch_is_dropped_by_default_and_never_accepted(harness, fail):
    request = access_request()
    harness.receive(request.wire, NAS1)
    if fail == "errback":
        harness.dispatcher.pending[0].errback(RuntimeError("plugin exploded"))
    else:
        harness.answer(0, BackendFailure("db", "OperationalError"))
    harness.clock.advance(30)
    assert harness.transport.written == []
    assert harness.dropped("backend_error") == 1
    assert harness.decisions("backend_error") == 1
    assert harness.sample("radiusd_backend_errors_total", backend="plugin" if fail == "errback" else "db") == 1
    assert harness.sample("radiusd_requests_in_progress") == 0
    harness.receive(request.wire, NAS1)  # not cached: the NAS's retry is processed afresh
    assert len(harness.dispatcher.requests) == 2
    assert harness.dropped("duplicate_in_progress") == 0


def test_database_error_from_dispatch_is_counted_as_a_db_backend_error(harness):
    from sqlalchemy.exc import OperationalError

    harness.receive(access_request().wire, NAS1)
    harness.dispatcher.pending[0].errback(OperationalError("SELECT 1", {}, Exception("gone")))
    assert harness.sample("radiusd_backend_errors_total", backend="db") == 1
    assert harness.transport.written == []


@pytest.mark.parametrize("fail", ["errback", "backend_failure"])
def test_failed_dispatch_gets_a_delayed_reject_when_configured(fail):
    harness = Harness(on_backend_error="reject")
    request = access_request()
    harness.receive(request.wire, NAS1)
    if fail == "errback":
        harness.dispatcher.pending[0].errback(RuntimeError("plugin exploded"))
    else:
        harness.answer(0, BackendFailure("ldap"))
    assert harness.transport.written == []
    harness.clock.advance(1)
    [(data, _)] = harness.transport.written
    reply = verified(request, data)
    assert reply.code == pyrad_packet.AccessReject
    assert list(reply.keys()) == ["Message-Authenticator"]
    assert harness.decisions("backend_error") == 1
    assert harness.dropped_total() == 0


def test_dispatch_that_never_answers_times_out_into_a_backend_error_drop(harness):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.clock.advance(4.9)
    assert harness.decisions("backend_error") == 0
    harness.clock.advance(0.2)
    assert harness.decisions("backend_error") == 1
    assert harness.dropped("backend_error") == 1
    assert harness.sample("radiusd_backend_errors_total", backend="plugin") == 1
    assert harness.transport.written == []
    assert harness.dispatcher.pending[0].called  # cancelled
    harness.dispatcher.pending[0].callback(Outcome(Accept()))  # a late answer is ignored
    harness.clock.advance(10)
    assert harness.transport.written == []
    assert harness.sample("radiusd_requests_in_progress") == 0


def test_dispatch_that_never_answers_times_out_into_a_reject_when_configured():
    harness = Harness(on_backend_error="reject", plugin_timeout_seconds=2)
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.clock.advance(1.9)
    assert harness.transport.written == []
    harness.clock.advance(0.2)
    [(data, _)] = harness.transport.written
    assert verified(request, data).code == pyrad_packet.AccessReject
    assert harness.decisions("backend_error") == 1


# -- Status-Server -----------------------------------------------------------------------------

def test_status_server_is_answered_with_access_accept_without_dispatch(harness):
    request = status_server()
    harness.receive(request.wire, NAS1)
    [(data, addr)] = harness.transport.written
    assert addr == NAS1
    reply = verified(request, data)
    assert reply.code == pyrad_packet.AccessAccept
    assert list(reply.keys()) == ["Message-Authenticator"]
    assert harness.dispatcher.requests == []
    assert harness.sample("radiusd_status_server_requests_total", client="nas1") == 1
    assert harness.sample("radiusd_access_requests_total", client="nas1") == 0


def test_status_server_is_answered_from_a_nas_that_does_not_require_message_authenticator(harness):
    request = status_server()
    harness.receive(request.wire, LEGACY)
    assert verified(request, harness.transport.written[0][0]).code == pyrad_packet.AccessAccept


def test_status_server_is_dropped_while_not_ready_and_answered_again_after(harness):
    harness.is_ready = False
    harness.receive(status_server().wire, NAS1)
    assert harness.transport.written == []
    assert harness.dispatcher.requests == []
    assert harness.dropped("backend_error") == 1
    assert harness.sample("radiusd_status_server_requests_total", client="nas1") == 0
    harness.is_ready = True
    request = status_server()
    harness.receive(request.wire, NAS1)
    assert verified(request, harness.transport.written[0][0]).code == pyrad_packet.AccessAccept


def test_status_server_is_answered_while_access_requests_are_in_progress(harness):
    for n in range(5):
        harness.receive(access_request(identifier=n).wire, NAS1)
    request = status_server()
    harness.receive(request.wire, NAS1)
    assert len(harness.transport.written) == 1
    verified(request, harness.transport.written[0][0])


# -- shutdown ----------------------------------------------------------------------------------

def test_drain_stops_reading_and_fires_when_requests_in_progress_are_answered(harness):
    harness.receive(access_request().wire, NAS1)
    drained = harness.protocol.drain()
    assert harness.transport.reading is False
    assert not drained.called
    harness.answer(0, Accept())
    assert drained.called
    assert len(harness.transport.written) == 1
