"""Reply attributes on the wire for each kind of decision (encoded in the worker pool)."""

from __future__ import annotations

from radiusd.decisions import Accept, Challenge, Decision
from radiusd.dictionary import MAX_VALUE_LENGTH, RadiusDictionary
from radiusd.packets import Attr, encode_attribute


def reply_message(text: str) -> bytes:
    """Reply-Message, split over several attributes when longer than one can carry."""
    data = text.encode()
    return b"".join(encode_attribute(Attr.REPLY_MESSAGE, data[start:start + MAX_VALUE_LENGTH])
                    for start in range(0, len(data), MAX_VALUE_LENGTH))


def encode_attributes(decision: Decision, dictionary: RadiusDictionary) -> bytes:
    """Accept: its attributes; Challenge: State and the prompt; Reject and failures: nothing."""
    if isinstance(decision, Accept):
        return b"".join(dictionary.encode(name, value) for name, value in decision.attributes)
    if isinstance(decision, Challenge):
        return encode_attribute(Attr.STATE, decision.state) + reply_message(decision.prompt)
    return b""
