"""The RADIUS dictionary: our FreeRADIUS-format files, read with pyrad, and attribute encoding.

``[server] dictionaries`` adds FreeRADIUS-format files (``$INCLUDE`` relative to the including
file), read after ours, so their definitions win; FreeRADIUS's own tree
(``/usr/share/freeradius/dictionary``) loads whole, pyrad skipping the attribute kinds it cannot
encode (TLVs nested deeper than one level, extended and long-extended attributes, vendors of
another format) with one warning. A SIGHUP reads them again (``RadiusDictionary.take``).

Reply attributes (per user, per group, from plugins) are named as in the dictionary and given
as strings or numbers; ``encode`` turns one into the bytes of a whole attribute, wrapping
vendor attributes in Vendor-Specific (RFC 2865 §5.26) with one-byte vendor type and length.
"""

from __future__ import annotations

import ipaddress
import struct
from importlib.resources import files
from pathlib import Path
from typing import Sequence

from pyrad import tools
from pyrad.dictionary import Attribute, Dictionary, ParseError

from radiusd.config import ConfigError

VENDOR_SPECIFIC = 26
MAX_VALUE_LENGTH = 253
VSA_MAX_VALUE_LENGTH = 247
MAX_ATTRIBUTE_NUMBER = 255  # above it, FreeRADIUS's server-internal attributes: never on the wire


class UnknownAttribute(KeyError):
    pass


def default_dictionary_path() -> Path:
    return Path(str(files("radiusd.dictionaries").joinpath("dictionary")))


class FreeRadiusDictionary(Dictionary):
    """pyrad's reader, taking data type names in any case as FreeRADIUS does (its own
    dictionary.juniper spells one ``String``). pyrad has no hook for this but its private parser."""

    def _Dictionary__ParseAttribute(self, state, tokens):
        if len(tokens) >= 4:
            tokens = [*tokens[:3], tokens[3].lower(), *tokens[4:]]
        return super()._Dictionary__ParseAttribute(state, tokens)


class RadiusDictionary:
    """Attribute definitions by name, and validation/encoding of configured values."""

    def __init__(self, extra: Sequence[str | Path] = ()):
        """Our dictionary, then the ``extra`` files in order; ConfigError (one line) when one
        cannot be read or parsed."""
        self.paths = [default_dictionary_path(), *(Path(path) for path in extra)]
        try:
            self._pyrad = FreeRadiusDictionary(*(str(path) for path in self.paths))
        except ParseError as exc:
            raise ConfigError(f"[server] dictionaries: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"[server] dictionaries: cannot read {exc.filename}: {exc.strerror}") from None

    def take(self, other: "RadiusDictionary") -> None:
        """Serve ``other``'s definitions from now on (a SIGHUP read the files again); every
        holder of this object sees them."""
        self.paths, self._pyrad = other.paths, other._pyrad

    def __contains__(self, name: str) -> bool:
        return name in self._pyrad.attributes

    def attribute(self, name: str) -> Attribute:
        try:
            return self._pyrad.attributes[name]
        except KeyError:
            raise UnknownAttribute(name) from None

    def vendor_id(self, attribute: Attribute) -> int:
        return self._pyrad.vendors.GetForward(attribute.vendor) if attribute.vendor else 0

    def normalise(self, name: str, value: str | int) -> str | int:
        """The value as the encoder takes it; ValueError with a readable message if invalid."""
        attribute = self.attribute(name)
        kind = attribute.type
        if kind in ("integer", "short", "byte", "signed", "date", "integer64"):
            if isinstance(value, str) and attribute.values.HasForward(value):
                return tools.DecodeAttr(kind, attribute.values.GetForward(value))
            try:
                number = int(value)
            except (TypeError, ValueError):
                raise ValueError(f"{name} takes a number or one of its named values") from None
            return number
        if kind == "ipaddr":
            return str(ipaddress.IPv4Address(str(value)))
        if kind == "ipv6addr":
            return str(ipaddress.IPv6Address(str(value)))
        if kind == "ipv6prefix":
            return str(ipaddress.IPv6Network(str(value), strict=False))
        if not isinstance(value, str):
            raise ValueError(f"{name} takes a string")
        if kind == "octets" and value.startswith("0x"):
            bytes.fromhex(value[2:])
        return value

    def encode(self, name: str, value: str | int) -> bytes:
        """One complete attribute (type, length, value), Vendor-Specific wrapped if needed."""
        attribute = self.attribute(name)
        if attribute.code > MAX_ATTRIBUTE_NUMBER or attribute.is_sub_attribute:
            raise ValueError(f"{name} cannot be sent: it is not a top-level RADIUS attribute")
        payload = tools.EncodeAttr(attribute.type, self.normalise(name, value))
        vendor = self.vendor_id(attribute)
        if not vendor:
            if len(payload) > MAX_VALUE_LENGTH:
                raise ValueError(f"{name} value longer than {MAX_VALUE_LENGTH} bytes")
            return bytes((attribute.code, len(payload) + 2)) + payload
        if len(payload) > VSA_MAX_VALUE_LENGTH:
            raise ValueError(f"{name} value longer than {VSA_MAX_VALUE_LENGTH} bytes")
        inner = bytes((attribute.code, len(payload) + 2)) + payload
        return bytes((VENDOR_SPECIFIC, len(inner) + 6)) + struct.pack("!I", vendor) + inner

    def validate(self, name: str, value: str | int) -> None:
        """Raise ValueError (or UnknownAttribute) unless the pair can be sent."""
        self.encode(name, value)
