"""The RADIUS wire format at the boundary: validate, decode eagerly, encode replies.

Everything here is pure and total: ``parse_frame`` either returns a structurally valid
``Frame`` or raises ``MalformedPacket``; ``decode_access_request`` reads every attribute the
pipeline may need inside one place, ignoring values invalid for their type (RFC 6929 §2.8),
so nothing downstream ever touches raw bytes. Attribute values are decoded with pyrad's
type codecs; framing, authenticators and password hiding follow RFC 2865/2866/3579.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from functools import lru_cache

from pyrad import tools

from radiusd.model import AuthRequest


class Code(IntEnum):
    ACCESS_REQUEST = 1
    ACCESS_ACCEPT = 2
    ACCESS_REJECT = 3
    ACCOUNTING_REQUEST = 4
    ACCOUNTING_RESPONSE = 5
    ACCESS_CHALLENGE = 11
    STATUS_SERVER = 12
    DISCONNECT_REQUEST = 40
    DISCONNECT_ACK = 41
    DISCONNECT_NAK = 42


class Attr(IntEnum):
    """Attribute numbers the core reads or writes (names as in our dictionary)."""

    USER_NAME = 1
    USER_PASSWORD = 2
    CHAP_PASSWORD = 3
    NAS_IP_ADDRESS = 4
    NAS_PORT = 5
    SERVICE_TYPE = 6
    FRAMED_IP_ADDRESS = 8
    REPLY_MESSAGE = 18
    STATE = 24
    SESSION_TIMEOUT = 27
    VENDOR_SPECIFIC = 26
    CALLED_STATION_ID = 30
    CALLING_STATION_ID = 31
    NAS_IDENTIFIER = 32
    PROXY_STATE = 33
    ACCT_STATUS_TYPE = 40
    ACCT_DELAY_TIME = 41
    ACCT_INPUT_OCTETS = 42
    ACCT_OUTPUT_OCTETS = 43
    ACCT_SESSION_ID = 44
    ACCT_SESSION_TIME = 46
    ACCT_TERMINATE_CAUSE = 49
    ACCT_INPUT_GIGAWORDS = 52
    ACCT_OUTPUT_GIGAWORDS = 53
    EVENT_TIMESTAMP = 55
    CHAP_CHALLENGE = 60
    NAS_PORT_TYPE = 61
    EAP_MESSAGE = 79
    MESSAGE_AUTHENTICATOR = 80
    ACCT_INTERIM_INTERVAL = 85
    NAS_IPV6_ADDRESS = 95
    ERROR_CAUSE = 101


HEADER_LENGTH = 20
MIN_LENGTH = 20
MAX_LENGTH = 4096
MAX_ATTRIBUTES = 200
MESSAGE_AUTHENTICATOR_LENGTH = 18
ZERO_AUTHENTICATOR = bytes(16)
MICROSOFT = 311
MS_CHAP_ATTRIBUTES = frozenset((1, 11, 25))  # MS-CHAP-Response, -Challenge, MS-CHAP2-Response


class MalformedPacket(ValueError):
    """The datagram is not a RADIUS packet we may process; it is dropped as ``malformed``."""


@dataclass(frozen=True, slots=True)
class Frame:
    """A structurally valid packet: header, attributes in order, and the exact packet bytes."""

    code: int
    identifier: int
    authenticator: bytes
    attributes: tuple[tuple[int, bytes], ...]
    raw: bytes = field(repr=False)
    message_authenticator_at: int | None  # offset of the Message-Authenticator value in raw

    def values(self, attribute: int) -> list[bytes]:
        return [value for number, value in self.attributes if number == attribute]

    def first(self, attribute: int) -> bytes | None:
        for number, value in self.attributes:
            if number == attribute:
                return value
        return None


def parse_frame(data: bytes) -> Frame:
    """Check SPEC §3 step 2 and split the attributes; raise MalformedPacket on any fault."""
    if len(data) < MIN_LENGTH:
        raise MalformedPacket("shorter than a RADIUS header")
    code, identifier, length = struct.unpack_from("!BBH", data)
    if length < MIN_LENGTH or length > MAX_LENGTH or length > len(data):
        raise MalformedPacket("bad Length field")
    raw = bytes(data[:length])  # octets past Length are padding (RFC 2865 §3)
    attributes = []
    ma_at = None
    offset = HEADER_LENGTH
    while offset < length:
        if offset + 2 > length:
            raise MalformedPacket("attribute header overruns the packet")
        number, size = raw[offset], raw[offset + 1]
        if number == 0 or size < 2 or offset + size > length:
            raise MalformedPacket("bad attribute type or length")
        if number == Attr.MESSAGE_AUTHENTICATOR:
            if ma_at is not None or size != MESSAGE_AUTHENTICATOR_LENGTH:
                raise MalformedPacket("bad or repeated Message-Authenticator")
            ma_at = offset + 2
        attributes.append((number, raw[offset + 2:offset + size]))
        if len(attributes) > MAX_ATTRIBUTES:
            raise MalformedPacket("too many attributes")
        offset += size
    return Frame(code, identifier, raw[4:20], tuple(attributes), raw, ma_at)


@lru_cache(maxsize=4096)
def _hmac_key_state(secret: bytes):
    return hmac.new(secret, digestmod=hashlib.md5)


def _hmac_md5(secret: bytes, data: bytes) -> bytes:
    """HMAC-MD5 from a per-secret keyed state, copied: half the cost of hmac.new per packet."""
    mac = _hmac_key_state(secret).copy()
    mac.update(data)
    return mac.digest()


def message_authenticator_valid(frame: Frame, secret: bytes, authenticator: bytes | None = None) -> bool:
    """RFC 3579 §3.2: HMAC-MD5 over the packet with the Message-Authenticator value zeroed.

    ``authenticator`` replaces the header's (a response is signed with the request's).
    """
    at = frame.message_authenticator_at
    if at is None:
        return False
    raw = frame.raw
    header = raw[:4] + (authenticator if authenticator is not None else raw[4:20])
    signed = header + raw[20:at] + bytes(16) + raw[at + 16:]
    return hmac.compare_digest(_hmac_md5(secret, signed), raw[at:at + 16])


def accounting_authenticator_valid(frame: Frame, secret: bytes) -> bool:
    """RFC 2866 §3: MD5(Code+Identifier+Length+16 zero octets+Attributes+secret).

    Disconnect-Request and CoA-Request use the same Request Authenticator (RFC 5176 §2.3)."""
    raw = frame.raw
    expected = hashlib.md5(raw[:4] + ZERO_AUTHENTICATOR + raw[20:] + secret).digest()
    return hmac.compare_digest(expected, raw[4:20])


def response_authenticator_valid(frame: Frame, request_authenticator: bytes, secret: bytes) -> bool:
    """RFC 2865 §3 / RFC 5176 §2.3: MD5(Code+Identifier+Length+Request Authenticator+Attributes+secret)."""
    raw = frame.raw
    expected = hashlib.md5(raw[:4] + request_authenticator + raw[20:] + secret).digest()
    return hmac.compare_digest(expected, raw[4:20])


def encode_signed_request(code: int, identifier: int, attributes: bytes, secret: bytes) -> bytes:
    """A request whose Request Authenticator is computed, not random: Accounting-Request
    (RFC 2866 §3), Disconnect-Request and CoA-Request (RFC 5176 §2.3).

    Message-Authenticator comes first, its HMAC taken with 16 zero octets as the authenticator
    (RFC 5176 §3.3); the Request Authenticator then covers the signed packet."""
    length = HEADER_LENGTH + MESSAGE_AUTHENTICATOR_LENGTH + len(attributes)
    if length > MAX_LENGTH:
        raise ValueError("request longer than 4096 octets")
    header = struct.pack("!BBH", code, identifier, length)
    ma_prefix = bytes((Attr.MESSAGE_AUTHENTICATOR, MESSAGE_AUTHENTICATOR_LENGTH))
    mac = _hmac_md5(secret, header + ZERO_AUTHENTICATOR + ma_prefix + bytes(16) + attributes)
    signed = ma_prefix + mac + attributes
    return header + hashlib.md5(header + ZERO_AUTHENTICATOR + signed + secret).digest() + signed


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """RFC 2865 §5.2 User-Password hiding (used by our clients and tests)."""
    padded = password.ljust(max(16, -(-len(password) // 16) * 16), b"\x00")
    result = b""
    previous = authenticator
    for start in range(0, len(padded), 16):
        key = hashlib.md5(secret + previous).digest()
        block = bytes(a ^ b for a, b in zip(padded[start:start + 16], key))
        result += block
        previous = block
    return result


def reveal_password(hidden: bytes, secret: bytes, authenticator: bytes) -> bytes | None:
    """Undo RFC 2865 §5.2 hiding; None when the value has an impossible length."""
    if not hidden or len(hidden) % 16 or len(hidden) > 128:
        return None
    result = bytearray()
    previous = authenticator
    for start in range(0, len(hidden), 16):
        key = hashlib.md5(secret + previous).digest()
        block = hidden[start:start + 16]
        result += bytes(a ^ b for a, b in zip(block, key))
        previous = block
    return bytes(result.rstrip(b"\x00"))


def decode_text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if text and not any(ord(ch) < 32 or ord(ch) == 127 for ch in text) else None


def decode_integer(value: bytes | None) -> int | None:
    return struct.unpack("!I", value)[0] if value is not None and len(value) == 4 else None


def decode_address(value: bytes | None) -> str | None:
    return tools.DecodeAddress(value) if value is not None and len(value) == 4 else None


def _vendor_types(data: bytes):
    """Sub-attribute types of an RFC 2865 §5.26 (one-byte type and length) vendor payload."""
    offset = 0
    while offset + 2 <= len(data) and data[offset + 1] >= 2:
        yield data[offset]
        offset += data[offset + 1]


def _auth_type(frame: Frame) -> str:
    if frame.first(Attr.EAP_MESSAGE) is not None:
        return "eap"
    if frame.first(Attr.CHAP_PASSWORD) is not None:
        return "chap"
    for vsa in frame.values(Attr.VENDOR_SPECIFIC):
        if len(vsa) >= 6 and struct.unpack_from("!I", vsa)[0] == MICROSOFT and \
                MS_CHAP_ATTRIBUTES.intersection(_vendor_types(vsa[4:])):
            return "mschap"
    if frame.first(Attr.USER_PASSWORD) is not None:
        return "pap"
    return "none"


def decode_access_request(frame: Frame, nas_name: str, mfa_mode: str, secret: bytes,
                          received_at: float, deadline: float = float("inf")) -> AuthRequest:
    """Read everything the pipeline needs, once; invalid attribute values count as absent."""
    hidden = frame.first(Attr.USER_PASSWORD)
    return AuthRequest(
        nas=nas_name,
        mfa_mode=mfa_mode,
        user_name=decode_text(frame.first(Attr.USER_NAME)),
        password=reveal_password(hidden, secret, frame.authenticator) if hidden is not None else None,
        state=frame.first(Attr.STATE),
        auth_type=_auth_type(frame),
        nas_identifier=decode_text(frame.first(Attr.NAS_IDENTIFIER)),
        nas_port=decode_integer(frame.first(Attr.NAS_PORT)),
        calling_station_id=decode_text(frame.first(Attr.CALLING_STATION_ID)),
        called_station_id=decode_text(frame.first(Attr.CALLED_STATION_ID)),
        received_at=received_at,
        deadline=deadline,
    )


def encode_attribute(number: int, value: bytes) -> bytes:
    return bytes((number, len(value) + 2)) + value


def encode_response(code: int, request: Frame, secret: bytes, attributes: bytes = b"",
                    ma_authenticator: bytes | None = None) -> bytes:
    """A reply with Message-Authenticator first, the request's Proxy-States last, in order.

    RFC 3579 §3.2: the HMAC covers the reply with the Request Authenticator in the header
    (``ma_authenticator`` replaces it: an Accounting-Response to an Accounting-Request is
    signed over 16 zero octets, as FreeRADIUS and pyrad verify it); then the Response
    Authenticator (RFC 2865 §3) is computed over the signed packet.
    """
    proxy = b"".join(encode_attribute(Attr.PROXY_STATE, value)
                     for value in request.values(Attr.PROXY_STATE))
    body = attributes + proxy
    length = HEADER_LENGTH + MESSAGE_AUTHENTICATOR_LENGTH + len(body)
    if length > MAX_LENGTH:
        raise ValueError("reply longer than 4096 octets")
    header = struct.pack("!BBH", code, request.identifier, length)
    ma_prefix = bytes((Attr.MESSAGE_AUTHENTICATOR, MESSAGE_AUTHENTICATOR_LENGTH))
    mac = _hmac_md5(secret, header + (request.authenticator if ma_authenticator is None else ma_authenticator)
                    + ma_prefix + bytes(16) + body)
    signed = ma_prefix + mac + body
    response_authenticator = hashlib.md5(header + request.authenticator + signed + secret).digest()
    return header + response_authenticator + signed
