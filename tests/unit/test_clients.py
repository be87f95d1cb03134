"""radiusd.clients: the NAS registry (source address → NAS) and NAS definitions."""

from __future__ import annotations

import ipaddress

import pytest

from radiusd.clients import (
    NasError,
    NasRegistry,
    check_secret,
    nas_from_config,
    normalise_address,
    parse_network,
)
from radiusd.config import Config, NasSection
from radiusd.model import Nas

SECRET = b"a-long-enough-secret-0123"


def nas(name: str, address: str) -> Nas:
    return Nas(name=name, network=parse_network(address), secret=SECRET)


def names(registry: NasRegistry, *hosts: str) -> list[str | None]:
    return [getattr(registry.find(normalise_address(host)), "name", None) for host in hosts]


def test_exact_host_is_found():
    registry = NasRegistry([nas("vpn1", "192.0.2.10"), nas("vpn2", "192.0.2.11/32")])
    assert names(registry, "192.0.2.10", "192.0.2.11") == ["vpn1", "vpn2"]


def test_address_inside_a_cidr_network_is_found():
    registry = NasRegistry([nas("office", "10.20.0.0/16")])
    assert names(registry, "10.20.0.1", "10.20.255.254") == ["office", "office"]


def test_unknown_address_is_none():
    registry = NasRegistry([nas("vpn1", "192.0.2.10"), nas("office", "10.20.0.0/16")])
    assert names(registry, "192.0.2.11", "10.21.0.1", "2001:db8::1") == [None, None, None]
    assert registry.find("not-an-address") is None


def test_empty_registry_knows_nobody():
    assert NasRegistry([]).find("127.0.0.1") is None


@pytest.mark.parametrize("declared", [["wide", "narrow", "narrower"], ["narrower", "wide", "narrow"]])
def test_longest_prefix_wins_whatever_the_declaration_order(declared):
    entries = {"wide": nas("wide", "10.0.0.0/8"), "narrow": nas("narrow", "10.1.0.0/16"),
               "narrower": nas("narrower", "10.1.2.0/24")}
    registry = NasRegistry([entries[name] for name in declared])
    assert names(registry, "10.9.9.9", "10.1.9.9", "10.1.2.3") == ["wide", "narrow", "narrower"]


def test_exact_host_beats_a_network_containing_it():
    registry = NasRegistry([nas("net", "10.0.0.0/8"), nas("host", "10.0.0.5")])
    assert names(registry, "10.0.0.5", "10.0.0.6") == ["host", "net"]


def test_repeated_lookups_give_the_same_answer():
    registry = NasRegistry([nas("net", "10.0.0.0/8")])
    assert names(registry, "10.0.0.7", "10.0.0.7", "11.0.0.7", "11.0.0.7") == ["net", "net", None, None]


def test_ipv6_host_and_cidr():
    registry = NasRegistry([nas("v6net", "2001:db8::/32"), nas("v6host", "2001:db8::1"),
                            nas("v6narrow", "2001:db8:1::/48")])
    assert names(registry, "2001:db8::1", "2001:db8::2", "2001:db8:1::9", "2001:db9::1") == \
        ["v6host", "v6net", "v6narrow", None]


def test_ipv4_mapped_ipv6_source_is_normalised_to_ipv4():
    assert normalise_address("::ffff:10.1.2.3") == "10.1.2.3"
    assert normalise_address("10.1.2.3") == "10.1.2.3"
    assert normalise_address("2001:db8::1") == "2001:db8::1"
    assert normalise_address("::1") == "::1"
    registry = NasRegistry([nas("host", "10.1.2.3"), nas("net", "192.168.0.0/16")])
    assert names(registry, "::ffff:10.1.2.3", "::ffff:192.168.7.7") == ["host", "net"]


def test_ipv4_mapped_network_is_stored_as_the_ipv4_network():
    assert parse_network("::ffff:10.0.0.0/104") == ipaddress.ip_network("10.0.0.0/8")
    assert parse_network("::ffff:192.0.2.1") == ipaddress.ip_network("192.0.2.1/32")
    registry = NasRegistry([nas("mapped", "::ffff:10.0.0.0/104")])
    assert names(registry, "10.200.0.1", "::ffff:10.200.0.1", "11.0.0.1") == ["mapped", "mapped", None]


def test_host_bits_in_a_network_are_accepted():
    assert parse_network("10.1.2.3/8") == ipaddress.ip_network("10.0.0.0/8")


@pytest.mark.parametrize("address", ["10.0.0.300", "vpn.example.com", "", "10.0.0.0/33"])
def test_invalid_address_is_refused(address):
    with pytest.raises(NasError):
        parse_network(address)


def test_duplicate_names_are_refused():
    with pytest.raises(NasError, match="vpn1"):
        NasRegistry([nas("vpn1", "192.0.2.10"), nas("vpn1", "192.0.2.11")])


def test_registry_lists_and_finds_by_name():
    registry = NasRegistry([nas("a", "192.0.2.10"), nas("b", "10.0.0.0/8")])
    assert len(registry) == 2
    assert sorted(entry.name for entry in registry) == ["a", "b"]
    assert registry.by_name("b").network == ipaddress.ip_network("10.0.0.0/8")
    assert registry.by_name("c") is None


def test_empty_secret_is_refused():
    with pytest.raises(NasError, match="empty"):
        check_secret("vpn1", b"", warn=lambda text: None)


def test_short_secret_warns_and_long_secret_does_not():
    warnings = []
    check_secret("vpn1", b"short", warnings.append)
    assert len(warnings) == 1 and "vpn1" in warnings[0]
    check_secret("vpn2", b"x" * 16, warnings.append)
    assert len(warnings) == 1


def test_config_nas_takes_defaults_from_security_and_mfa():
    config = Config.model_validate({"security": {"require_message_authenticator": False},
                                    "mfa": {"mode": "append"}})
    section = NasSection(name="vpn1", address="192.0.2.0/24", secret="a-long-enough-secret-0123")
    entry = nas_from_config(section, config, warn=lambda text: None)
    assert entry.secret == b"a-long-enough-secret-0123"
    assert entry.network == ipaddress.ip_network("192.0.2.0/24")
    assert entry.require_message_authenticator is False
    assert entry.mfa_mode == "append"
    assert entry.origin == "config"


def test_config_nas_settings_override_the_defaults():
    section = NasSection(name="vpn1", address="192.0.2.1", secret="a-long-enough-secret-0123",
                         require_message_authenticator=False, mfa_mode="append", coa_port=1700)
    entry = nas_from_config(section, Config(), warn=lambda text: None)
    assert (entry.require_message_authenticator, entry.mfa_mode, entry.coa_port) == (False, "append", 1700)


def test_config_nas_with_empty_secret_is_refused():
    section = NasSection(name="vpn1", address="192.0.2.1", secret="")
    with pytest.raises(NasError):
        nas_from_config(section, Config(), warn=lambda text: None)


def test_config_nas_with_short_secret_warns():
    warnings = []
    nas_from_config(NasSection(name="vpn1", address="192.0.2.1", secret="short"), Config(), warn=warnings.append)
    assert warnings and "vpn1" in warnings[0]


def test_nas_repr_does_not_show_the_secret():
    assert SECRET.decode() not in repr(nas("vpn1", "192.0.2.1"))
