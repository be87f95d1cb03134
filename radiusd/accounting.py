"""Accounting-Requests at the boundary (RFC 2866, RFC 2869 §5): decoded once into a frozen value.

Like ``packets.decode_access_request``, everything the sessions table needs is read here, in
one place, and a value invalid for its type counts as absent (RFC 6929 §2.8). Octet counters
are combined with their Gigawords into one 64-bit number. Enumerated values are named as in
our dictionary (``Acct-Terminate-Cause``, ``Error-Cause``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cache

from radiusd.packets import Attr, Frame, MalformedPacket, decode_address, decode_integer, decode_text

# Acct-Status-Type values recorded, by the metric label they count under (SPEC §7.1).
START, STOP, INTERIM_UPDATE, ACCOUNTING_ON, ACCOUNTING_OFF = (
    "start", "stop", "interim_update", "accounting_on", "accounting_off")
STATUS_TYPES = {1: START, 2: STOP, 3: INTERIM_UPDATE, 7: ACCOUNTING_ON, 8: ACCOUNTING_OFF}
SESSION_STATUS_TYPES = frozenset({START, STOP, INTERIM_UPDATE})
OTHER = "other"  # tunnel accounting, Failed (RFC 2867, RFC 2866 §5.1): acknowledged, not recorded


@cache
def value_name(attribute: str, number: int) -> str:
    """The dictionary's name for an enumerated value (``Admin-Reset``), else the number as text."""
    values = _dictionary().attribute(attribute).values  # pyrad keeps values encoded
    encoded = struct.pack("!I", number)
    return values.GetBackward(encoded) if values.HasBackward(encoded) else str(number)


@cache
def _dictionary():
    from radiusd.dictionary import RadiusDictionary

    return RadiusDictionary()


@dataclass(frozen=True, slots=True)
class AccountingRequest:
    """An Accounting-Request as the sessions service sees it: decoded, immutable."""

    nas: str
    source: str  # the NAS's address as the datagram came from it (a CIDR NAS has many)
    status_type: str  # one of STATUS_TYPES' labels, or OTHER
    session_id: str | None = None
    user_name: str | None = None
    nas_ip_address: str | None = None
    nas_identifier: str | None = None
    nas_port: int | None = None
    framed_ip_address: str | None = None
    calling_station_id: str | None = None
    input_octets: int | None = None  # Gigawords × 2^32 + Octets
    output_octets: int | None = None
    session_time: int | None = None
    terminate_cause: str | None = None
    interim_interval: int | None = None
    delay_time: int = 0
    received_at: float = 0.0

    @property
    def event_time(self) -> float:
        """When the event happened by our clock: receipt less Acct-Delay-Time (RFC 2866 §5.2).

        Event-Timestamp is the NAS's clock and is not trusted for ordering or staleness."""
        return self.received_at - self.delay_time


def _octets(frame: Frame, octets: int, gigawords: int) -> int | None:
    low = decode_integer(frame.first(octets))
    if low is None:
        return None
    return ((decode_integer(frame.first(gigawords)) or 0) << 32) + low


def decode_accounting_request(frame: Frame, nas_name: str, source: str, received_at: float) -> AccountingRequest:
    """Read everything the sessions table needs; MalformedPacket without Acct-Status-Type, or
    without a usable Acct-Session-Id on Start, Interim-Update and Stop (RFC 2866 §5.1, §5.5)."""
    number = decode_integer(frame.first(Attr.ACCT_STATUS_TYPE))
    if number is None:
        raise MalformedPacket("Accounting-Request without Acct-Status-Type")
    status_type = STATUS_TYPES.get(number, OTHER)
    session_id = decode_text(frame.first(Attr.ACCT_SESSION_ID))
    if status_type in SESSION_STATUS_TYPES and session_id is None:
        raise MalformedPacket("Accounting-Request without Acct-Session-Id")
    cause = decode_integer(frame.first(Attr.ACCT_TERMINATE_CAUSE))
    delay = decode_integer(frame.first(Attr.ACCT_DELAY_TIME)) or 0
    return AccountingRequest(
        nas=nas_name,
        source=source,
        status_type=status_type,
        session_id=session_id,
        user_name=decode_text(frame.first(Attr.USER_NAME)),
        nas_ip_address=decode_address(frame.first(Attr.NAS_IP_ADDRESS)),
        nas_identifier=decode_text(frame.first(Attr.NAS_IDENTIFIER)),
        nas_port=decode_integer(frame.first(Attr.NAS_PORT)),
        framed_ip_address=decode_address(frame.first(Attr.FRAMED_IP_ADDRESS)),
        calling_station_id=decode_text(frame.first(Attr.CALLING_STATION_ID)),
        input_octets=_octets(frame, Attr.ACCT_INPUT_OCTETS, Attr.ACCT_INPUT_GIGAWORDS),
        output_octets=_octets(frame, Attr.ACCT_OUTPUT_OCTETS, Attr.ACCT_OUTPUT_GIGAWORDS),
        session_time=decode_integer(frame.first(Attr.ACCT_SESSION_TIME)),
        terminate_cause=value_name("Acct-Terminate-Cause", cause) if cause is not None else None,
        interim_interval=decode_integer(frame.first(Attr.ACCT_INTERIM_INTERVAL)),
        delay_time=min(delay, 86400),  # a day at most: a wild value must not date the event
        received_at=received_at,
    )
