"""The NAS registry: which source addresses may talk to us, and with which secret.

Static ``[[nas]]`` entries and database entries are merged into one immutable registry that
the reactor thread reads without locks; SIGHUP (and the admin paths) build a new one and swap
it in. Exact host entries are a dict lookup; networks are searched longest prefix first.
"""

from __future__ import annotations

import ipaddress
import logging

from radiusd.config import Config, NasSection
from radiusd.model import Nas

MIN_SECRET_WARNING = 16
NETWORK_CACHE_LIMIT = 4096


class NasError(ValueError):
    """A NAS definition cannot be used (bad address, empty secret, duplicate name)."""


def normalise_address(host: str) -> str:
    """Source address as text, with IPv4-mapped IPv6 (``::ffff:a.b.c.d``) turned into IPv4."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def check_secret(name: str, secret: bytes, warn) -> None:
    if not secret:
        raise NasError(f"NAS {name}: the shared secret is empty")
    if len(secret) < MIN_SECRET_WARNING:
        warn(f"NAS {name}: shared secret shorter than {MIN_SECRET_WARNING} characters")


def parse_network(address: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        network = ipaddress.ip_network(address.strip(), strict=False)
    except ValueError:
        raise NasError(f"{address!r} is not an IP address or CIDR network") from None
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped:
        mapped = network.network_address.ipv4_mapped
        network = ipaddress.ip_network(f"{mapped}/{max(0, network.prefixlen - 96)}")
    return network


class NasRegistry:
    def __init__(self, entries: list[Nas]):
        names = set()
        self._hosts: dict[str, Nas] = {}
        networks = []
        for nas in entries:
            if nas.name in names:
                raise NasError(f"NAS name {nas.name} is defined twice")
            names.add(nas.name)
            if nas.network.num_addresses == 1:
                host = str(nas.network.network_address)
                self._hosts.setdefault(host, nas)
            else:
                networks.append(nas)
        self._networks = sorted(networks, key=lambda nas: nas.network.prefixlen, reverse=True)
        self._by_name = {nas.name: nas for nas in entries}
        self._cache: dict[str, Nas | None] = {}

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self):
        return iter(self._by_name.values())

    def by_name(self, name: str) -> Nas | None:
        return self._by_name.get(name)

    def find(self, host: str) -> Nas | None:
        """The NAS for a datagram's source address, or None for an unknown client."""
        nas = self._hosts.get(host)
        if nas is not None or not self._networks:
            return nas
        try:
            return self._cache[host]
        except KeyError:
            pass
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        found = next((nas for nas in self._networks if address in nas.network), None)
        if len(self._cache) >= NETWORK_CACHE_LIMIT:
            self._cache.clear()
        self._cache[host] = found
        return found


def nas_from_config(section: NasSection, config: Config, warn=logging.warning) -> Nas:
    secret = section.secret.reveal().encode()
    check_secret(section.name, secret, warn)
    return Nas(
        name=section.name,
        network=parse_network(section.address),
        secret=secret,
        require_message_authenticator=(
            section.require_message_authenticator
            if section.require_message_authenticator is not None
            else config.security.require_message_authenticator),
        mfa_mode=section.mfa_mode or config.mfa.mode,
        coa_port=section.coa_port,
        origin="config",
    )


def nas_from_row(row, secret: bytes, config: Config) -> Nas:
    return Nas(
        name=row.name,
        network=parse_network(row.address),
        secret=secret,
        require_message_authenticator=(
            row.require_message_authenticator if row.require_message_authenticator is not None
            else config.security.require_message_authenticator),
        mfa_mode=row.mfa_mode or config.mfa.mode,
        coa_port=row.coa_port,
        origin="database",
    )


