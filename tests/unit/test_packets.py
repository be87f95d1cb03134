"""The wire format at the boundary: framing, authenticators, password hiding, replies, decoding.

Requests are built with pyrad (an implementation independent of ours) or by hand, and our
replies are verified with pyrad, so a mistake shared by encoder and decoder cannot hide.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from pyrad import packet as pyrad_packet

from radiusd.packets import (
    Attr,
    Code,
    MalformedPacket,
    decode_access_request,
    decode_address,
    encode_attribute,
    encode_response,
    hide_password,
    message_authenticator_valid,
    parse_frame,
    reveal_password,
)
from tests.support import DICTIONARY

SECRET = b"packets-secret-0123"
AUTHENTICATOR = bytes(range(16))


# -- hand-built packets ------------------------------------------------------------------------

def attribute(number: int, value: bytes) -> bytes:
    return bytes((number, len(value) + 2)) + value


def raw_packet(code: int = Code.ACCESS_REQUEST, identifier: int = 7, attributes: bytes = b"",
               authenticator: bytes = AUTHENTICATOR, length: int | None = None, padding: bytes = b"") -> bytes:
    length = 20 + len(attributes) if length is None else length
    return struct.pack("!BBH", code, identifier, length) + authenticator + attributes + padding


def signed_packet(attributes: bytes = b"", secret: bytes = SECRET, **kwargs) -> bytes:
    """A packet whose first attribute is a Message-Authenticator computed here (RFC 3579 §3.2)."""
    unsigned = raw_packet(attributes=attribute(80, bytes(16)) + attributes, **kwargs)
    mac = hmac.new(secret, unsigned, hashlib.md5).digest()
    return unsigned[:22] + mac + unsigned[38:]


def pyrad_request(*, proxy_states=(), message_authenticator=True, password="s3cret-pass", **attributes):
    request = pyrad_packet.AuthPacket(code=pyrad_packet.AccessRequest, secret=SECRET, dict=DICTIONARY, id=42)
    if message_authenticator:
        request.add_message_authenticator()
    request["User-Name"] = "alice"
    if password is not None:
        request["User-Password"] = request.PwCrypt(password)
    for name, value in attributes.items():
        request[name.replace("_", "-")] = value
    for value in proxy_states:
        request.AddAttribute("Proxy-State", value)
    return request


# -- parse_frame -------------------------------------------------------------------------------

def test_parse_frame_splits_header_and_attributes_in_order():
    data = raw_packet(identifier=99, attributes=attribute(1, b"alice") + attribute(33, b"p1")
                      + attribute(4, b"\xc0\x00\x02\x01") + attribute(33, b"p2"))
    frame = parse_frame(data)
    assert frame.code == Code.ACCESS_REQUEST
    assert frame.identifier == 99
    assert frame.authenticator == AUTHENTICATOR
    assert frame.attributes == ((1, b"alice"), (33, b"p1"), (4, b"\xc0\x00\x02\x01"), (33, b"p2"))
    assert frame.values(33) == [b"p1", b"p2"]
    assert frame.first(1) == b"alice"
    assert frame.first(2) is None
    assert frame.raw == data
    assert frame.message_authenticator_at is None


def test_parse_frame_ignores_octets_after_length_as_padding():
    body = attribute(1, b"alice")
    data = raw_packet(attributes=body, padding=b"\x00\xff" * 10)
    frame = parse_frame(data)
    assert frame.raw == data[:20 + len(body)]
    assert frame.attributes == ((1, b"alice"),)


def test_parse_frame_accepts_an_attribute_with_an_empty_value():
    assert parse_frame(raw_packet(attributes=attribute(1, b""))).attributes == ((1, b""),)


def test_parse_frame_records_where_the_message_authenticator_value_starts():
    data = signed_packet(attribute(1, b"alice"))
    assert parse_frame(data).message_authenticator_at == 22
    moved = raw_packet(attributes=attribute(1, b"alice") + attribute(80, bytes(16)))
    assert parse_frame(moved).message_authenticator_at == 20 + 7 + 2


def test_parse_frame_accepts_exactly_200_attributes_and_the_4096_octet_maximum():
    assert len(parse_frame(raw_packet(attributes=attribute(18, b"x") * 200)).attributes) == 200
    big = attribute(18, b"y" * 253) * 15 + attribute(18, b"z" * (4096 - 20 - 15 * 255 - 2))
    data = raw_packet(attributes=big)
    assert len(data) == 4096
    assert parse_frame(data).raw == data


OVERSIZED_ATTRIBUTES = attribute(18, b"x" * 250) * 16 + attribute(18, b"x" * 43)  # 20 + 4077 = 4097

MALFORMED = {
    "empty datagram": b"",
    "19 octets": raw_packet()[:19],
    "Length field 19": raw_packet(length=19),
    "Length field 0": raw_packet(length=0),
    "Length field 4097": raw_packet(attributes=OVERSIZED_ATTRIBUTES),
    "Length beyond the octets received": raw_packet(attributes=attribute(1, b"alice"), length=40),
    "attribute type 0": raw_packet(attributes=attribute(0, b"abc")),
    "attribute length 0": raw_packet(attributes=b"\x01\x00abc"),
    "attribute length 1": raw_packet(attributes=b"\x01\x01abc"),
    "attribute overflowing Length": raw_packet(attributes=b"\x01\x10alice"),
    "one stray octet after the last attribute": raw_packet(attributes=attribute(1, b"alice") + b"\x01"),
    "two Message-Authenticators": raw_packet(attributes=attribute(80, bytes(16)) * 2),
    "Message-Authenticator of length 17": raw_packet(attributes=attribute(80, bytes(15))),
    "Message-Authenticator of length 19": raw_packet(attributes=attribute(80, bytes(17))),
    "201 attributes": raw_packet(attributes=attribute(18, b"x") * 201),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_parse_frame_rejects_structurally_invalid_packets(data):
    with pytest.raises(MalformedPacket):
        parse_frame(data)


def test_length_field_over_4096_is_rejected_even_when_that_many_octets_arrived():
    data = raw_packet(attributes=OVERSIZED_ATTRIBUTES)
    assert len(data) == 4097 == struct.unpack_from("!H", data, 2)[0]
    with pytest.raises(MalformedPacket):
        parse_frame(data)


# -- Message-Authenticator ---------------------------------------------------------------------

def test_message_authenticator_of_a_pyrad_request_verifies():
    frame = parse_frame(pyrad_request().RequestPacket())
    assert message_authenticator_valid(frame, SECRET)


def test_message_authenticator_with_another_secret_does_not_verify():
    frame = parse_frame(pyrad_request().RequestPacket())
    assert not message_authenticator_valid(frame, b"another-secret-xyz")


def test_message_authenticator_does_not_verify_after_an_attribute_is_changed():
    wire = bytearray(pyrad_request().RequestPacket())
    index = wire.index(b"alice")
    wire[index] = ord("A")
    assert not message_authenticator_valid(parse_frame(bytes(wire)), SECRET)


def test_message_authenticator_does_not_verify_when_the_request_authenticator_changes():
    wire = bytearray(pyrad_request().RequestPacket())
    wire[4] ^= 0xFF
    assert not message_authenticator_valid(parse_frame(bytes(wire)), SECRET)


def test_message_authenticator_absent_is_not_valid():
    frame = parse_frame(pyrad_request(message_authenticator=False).RequestPacket())
    assert frame.message_authenticator_at is None
    assert not message_authenticator_valid(frame, SECRET)


def test_message_authenticator_computed_by_hand_verifies_wherever_it_sits():
    assert message_authenticator_valid(parse_frame(signed_packet(attribute(1, b"bob"))), SECRET)
    unsigned = raw_packet(attributes=attribute(1, b"bob") + attribute(80, bytes(16)))
    mac = hmac.new(SECRET, unsigned, hashlib.md5).digest()
    last = unsigned[:-16] + mac
    assert message_authenticator_valid(parse_frame(last), SECRET)


# -- User-Password hiding (RFC 2865 §5.2) ------------------------------------------------------

@pytest.mark.parametrize("password", [b"a", b"fifteen-chars!!", b"exactly16octets!", b"seventeen-octets!",
                                      "pässwörd-ünïcode".encode(), b"x" * 128])
def test_hidden_password_reveals_to_the_original(password):
    hidden = hide_password(password, SECRET, AUTHENTICATOR)
    assert len(hidden) % 16 == 0 and len(hidden) >= max(16, len(password))
    assert hidden[:len(password)] != password
    assert reveal_password(hidden, SECRET, AUTHENTICATOR) == password


def test_password_hiding_matches_pyrad():
    request = pyrad_request()
    for password in ("short", "a-password-longer-than-sixteen-octets"):
        hidden = request.PwCrypt(password)
        assert hide_password(password.encode(), SECRET, request.authenticator) == hidden
        assert reveal_password(hidden, SECRET, request.authenticator) == password.encode()


def test_revealing_with_the_wrong_secret_or_authenticator_gives_other_bytes():
    hidden = hide_password(b"correct-horse", SECRET, AUTHENTICATOR)
    assert reveal_password(hidden, b"wrong-secret-0000", AUTHENTICATOR) != b"correct-horse"
    assert reveal_password(hidden, SECRET, bytes(16)) != b"correct-horse"


def test_empty_password_hides_to_one_block_and_reveals_empty():
    hidden = hide_password(b"", SECRET, AUTHENTICATOR)
    assert len(hidden) == 16
    assert reveal_password(hidden, SECRET, AUTHENTICATOR) == b""


@pytest.mark.parametrize("length", [0, 1, 15, 17, 31, 144])
def test_hidden_password_of_impossible_length_reveals_nothing(length):
    assert reveal_password(b"\x55" * length, SECRET, AUTHENTICATOR) is None


# -- encode_response ---------------------------------------------------------------------------

def reply_to(request, code=Code.ACCESS_ACCEPT, attributes=b"", secret=SECRET):
    wire = request.RequestPacket()
    return encode_response(code, parse_frame(wire), secret, attributes)


def test_response_is_verified_by_pyrad():
    request = pyrad_request()
    data = reply_to(request, attributes=encode_attribute(Attr.FRAMED_IP_ADDRESS, bytes((10, 1, 2, 3))))
    reply = request.CreateReply(packet=data)
    assert request.VerifyReply(reply, data)
    assert reply.verify_message_authenticator(original_authenticator=request.authenticator,
                                              original_code=request.code)
    assert reply.code == pyrad_packet.AccessAccept
    assert reply.id == request.id
    assert reply["Framed-IP-Address"] == ["10.1.2.3"]


def test_response_signed_with_another_secret_fails_pyrad_verification():
    request = pyrad_request()
    data = reply_to(request, secret=b"not-the-shared-secret")
    assert not request.VerifyReply(request.CreateReply(packet=data), data)


def test_response_carries_message_authenticator_first_and_a_correct_length():
    request = pyrad_request()
    body = encode_attribute(Attr.SESSION_TIMEOUT, struct.pack("!I", 3600))
    data = reply_to(request, code=Code.ACCESS_REJECT, attributes=body)
    assert data[0] == Code.ACCESS_REJECT
    assert data[20:22] == bytes((80, 18))
    assert struct.unpack_from("!H", data, 2)[0] == len(data) == 20 + 18 + len(body)
    frame = parse_frame(data)
    assert message_authenticator_valid(frame, SECRET, authenticator=request.authenticator)
    assert not message_authenticator_valid(frame, SECRET)  # signed with the Request Authenticator


def test_response_copies_every_proxy_state_in_order_after_the_attributes():
    request = pyrad_request(proxy_states=[b"first-proxy", b"second-proxy", b"first-proxy"])
    body = encode_attribute(Attr.REPLY_MESSAGE, b"hello")
    data = reply_to(request, attributes=body)
    frame = parse_frame(data)
    assert [number for number, _ in frame.attributes] == [80, 18, 33, 33, 33]
    assert frame.values(Attr.PROXY_STATE) == [b"first-proxy", b"second-proxy", b"first-proxy"]
    reply = request.CreateReply(packet=data)
    assert request.VerifyReply(reply, data)  # pyrad also checks Proxy-State echo (BlastRADIUS)


def test_response_to_status_server_is_verified_by_pyrad():
    request = pyrad_packet.AuthPacket(code=pyrad_packet.StatusServer, secret=SECRET, dict=DICTIONARY, id=3,
                                      authenticator=bytes(range(100, 116)))
    request.add_message_authenticator()
    wire = request.RequestPacket()
    data = encode_response(Code.ACCESS_ACCEPT, parse_frame(wire), SECRET)
    reply = request.CreateReply(packet=data)
    assert request.VerifyReply(reply, data, enforce_ma=True)
    assert reply.verify_message_authenticator(original_authenticator=request.authenticator,
                                              original_code=request.code)
    assert len(data) == 38


def test_response_longer_than_4096_octets_is_refused():
    request = pyrad_request()
    with pytest.raises(ValueError):
        reply_to(request, attributes=encode_attribute(Attr.REPLY_MESSAGE, b"m" * 253) * 16)


# -- decode_access_request ---------------------------------------------------------------------

def decode(data: bytes):
    return decode_access_request(parse_frame(data), "nas1", "challenge", SECRET, 123.0, 127.0)


def test_decode_reads_the_request_fields():
    request = pyrad_request(NAS_IP_Address="192.0.2.9", NAS_Port=17, NAS_Identifier="vpn-1",
                            Calling_Station_Id="02-00-00-00-00-01", Called_Station_Id="vpn.example")
    decoded = decode(request.RequestPacket())
    assert decoded.user_name == "alice"
    assert decoded.password == b"s3cret-pass"
    assert decoded.auth_type == "pap"
    assert decoded.nas_port == 17
    assert decoded.nas_identifier == "vpn-1"
    assert decoded.calling_station_id == "02-00-00-00-00-01"
    assert decoded.called_station_id == "vpn.example"
    assert (decoded.nas, decoded.mfa_mode, decoded.received_at, decoded.deadline) == ("nas1", "challenge", 123.0, 127.0)
    assert decoded.state is None


def hidden(password: bytes) -> bytes:
    return attribute(2, hide_password(password, SECRET, AUTHENTICATOR))


def test_three_octet_nas_port_is_ignored_and_the_rest_decoded():
    decoded = decode(raw_packet(attributes=attribute(1, b"alice") + attribute(5, b"\x00\x00\x07") + hidden(b"pw")))
    assert decoded.nas_port is None
    assert decoded.user_name == "alice"
    assert decoded.password == b"pw"


@pytest.mark.parametrize("value, expected", [(b"\x0a\x00\x00\x01", "10.0.0.1"), (b"\x0a\x00\x00", None), (None, None)])
def test_an_address_value_of_the_wrong_length_decodes_as_absent(value, expected):
    assert decode_address(value) == expected


def test_invalid_utf8_user_name_is_ignored():
    decoded = decode(raw_packet(attributes=attribute(1, b"al\xffice") + hidden(b"pw") + attribute(32, b"nas")))
    assert decoded.user_name is None
    assert decoded.password == b"pw"
    assert decoded.nas_identifier == "nas"


def test_user_name_with_control_characters_is_ignored():
    assert decode(raw_packet(attributes=attribute(1, b"ali\x00ce"))).user_name is None
    assert decode(raw_packet(attributes=attribute(1, b"alice\n"))).user_name is None


def test_user_password_of_17_octets_is_ignored():
    decoded = decode(raw_packet(attributes=attribute(1, b"alice") + attribute(2, b"\x11" * 17)))
    assert decoded.password is None
    assert decoded.user_name == "alice"


def test_nas_port_of_the_wrong_size_is_ignored():
    assert decode(raw_packet(attributes=attribute(5, b"\x00\x01"))).nas_port is None
    assert decode(raw_packet(attributes=attribute(5, b"\x00\x00\x00\x05"))).nas_port == 5


def test_state_is_passed_through_as_bytes():
    assert decode(raw_packet(attributes=attribute(24, b"\x00state\xff"))).state == b"\x00state\xff"


def vsa(vendor: int, number: int, value: bytes) -> bytes:
    return attribute(26, struct.pack("!I", vendor) + attribute(number, value))


AUTH_TYPES = {
    "pap": (attribute(1, b"alice") + hidden(b"pw"), "pap"),
    "chap": (attribute(1, b"alice") + attribute(3, b"\x01" + bytes(16)) + attribute(60, bytes(16)), "chap"),
    "mschap v1 response": (attribute(1, b"alice") + vsa(311, 11, bytes(8)) + vsa(311, 1, bytes(50)), "mschap"),
    "mschap v2 response": (attribute(1, b"alice") + vsa(311, 11, bytes(16)) + vsa(311, 25, bytes(50)), "mschap"),
    "mschap v2 response only": (attribute(1, b"alice") + vsa(311, 25, bytes(50)), "mschap"),
    "eap": (attribute(1, b"alice") + attribute(79, b"\x02\x01\x00\x0a\x01alice"), "eap"),
    "eap wins over a password": (attribute(79, b"\x02\x01\x00\x05\x01") + hidden(b"pw"), "eap"),
    "other vendor's attribute 1 is not mschap": (vsa(9, 1, b"shell:priv-lvl=15") + hidden(b"pw"), "pap"),
    "other microsoft attribute is not mschap": (vsa(311, 16, bytes(34)) + hidden(b"pw"), "pap"),
    "truncated vendor-specific is not mschap": (attribute(26, b"\x00\x00\x01") + hidden(b"pw"), "pap"),
    "no credentials": (attribute(1, b"alice"), "none"),
}


@pytest.mark.parametrize("attributes,expected", AUTH_TYPES.values(), ids=AUTH_TYPES.keys())
def test_auth_type_is_detected_from_the_credentials_sent(attributes, expected):
    assert decode(raw_packet(attributes=attributes)).auth_type == expected


def test_chap_request_built_by_pyrad_is_detected_as_chap():
    request = pyrad_request(password=None, CHAP_Password=b"\x07" + bytes(16))
    assert decode(request.RequestPacket()).auth_type == "chap"
