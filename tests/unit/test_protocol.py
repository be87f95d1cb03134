"""AuthProtocol in process: the harness of tests/fakes.py (a fake transport, Twisted's Clock, the
real Authentication over a worker pool the test drives).

Every drop of SPEC §3 is counted by reason, never reaches the dispatcher, writes nothing and
leaves the protocol able to answer the next valid request. Replies are verified with pyrad.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import struct
from types import SimpleNamespace

import pytest
from pyrad import packet as pyrad_packet
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from radiusd.decisions import Abandoned, Accept, BackendFailure, Challenge, PushPending, Reason, Reject
from radiusd.packets import Attr, encode_attribute, hide_password
from tests.fakes import (
    LEGACY,
    NAS1,
    OTHER_SECRET,
    SECRET,
    UNKNOWN,
    V6NAS,
    Harness,
    access_request,
    flip,
    status_server,
    verified,
)

DROP_REASONS = ("unknown_client", "malformed", "unknown_code", "missing_message_authenticator",
                "bad_authenticator", "duplicate_in_progress", "overload", "backend_error")


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


@pytest.fixture
def logged_drops():
    """Every drop line the protocol logs."""
    events = []

    def observe(event):
        if event.get("log_namespace") == "radiusd.protocol" and "reason" in event:
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


CLIENTS = {NAS1: "nas1", LEGACY: "legacy", V6NAS: "v6nas"}  # any other source: "unknown"


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
        harness, logged_failures, logged_drops, build, source, reason):
    data = build()
    harness.receive(data, source)

    client = CLIENTS.get(source, "unknown")
    assert harness.dropped(reason, client=client) == 1
    [line] = logged_drops
    assert line["log_level"] == LogLevel.warn
    assert (line["reason"], line["client"], line["source"]) == (reason, client, source[0])
    assert source[0] in formatEvent(line) and reason in formatEvent(line)
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


def test_drop_lines_name_the_nas_or_the_unknown_source_and_the_code_in_freeradius_words(harness, logged_drops):
    harness.receive(access_request(secret=OTHER_SECRET).wire, NAS1)
    harness.receive(access_request().wire, UNKNOWN)
    harness.receive(access_request(message_authenticator=False).wire, NAS1)
    assert [formatEvent(line) for line in logged_drops] == [
        "Received packet from 192.0.2.10 with invalid Message-Authenticator! (Shared secret is incorrect.) "
        "client nas1, Access-Request (bad_authenticator)",
        "Ignoring Access-Request from unknown client 203.0.113.5: no NAS entry covers this address "
        "(unknown_client)",
        "Received Access-Request from client nas1 (192.0.2.10) without Message-Authenticator: the NAS entry "
        "requires one (require_message_authenticator), or the packet carries Proxy-State or is a Status-Server "
        "(missing_message_authenticator)"]
    assert all(SECRET.decode() not in formatEvent(line) for line in logged_drops)


def test_drop_lines_are_limited_per_source_and_reason_to_one_a_minute_with_the_count_suppressed(
        harness, logged_drops):
    for _ in range(50):
        harness.receive(access_request(secret=OTHER_SECRET).wire, NAS1)
        harness.clock.advance(1)
    harness.receive(access_request(message_authenticator=False).wire, NAS1)  # another reason: its own line
    harness.receive(access_request(secret=OTHER_SECRET).wire, UNKNOWN)  # another source: its own line
    assert [(line["reason"], line["source"], line["suppressed"]) for line in logged_drops] == [
        ("bad_authenticator", NAS1[0], 0), ("missing_message_authenticator", NAS1[0], 0),
        ("unknown_client", UNKNOWN[0], 0)]
    assert harness.dropped("bad_authenticator", client="nas1") == 50  # every drop is counted

    harness.clock.advance(10)  # a minute after the first line: the next drop is logged with the count
    harness.receive(access_request(secret=OTHER_SECRET).wire, NAS1)
    assert logged_drops[-1]["suppressed"] == 49
    assert formatEvent(logged_drops[-1]).endswith("(49 more like this suppressed since the last)")
    harness.receive(access_request(secret=OTHER_SECRET).wire, NAS1)
    assert len(logged_drops) == 4


def test_abandoned_and_failed_work_is_logged_with_its_nas(harness, logged_drops):
    harness.receive(access_request().wire, NAS1)
    harness.answer(0, BackendFailure(backend="db"))
    assert [(line["reason"], line["client"], line["code"]) for line in logged_drops] == [
        ("backend_error", "nas1", "Access-Request")]
    assert harness.dropped("backend_error", client="nas1") == 1


def test_whether_access_requests_carry_message_authenticator_is_noted_per_nas(harness):
    harness.receive(access_request().wire, NAS1)
    harness.clock.advance(5)
    harness.receive(access_request(message_authenticator=False).wire, LEGACY)
    harness.receive(access_request(message_authenticator=False).wire, NAS1)  # noted, then dropped
    harness.receive(status_server().wire, LEGACY)  # Status-Server always carries one: not noted
    assert harness.sightings.take() == {("nas1", True): 0, ("legacy", False): 5, ("nas1", False): 5}
    assert harness.sightings.take() == {}


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
    bad_port = attribute(Attr.NAS_PORT, b"\x00\x00\x07")  # an Integer is 4 octets
    harness.receive(signed(attributes=user_attributes() + bad_port + attribute(1, b"\xff\xfe")), NAS1)
    [decoded] = harness.dispatcher.requests
    assert decoded.nas_port is None
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
    assert harness.clock.getDelayedCalls() == []


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


def test_slow_work_stays_in_progress_until_it_ends_then_its_reply_is_cached(harness):
    """No timeout forgets a request whose work still runs: every retransmission meanwhile is a
    duplicate, never new work, and once the work ends the NAS's next retry gets the reply."""
    request = access_request()
    harness.receive(request.wire, NAS1)
    for _ in range(3):
        harness.clock.advance(5)
        harness.receive(request.wire, NAS1)
    assert harness.dropped("duplicate_in_progress") == 3
    assert len(harness.dispatcher.requests) == 1
    harness.answer(0, Accept())
    harness.receive(request.wire, NAS1)
    first, resent = (data for data, _ in harness.transport.written)
    assert first == resent
    assert verified(request, first).code == pyrad_packet.AccessAccept
    assert len(harness.dispatcher.requests) == 1


@pytest.mark.parametrize("why", ["overload", "expired", "late"])
def test_abandoned_work_is_dropped_as_overload_and_a_retransmission_is_new_work(harness, why):
    request = access_request()
    harness.receive(request.wire, NAS1)
    harness.answer(0, Abandoned(why))
    harness.clock.advance(30)
    assert harness.transport.written == []
    assert harness.dropped("overload") == 1
    assert harness.decisions("backend_error") == 0
    assert sum(sample.value for family in harness.metrics.registry.collect() for sample in family.samples
               if sample.name == "radiusd_auth_decisions_total") == 0
    harness.receive(request.wire, NAS1)
    assert len(harness.dispatcher.requests) == 2
    assert harness.dropped("duplicate_in_progress") == 0


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


# -- a held push ---------------------------------------------------------------------------------------

def test_the_protocol_holds_a_push_and_answers_status_server_meanwhile():
    harness = Harness(reject_delay_seconds=0)
    phone = SimpleNamespace(decision=None)
    harness.authentication.pipeline = SimpleNamespace(run=None, resume=lambda request, pending: phone.decision)
    login = access_request()
    harness.receive(login.wire, NAS1)
    harness.answer(0, PushPending("p1", 0.0, None))
    harness.clock.advance(10)  # far past the request budget: still held, no reply
    assert harness.transport.written == []
    probe = status_server()
    harness.receive(probe.wire, NAS1)  # answered at once while the push is held
    assert verified(probe, harness.transport.written[0][0]).code == 2
    harness.receive(login.wire, NAS1)  # the NAS retransmits: a duplicate in progress, no second dispatch
    assert harness.dropped("duplicate_in_progress") == 1 and len(harness.dispatcher.requests) == 1
    phone.decision = Accept()
    harness.clock.advance(0.25)
    assert len(harness.transport.written) == 2
    assert verified(login, harness.transport.written[1][0]).code == 2  # Access-Accept
    assert harness.decisions("ok") == 1 and harness.sample("radiusd_requests_in_progress") == 0
