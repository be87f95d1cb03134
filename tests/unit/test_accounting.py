"""The accounting port and the Disconnect client in process: fake transports, Twisted's Clock.

AccountingProtocol shares the auth port's validation (``RadiusProtocol``): every drop is counted
by reason and never reaches the dispatcher; a request is answered only once the dispatcher has
recorded it, from the duplicate cache afterwards. Packets are built and replies verified with
pyrad. The Disconnect exchange is checked against pyrad's RFC 5176 implementation.
"""

from __future__ import annotations

import random
import socket
import threading

import pytest
from pyrad import packet as pyrad_packet
from twisted.internet.task import Clock

from radiusd.accounting import decode_accounting_request
from radiusd.config import AccountingSection
from radiusd.disconnect import DisconnectExchange, DisconnectTarget, _ExchangeProtocol, disconnect_blocking
from radiusd.packets import parse_frame
from radiusd.protocol import AccountingProtocol
from tests.support import DICTIONARY
from tests.fakes import (
    LEGACY,
    NAS1,
    OTHER_SECRET,
    SECRET,
    UNKNOWN,
    FakeTransport,
    access_request,
    encoded,
    flip,
    status_server,
)
from tests.fakes import Harness as ProtocolHarness


class Harness(ProtocolHarness):
    """The auth port's test harness (the same NAS entries) around the accounting port."""

    def __init__(self, **settings):
        super().__init__(AccountingProtocol, **settings)

    def recorded(self, index: int = -1) -> None:
        """The dispatcher committed request ``index``: it hands the request back."""
        self.dispatcher.pending[index].callback(self.dispatcher.requests[index])


@pytest.fixture
def harness():
    return Harness()


def accounting_request(status="Start", *, secret=SECRET, session="S-1", message_authenticator=False,
                       proxy_states=(), identifier=None, **attributes) -> pyrad_packet.AcctPacket:
    request = pyrad_packet.AcctPacket(code=pyrad_packet.AccountingRequest, secret=secret, dict=DICTIONARY,
                                      id=random.randrange(256) if identifier is None else identifier)
    if message_authenticator:
        request.add_message_authenticator()
    if status is not None:
        request["Acct-Status-Type"] = status
    if session is not None:
        request["Acct-Session-Id"] = session
    return encoded(request, attributes, proxy_states)


def verified(request, data: bytes):
    """The Accounting-Response decoded by pyrad after checking both authenticators."""
    reply = request.CreateReply(packet=data)
    assert reply.code == pyrad_packet.AccountingResponse
    assert request.VerifyReply(reply, data, enforce_ma=True), "reply does not verify with pyrad"
    assert reply.verify_message_authenticator(original_authenticator=request.authenticator,
                                              original_code=request.code)
    assert data[20] == 80, "Message-Authenticator is not the first attribute"
    return reply


# -- drops: the auth port's validation, with the accounting port's authenticator policy ----------

DROPS = [
    ("unknown source", lambda: accounting_request().wire, UNKNOWN, "unknown_client"),
    ("truncated", lambda: accounting_request().wire[:19], NAS1, "malformed"),
    ("Length beyond the datagram", lambda: accounting_request().wire[:-1], NAS1, "malformed"),
    ("Access-Request on the accounting port", lambda: access_request(secret=SECRET).wire, NAS1, "unknown_code"),
    ("Disconnect-Request", lambda: bytes((40,)) + accounting_request().wire[1:], NAS1, "unknown_code"),
    ("Request Authenticator of another secret", lambda: accounting_request(secret=OTHER_SECRET).wire, NAS1,
     "bad_authenticator"),
    ("attribute changed after signing", lambda: flip(accounting_request(User_Name="alice").wire, 30), NAS1,
     "bad_authenticator"),
    ("random Request Authenticator", lambda: flip(accounting_request().wire, 5), LEGACY, "bad_authenticator"),
    ("Message-Authenticator of another secret",
     lambda: _resign(accounting_request(secret=OTHER_SECRET, message_authenticator=True).wire), NAS1,
     "bad_authenticator"),
    ("Status-Server without Message-Authenticator", lambda: status_server(message_authenticator=False).wire,
     LEGACY, "missing_message_authenticator"),
    ("Status-Server with a wrong Message-Authenticator", lambda: flip(status_server().wire, 25), NAS1,
     "bad_authenticator"),
    ("no Acct-Status-Type", lambda: accounting_request(status=None).wire, NAS1, "malformed"),
    ("Start without Acct-Session-Id", lambda: accounting_request(session=None).wire, NAS1, "malformed"),
    ("Interim-Update without Acct-Session-Id", lambda: accounting_request("Interim-Update", session=None).wire,
     NAS1, "malformed"),
]


def _resign(wire: bytes) -> bytes:
    """A packet whose Request Authenticator is right for SECRET but whose Message-Authenticator
    was computed with another secret."""
    import hashlib

    return wire[:4] + hashlib.md5(wire[:4] + bytes(16) + wire[20:] + SECRET).digest() + wire[20:]


@pytest.mark.parametrize("build,source,reason", [case[1:] for case in DROPS], ids=[case[0] for case in DROPS])
def test_invalid_accounting_datagram_is_dropped_counted_and_never_dispatched(harness, build, source, reason):
    harness.receive(build(), source)
    assert harness.dropped(reason) == 1
    assert harness.dispatcher.requests == []
    assert harness.transport.written == []

    request = accounting_request()
    harness.receive(request.wire)
    harness.recorded()
    assert verified(request, harness.transport.written[-1][0])


def test_accounting_request_is_answered_only_after_it_is_recorded(harness):
    request = accounting_request("Start", User_Name="alice", Framed_IP_Address="10.1.2.3", NAS_Port=7,
                                 Calling_Station_Id="02-00-00-00-00-01")
    harness.receive(request.wire)
    [decoded] = harness.dispatcher.requests
    assert (decoded.nas, decoded.source, decoded.status_type, decoded.session_id) == ("nas1", NAS1[0], "start", "S-1")
    assert (decoded.user_name, decoded.framed_ip_address, decoded.nas_port) == ("alice", "10.1.2.3", 7)
    assert decoded.calling_station_id == "02-00-00-00-00-01"
    assert harness.transport.written == []  # not recorded yet

    harness.recorded()
    [(reply, addr)] = harness.transport.written
    assert addr == NAS1
    verified(request, reply)
    assert harness.sample("radiusd_accounting_requests_total", client="nas1", status_type="start") == 1


def test_message_authenticator_is_optional_on_accounting_requests_even_where_required_for_access(harness):
    plain = accounting_request()
    signed = accounting_request(message_authenticator=True, session="S-2")
    for request in (plain, signed):
        harness.receive(request.wire, NAS1)
        harness.recorded()
        verified(request, harness.transport.written[-1][0])
    assert len(harness.dispatcher.requests) == 2


def test_proxy_states_are_copied_in_order(harness):
    request = accounting_request(proxy_states=[b"first", b"second"])
    harness.receive(request.wire)
    harness.recorded()
    reply = verified(request, harness.transport.written[0][0])
    assert reply["Proxy-State"] == [b"first", b"second"]


def test_retransmission_is_dropped_while_recording_and_answered_from_the_cache_after(harness):
    request = accounting_request("Interim-Update")
    harness.receive(request.wire)
    harness.receive(request.wire)
    assert harness.dropped("duplicate_in_progress") == 1
    harness.recorded()
    harness.receive(request.wire)
    assert len(harness.dispatcher.requests) == 1
    first, again = [data for data, _ in harness.transport.written]
    assert first == again
    assert harness.sample("radiusd_duplicate_requests_total", client="nas1") == 1
    assert harness.sample("radiusd_accounting_requests_total", client="nas1", status_type="interim_update") == 1


def test_request_that_cannot_be_recorded_gets_no_reply_and_its_retransmission_is_tried_again(harness):
    request = accounting_request("Stop")
    harness.receive(request.wire)
    from sqlalchemy.exc import OperationalError

    harness.dispatcher.pending[0].errback(OperationalError("INSERT", {}, Exception("database is locked")))
    assert harness.transport.written == []
    assert harness.dropped("backend_error") == 1
    assert harness.sample("radiusd_backend_errors_total", backend="db") == 1
    assert harness.sample("radiusd_accounting_requests_total", client="nas1", status_type="stop") == 0

    harness.receive(request.wire)
    assert len(harness.dispatcher.requests) == 2
    harness.recorded()
    verified(request, harness.transport.written[0][0])


def test_slow_recording_stays_in_progress_and_its_response_answers_the_retransmission(harness):
    request = accounting_request()
    harness.receive(request.wire)
    harness.clock.advance(30)
    harness.receive(request.wire)  # the NAS retries while the database is slow: not recorded twice
    assert harness.dropped("duplicate_in_progress") == 1
    assert harness.transport.written == [] and len(harness.dispatcher.requests) == 1
    harness.recorded()
    harness.receive(request.wire)
    first, resent = (data for data, _ in harness.transport.written)
    assert first == resent
    verified(request, first)


def test_requests_beyond_max_pending_are_dropped_as_overload():
    harness = Harness(max_pending_requests=2)
    for number in range(3):
        harness.receive(accounting_request(session=f"S-{number}").wire)
    assert len(harness.dispatcher.requests) == 2
    assert harness.dropped("overload") == 1


def test_status_server_gets_an_accounting_response_without_dispatch(harness):
    request = status_server()
    harness.receive(request.wire, LEGACY)
    [(reply, _)] = harness.transport.written
    verified(request, reply)
    assert harness.dispatcher.requests == []
    assert harness.sample("radiusd_status_server_requests_total", client="legacy") == 1

    harness.is_ready = False
    harness.receive(status_server().wire, LEGACY)
    assert harness.dropped("backend_error") == 1


def test_other_status_types_are_acknowledged_but_not_counted(harness):
    request = accounting_request("Interim-Update")
    request["Acct-Status-Type"] = 9  # Tunnel-Start (RFC 2867)
    request.wire = request.RequestPacket()
    harness.receive(request.wire)
    assert harness.dispatcher.requests[0].status_type == "other"
    harness.recorded()
    verified(request, harness.transport.written[0][0])
    assert sum(sample.value for family in harness.metrics.registry.collect() for sample in family.samples
               if sample.name == "radiusd_accounting_requests_total") == 0


def test_drain_waits_for_requests_being_recorded(harness):
    harness.receive(accounting_request().wire)
    drained = harness.protocol.drain()
    assert not drained.called and not harness.transport.reading
    harness.recorded()
    assert drained.called


# -- decoding ------------------------------------------------------------------------------------

def test_octets_are_combined_with_gigawords_and_causes_are_named():
    request = accounting_request("Stop", Acct_Input_Octets=5, Acct_Input_Gigawords=2, Acct_Output_Octets=7,
                                 Acct_Session_Time=90, Acct_Terminate_Cause="Admin-Reset", Acct_Delay_Time=3,
                                 Acct_Interim_Interval=60)
    decoded = decode_accounting_request(parse_frame(request.wire), "nas1", "192.0.2.10", 1000.0)
    assert decoded.input_octets == 2 * 2 ** 32 + 5
    assert decoded.output_octets == 7
    assert (decoded.session_time, decoded.terminate_cause, decoded.interim_interval) == (90, "Admin-Reset", 60)
    assert decoded.event_time == 997.0


def test_values_invalid_for_their_type_count_as_absent():
    request = accounting_request("Interim-Update")
    wire = request.wire
    bad = bytes((42, 5)) + b"\x00\x01\x02" + bytes((8, 4)) + b"\x0a\x00"  # 3-octet integer, 2-octet address
    import hashlib
    import struct

    body = wire[20:] + bad
    header = struct.pack("!BBH", 4, request.id, 20 + len(body))
    data = header + hashlib.md5(header + bytes(16) + body + SECRET).digest() + body
    decoded = decode_accounting_request(parse_frame(data), "nas1", "192.0.2.10", 0.0)
    assert decoded.input_octets is None and decoded.framed_ip_address is None


# -- Disconnect-Request ------------------------------------------------------------------------------

SETTINGS = AccountingSection(disconnect_timeout_seconds=1.0, disconnect_attempts=3)
NAS_ADDRESS = ("192.0.2.10", 3799)


def target(**changes) -> DisconnectTarget:
    values = dict(session_key=1, session_id="S-1", username="alice", nas="nas1", host=NAS_ADDRESS[0],
                  port=NAS_ADDRESS[1], secret=SECRET, nas_ip_address="192.0.2.10", framed_ip_address="10.1.2.3")
    values.update(changes)
    return DisconnectTarget(**values)


def received_request(wire: bytes, secret: bytes = SECRET) -> pyrad_packet.CoAPacket:
    """The Disconnect-Request as a NAS decodes it with pyrad, both authenticators checked."""
    request = pyrad_packet.CoAPacket(secret=secret, dict=DICTIONARY, packet=wire)
    assert request.code == pyrad_packet.DisconnectRequest
    assert request.VerifyCoARequest(), "Request Authenticator (RFC 5176 §2.3) does not verify"
    assert request.message_authenticator and request.verify_message_authenticator()
    return request


def nas_reply(wire: bytes, *, nak: bool = False, error_cause: int | None = None, secret: bytes = SECRET,
              identifier: int | None = None) -> bytes:
    request = pyrad_packet.CoAPacket(secret=secret, dict=DICTIONARY, packet=wire)
    reply = request.CreateReply()
    if nak:
        reply.code = pyrad_packet.DisconnectNAK
    if error_cause is not None:
        reply["Error-Cause"] = error_cause
    if identifier is not None:
        reply.id = identifier
    reply.add_message_authenticator()
    return reply.ReplyPacket()


def test_disconnect_request_identifies_the_session_and_verifies_with_pyrad():
    exchange = DisconnectExchange(target(), SETTINGS, timestamp=1_700_000_000)
    request = received_request(exchange.wire)
    assert request["User-Name"] == ["alice"]
    assert request["Acct-Session-Id"] == ["S-1"]
    assert request["NAS-IP-Address"] == ["192.0.2.10"]
    assert request["Framed-IP-Address"] == ["10.1.2.3"]
    assert request["Event-Timestamp"] == [1_700_000_000]
    assert exchange.wire[20] == 80  # Message-Authenticator first


def test_nas_identifier_is_sent_when_no_nas_ip_address_is_known():
    request = received_request(DisconnectExchange(target(nas_ip_address=None, nas_identifier="ap-7",
                                                         framed_ip_address=None), SETTINGS).wire)
    assert request["NAS-Identifier"] == ["ap-7"] and "NAS-IP-Address" not in request
    assert "Framed-IP-Address" not in request


def test_ack_and_nak_with_error_cause_are_read_from_verified_replies():
    exchange = DisconnectExchange(target(), SETTINGS)
    exchange.next_wait()
    ack = exchange.reply(nas_reply(exchange.wire), NAS_ADDRESS)
    assert (ack.result, ack.error_cause, ack.attempts) == ("ack", None, 1)
    nak = exchange.reply(nas_reply(exchange.wire, nak=True, error_cause=503), NAS_ADDRESS)
    assert (nak.result, nak.error_cause) == ("nak", "Session-Context-Not-Found")


@pytest.mark.parametrize("case", ["other secret", "other source", "other port", "other identifier", "garbage",
                                  "forged Message-Authenticator"])
def test_replies_that_do_not_verify_are_ignored(case):
    exchange = DisconnectExchange(target(), SETTINGS)
    data, source = nas_reply(exchange.wire), NAS_ADDRESS
    if case == "other secret":
        data = nas_reply(exchange.wire, secret=OTHER_SECRET)
    elif case == "other source":
        source = ("192.0.2.11", 3799)
    elif case == "other port":
        source = ("192.0.2.10", 3800)
    elif case == "other identifier":
        data = nas_reply(exchange.wire, identifier=(exchange.identifier + 1) % 256)
    elif case == "garbage":
        data = b"\x29" + bytes(30)
    else:  # a right Response Authenticator over a wrong Message-Authenticator
        import hashlib

        tampered = bytearray(nas_reply(exchange.wire))
        tampered[25] ^= 1
        tampered[4:20] = hashlib.md5(bytes(tampered[:4]) + exchange.authenticator + bytes(tampered[20:])
                                     + SECRET).digest()
        data = bytes(tampered)
    assert exchange.reply(data, source) is None


def test_retries_back_off_then_time_out():
    clock, transport = Clock(), FakeTransport()
    transport.stopListening = lambda: None
    protocol = _ExchangeProtocol(DisconnectExchange(target(), SETTINGS), clock)
    protocol.makeConnection(transport)
    results = []
    protocol.done.addCallback(results.append)
    sent_at = [0.0]
    for wait in (1.0, 2.0, 4.0):
        clock.advance(wait)
        sent_at.append(clock.seconds())
    assert [addr for _, addr in transport.written] == [NAS_ADDRESS] * 3
    assert len({data for data, _ in transport.written}) == 1  # identical retransmissions
    assert sent_at == [0.0, 1.0, 3.0, 7.0]
    [result] = results
    assert (result.result, result.attempts) == ("timeout", 3)


def test_a_reply_during_the_retries_ends_the_exchange():
    clock, transport = Clock(), FakeTransport()
    transport.stopListening = lambda: None
    exchange = DisconnectExchange(target(), SETTINGS)
    protocol = _ExchangeProtocol(exchange, clock)
    protocol.makeConnection(transport)
    results = []
    protocol.done.addCallback(results.append)
    clock.advance(1.0)
    protocol.datagramReceived(nas_reply(exchange.wire, nak=True, error_cause=504), NAS_ADDRESS)
    clock.advance(100)
    assert len(transport.written) == 2
    assert [(r.result, r.error_cause, r.attempts) for r in results] == [("nak", "Session-Context-Not-Removable", 2)]
    assert not clock.getDelayedCalls()


def test_blocking_client_retries_a_silent_nas_and_reads_an_answering_one():
    settings = AccountingSection(disconnect_timeout_seconds=0.05, disconnect_attempts=3)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    answering = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    answering.bind(("127.0.0.1", 0))
    answering.settimeout(5)

    def answer():
        data, source = answering.recvfrom(4096)
        answering.sendto(nas_reply(data), source)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        results = disconnect_blocking([
            target(session_key=1, host="127.0.0.1", port=silent.getsockname()[1]),
            target(session_key=2, session_id="S-2", host="127.0.0.1", port=answering.getsockname()[1]),
        ], settings)
        silent.settimeout(0)
        received = []
        while True:
            try:
                received.append(silent.recv(4096))
            except BlockingIOError:
                break
    finally:
        silent.close()
        answering.close()
    assert [(r.target.session_key, r.result, r.attempts) for r in results] == [(1, "timeout", 3), (2, "ack", 1)]
    assert len(received) == 3 and len(set(received)) == 1
    received_request(received[0])
