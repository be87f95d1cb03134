"""Tests for the project's RADIUS dictionaries (dictionaries/)."""

import logging
from collections import defaultdict
from pathlib import Path

import pytest
from pyrad import packet, tools
from pyrad.dictionary import Dictionary

from tests.support import need_file

DICTIONARY_DIR = Path(__file__).resolve().parents[2] / "dictionaries"
MAIN_DICTIONARY = DICTIONARY_DIR / "dictionary"

# name -> (vendor name, vendor id, code, type)
EXPECTED_ATTRIBUTES = {
    # RFC 2865
    "User-Name": ("", 0, 1, "string"),
    "User-Password": ("", 0, 2, "string"),
    "CHAP-Password": ("", 0, 3, "octets"),
    "NAS-IP-Address": ("", 0, 4, "ipaddr"),
    "NAS-Port": ("", 0, 5, "integer"),
    "Service-Type": ("", 0, 6, "integer"),
    "Framed-Protocol": ("", 0, 7, "integer"),
    "Framed-IP-Address": ("", 0, 8, "ipaddr"),
    "Framed-IP-Netmask": ("", 0, 9, "ipaddr"),
    "Filter-Id": ("", 0, 11, "string"),
    "Reply-Message": ("", 0, 18, "string"),
    "State": ("", 0, 24, "octets"),
    "Class": ("", 0, 25, "octets"),
    "Vendor-Specific": ("", 0, 26, "octets"),
    "Session-Timeout": ("", 0, 27, "integer"),
    "Idle-Timeout": ("", 0, 28, "integer"),
    "Termination-Action": ("", 0, 29, "integer"),
    "Called-Station-Id": ("", 0, 30, "string"),
    "Calling-Station-Id": ("", 0, 31, "string"),
    "NAS-Identifier": ("", 0, 32, "string"),
    "Proxy-State": ("", 0, 33, "octets"),
    "CHAP-Challenge": ("", 0, 60, "octets"),
    "NAS-Port-Type": ("", 0, 61, "integer"),
    "Port-Limit": ("", 0, 62, "integer"),
    "Login-LAT-Port": ("", 0, 63, "string"),
    # RFC 2866
    "Acct-Status-Type": ("", 0, 40, "integer"),
    "Acct-Delay-Time": ("", 0, 41, "integer"),
    "Acct-Input-Octets": ("", 0, 42, "integer"),
    "Acct-Output-Octets": ("", 0, 43, "integer"),
    "Acct-Session-Id": ("", 0, 44, "string"),
    "Acct-Authentic": ("", 0, 45, "integer"),
    "Acct-Session-Time": ("", 0, 46, "integer"),
    "Acct-Input-Packets": ("", 0, 47, "integer"),
    "Acct-Output-Packets": ("", 0, 48, "integer"),
    "Acct-Terminate-Cause": ("", 0, 49, "integer"),
    "Acct-Multi-Session-Id": ("", 0, 50, "string"),
    "Acct-Link-Count": ("", 0, 51, "integer"),
    # RFC 2868
    "Tunnel-Type": ("", 0, 64, "integer"),
    "Tunnel-Medium-Type": ("", 0, 65, "integer"),
    "Tunnel-Password": ("", 0, 69, "string"),
    "Tunnel-Private-Group-Id": ("", 0, 81, "string"),
    # RFC 2869
    "Acct-Input-Gigawords": ("", 0, 52, "integer"),
    "Acct-Output-Gigawords": ("", 0, 53, "integer"),
    "Event-Timestamp": ("", 0, 55, "date"),
    "Password-Retry": ("", 0, 75, "integer"),
    "Prompt": ("", 0, 76, "integer"),
    "Connect-Info": ("", 0, 77, "string"),
    "Configuration-Token": ("", 0, 78, "string"),
    "EAP-Message": ("", 0, 79, "octets"),
    "Message-Authenticator": ("", 0, 80, "octets"),
    "Acct-Interim-Interval": ("", 0, 85, "integer"),
    "NAS-Port-Id": ("", 0, 87, "string"),
    "Framed-Pool": ("", 0, 88, "string"),
    # RFC 4372
    "Chargeable-User-Identity": ("", 0, 89, "octets"),
    # RFC 3162
    "NAS-IPv6-Address": ("", 0, 95, "ipv6addr"),
    "Framed-Interface-Id": ("", 0, 96, "ifid"),
    "Framed-IPv6-Prefix": ("", 0, 97, "ipv6prefix"),
    "Login-IPv6-Host": ("", 0, 98, "ipv6addr"),
    "Framed-IPv6-Route": ("", 0, 99, "string"),
    "Framed-IPv6-Pool": ("", 0, 100, "string"),
    # RFC 5176
    "Error-Cause": ("", 0, 101, "integer"),
    # RFC 6911
    "Framed-IPv6-Address": ("", 0, 168, "ipv6addr"),
    # Microsoft (RFC 2548)
    "MS-CHAP-Response": ("Microsoft", 311, 1, "octets"),
    "MS-CHAP-Error": ("Microsoft", 311, 2, "octets"),
    "MS-CHAP-Challenge": ("Microsoft", 311, 11, "octets"),
    "MS-MPPE-Send-Key": ("Microsoft", 311, 16, "octets"),
    "MS-MPPE-Recv-Key": ("Microsoft", 311, 17, "octets"),
    "MS-CHAP2-Response": ("Microsoft", 311, 25, "octets"),
    "MS-CHAP2-Success": ("Microsoft", 311, 26, "octets"),
    "MS-Primary-DNS-Server": ("Microsoft", 311, 28, "ipaddr"),
    "MS-Secondary-DNS-Server": ("Microsoft", 311, 29, "ipaddr"),
    # Cisco
    "Cisco-AVPair": ("Cisco", 9, 1, "string"),
    "Cisco-NAS-Port": ("Cisco", 9, 2, "string"),
    # Fortinet
    "Fortinet-Group-Name": ("Fortinet", 12356, 1, "string"),
    "Fortinet-Client-IP-Address": ("Fortinet", 12356, 2, "ipaddr"),
    "Fortinet-Vdom-Name": ("Fortinet", 12356, 3, "string"),
    "Fortinet-Access-Profile": ("Fortinet", 12356, 6, "string"),
    # Palo Alto Networks
    "PaloAlto-Admin-Role": ("PaloAlto", 25461, 1, "string"),
    "PaloAlto-Admin-Access-Domain": ("PaloAlto", 25461, 2, "string"),
    "PaloAlto-Panorama-Admin-Role": ("PaloAlto", 25461, 3, "string"),
    "PaloAlto-Panorama-Admin-Access-Domain": ("PaloAlto", 25461, 4, "string"),
    "PaloAlto-User-Group": ("PaloAlto", 25461, 5, "string"),
    "PaloAlto-User-Domain": ("PaloAlto", 25461, 6, "string"),
    "PaloAlto-Client-Source-IP": ("PaloAlto", 25461, 7, "string"),
    "PaloAlto-Client-OS": ("PaloAlto", 25461, 8, "string"),
    "PaloAlto-Client-Hostname": ("PaloAlto", 25461, 9, "string"),
    "PaloAlto-GlobalProtect-Client-Version": ("PaloAlto", 25461, 10, "string"),
    # Juniper
    "Juniper-Local-User-Name": ("Juniper", 2636, 1, "string"),
    "Juniper-Allow-Commands": ("Juniper", 2636, 2, "string"),
    "Juniper-Deny-Commands": ("Juniper", 2636, 3, "string"),
    "Juniper-Allow-Configuration": ("Juniper", 2636, 4, "string"),
    "Juniper-Deny-Configuration": ("Juniper", 2636, 5, "string"),
}

# (attribute, value name, number)
EXPECTED_VALUES = [
    ("Service-Type", "Login-User", 1),
    ("Service-Type", "Framed-User", 2),
    ("Service-Type", "Administrative-User", 6),
    ("Service-Type", "Authenticate-Only", 8),
    ("Framed-Protocol", "PPP", 1),
    ("Framed-Routing", "None", 0),
    ("Framed-Compression", "Van-Jacobson-TCP-IP", 1),
    ("Login-Service", "Telnet", 0),
    ("Login-Service", "TCP-Clear-Quiet", 8),
    ("Termination-Action", "RADIUS-Request", 1),
    ("NAS-Port-Type", "Virtual", 5),
    ("NAS-Port-Type", "Ethernet", 15),
    ("NAS-Port-Type", "Wireless-802.11", 19),
    ("Acct-Status-Type", "Start", 1),
    ("Acct-Status-Type", "Stop", 2),
    ("Acct-Status-Type", "Interim-Update", 3),
    ("Acct-Status-Type", "Accounting-On", 7),
    ("Acct-Status-Type", "Accounting-Off", 8),
    ("Acct-Authentic", "RADIUS", 1),
    ("Acct-Terminate-Cause", "User-Request", 1),
    ("Acct-Terminate-Cause", "Idle-Timeout", 4),
    ("Acct-Terminate-Cause", "Session-Timeout", 5),
    ("Acct-Terminate-Cause", "Port-Administratively-Disabled", 22),
    ("Tunnel-Type", "VLAN", 13),
    ("Tunnel-Medium-Type", "IEEE-802", 6),
    ("Error-Cause", "Residual-Session-Context-Removed", 201),
    ("Error-Cause", "Unsupported-Attribute", 401),
    ("Error-Cause", "Invalid-Attribute-Value", 407),
    ("Error-Cause", "Session-Context-Not-Found", 503),
    ("Error-Cause", "Multiple-Session-Selection-Unsupported", 508),
]


@pytest.fixture(scope="module")
def dictionary():
    return Dictionary(str(MAIN_DICTIONARY))


def test_main_dictionary_loads_without_warnings_or_skips(caplog):
    with caplog.at_level(logging.DEBUG, logger="pyrad"):
        d = Dictionary(str(MAIN_DICTIONARY))
    assert not d.skipped_attributes
    assert [r.getMessage() for r in caplog.records] == []
    # every file in the directory is reachable from the main file
    for path in DICTIONARY_DIR.glob("dictionary.*"):
        names = [line.split()[1] for line in path.read_text().splitlines()
                 if line.startswith("ATTRIBUTE")]
        assert names, path
        assert all(name in d for name in names), path


def test_includes_resolve_independently_of_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = Dictionary(str(MAIN_DICTIONARY))
    assert "Cisco-AVPair" in d


def test_every_dictionary_file_starts_with_a_comment():
    for path in [MAIN_DICTIONARY, *DICTIONARY_DIR.glob("dictionary.*")]:
        assert path.read_text().startswith("# "), path


@pytest.mark.parametrize("name", sorted(EXPECTED_ATTRIBUTES))
def test_attribute_code_type_and_vendor(dictionary, name):
    vendor, vendor_id, code, datatype = EXPECTED_ATTRIBUTES[name]
    attr = dictionary.attributes[name]
    assert attr.name == name
    assert attr.code == code
    assert attr.type == datatype
    assert attr.vendor == vendor
    assert dictionary.vendors[vendor] == vendor_id
    key = (vendor_id, code) if vendor else code
    assert dictionary.attrindex.GetForward(name) == key
    assert dictionary.attrindex.GetBackward(key) == name


def test_vendor_ids(dictionary):
    assert dictionary.vendors.forward == {
        "": 0,
        "Cisco": 9,
        "Microsoft": 311,
        "Juniper": 2636,
        "Fortinet": 12356,
        "PaloAlto": 25461,
    }


def test_encryption_and_tag_flags(dictionary):
    assert dictionary["User-Password"].encrypt == 1
    assert dictionary["Tunnel-Password"].encrypt == 2
    assert dictionary["Tunnel-Password"].has_tag
    assert dictionary["Tunnel-Type"].has_tag
    assert dictionary["MS-MPPE-Send-Key"].encrypt == 2
    assert dictionary["MS-MPPE-Recv-Key"].encrypt == 2
    assert dictionary["User-Name"].encrypt == 0
    assert not dictionary["User-Name"].has_tag


@pytest.mark.parametrize("attribute,name,number", EXPECTED_VALUES)
def test_value_lookup(dictionary, attribute, name, number):
    attr = dictionary[attribute]
    # pyrad keeps VALUEs encoded in the wire format of the attribute type
    encoded = tools.EncodeAttr(attr.type, number)
    assert attr.values.GetForward(name) == encoded
    assert tools.DecodeAttr(attr.type, attr.values[name]) == number
    assert attr.values.GetBackward(encoded) == name


def test_acct_terminate_cause_values_complete(dictionary):
    values = dictionary["Acct-Terminate-Cause"].values.forward.values()
    numbers = sorted(tools.DecodeAttr("integer", v) for v in values)
    assert numbers == list(range(1, 23))


def test_error_cause_values_complete(dictionary):
    values = dictionary["Error-Cause"].values.forward.values()
    numbers = sorted(tools.DecodeAttr("integer", v) for v in values)
    assert numbers == [201, 202, *range(401, 408), *range(501, 509)]


def test_no_duplicate_codes_or_value_numbers_per_vendor_space():
    # Parse the files directly: pyrad silently lets a later definition
    # win, so a duplicate would not show up in the loaded Dictionary.
    seen = defaultdict(list)
    value_seen = defaultdict(list)
    vendor = ""
    for path in sorted(DICTIONARY_DIR.glob("dictionary*")):
        for line in path.read_text().splitlines():
            tokens = line.split("#", 1)[0].split()
            if not tokens:
                continue
            if tokens[0] == "BEGIN-VENDOR":
                vendor = tokens[1]
            elif tokens[0] == "END-VENDOR":
                vendor = ""
            elif tokens[0] == "ATTRIBUTE":
                seen[(vendor, int(tokens[2], 0))].append(tokens[1])
            elif tokens[0] == "VALUE":
                value_seen[(tokens[1], tokens[2])].append(tokens[3])
                value_seen[(tokens[1], int(tokens[3], 0))].append(tokens[2])
        assert vendor == "", "unclosed BEGIN-VENDOR in %s" % path.name
    assert seen
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}
    assert {k: v for k, v in value_seen.items() if len(v) > 1} == {}


def test_no_duplicate_codes_in_loaded_dictionary(dictionary):
    by_key = defaultdict(list)
    for name, attr in dictionary.attributes.items():
        by_key[(dictionary.vendors[attr.vendor], attr.code)].append(name)
    assert {k: v for k, v in by_key.items() if len(v) > 1} == {}
    assert len(dictionary.attrindex.forward) == len(dictionary.attrindex.backward)


def test_packet_round_trip_with_vendor_and_named_values(dictionary):
    pkt = packet.AcctPacket(code=packet.AccountingRequest, id=7,
                            secret=b"s3cret", dict=dictionary)
    pkt["Acct-Status-Type"] = "Interim-Update"
    pkt["Acct-Session-Id"] = "abc-1"
    pkt["Event-Timestamp"] = 1700000000
    pkt["NAS-IPv6-Address"] = "2001:db8::1"
    pkt["Cisco-AVPair"] = "shell:priv-lvl=15"
    pkt["PaloAlto-User-Group"] = "admins"
    pkt["Error-Cause"] = "Session-Context-Not-Found"
    raw = pkt.RequestPacket()
    # the Cisco VSA on the wire: type 26, vendor 9, vendor type 1
    assert b"\x00\x00\x00\x09\x01\x13shell:priv-lvl=15" in raw

    decoded = packet.AcctPacket(packet=raw, secret=b"s3cret", dict=dictionary)
    assert decoded["Acct-Status-Type"] == ["Interim-Update"]
    assert decoded["Acct-Session-Id"] == ["abc-1"]
    assert decoded["Event-Timestamp"] == [1700000000]
    assert decoded["NAS-IPv6-Address"] == ["2001:db8::1"]
    assert decoded["Cisco-AVPair"] == ["shell:priv-lvl=15"]
    assert decoded["PaloAlto-User-Group"] == ["admins"]
    assert decoded["Error-Cause"] == ["Session-Context-Not-Found"]
    assert decoded[(9, 1)] == [b"shell:priv-lvl=15"]


# -- [server] dictionaries: extra FreeRADIUS-format files (radiusd.dictionary) ------------------------

FREERADIUS_DICTIONARY = "/usr/share/freeradius/dictionary"


def write_acme(directory: Path, number: int = 1) -> Path:
    """An extra dictionary that $INCLUDEs its vendor file from its own directory."""
    (directory / "dictionary.acme").write_text(
        "# Acme, a vendor of our own\nVENDOR Acme 64999\nBEGIN-VENDOR Acme\n"
        f"ATTRIBUTE Acme-Role {number} string\nATTRIBUTE Acme-Level 2 integer\nVALUE Acme-Level High 3\n"
        "END-VENDOR Acme\n")
    main = directory / "dictionary.local"
    main.write_text("# local additions\n$INCLUDE dictionary.acme\nATTRIBUTE Filter-Id 11 string\n")
    return main


def test_extra_dictionaries_load_after_ours_with_their_includes(tmp_path, monkeypatch):
    from radiusd.dictionary import RadiusDictionary

    monkeypatch.chdir("/")  # $INCLUDE is relative to the including file, not the working directory
    dictionary = RadiusDictionary([write_acme(tmp_path)])
    assert dictionary.encode("Acme-Role", "admins") == bytes((26, 14)) + (64999).to_bytes(4, "big") + \
        bytes((1, 8)) + b"admins"
    assert dictionary.encode("Acme-Level", "High")[-4:] == (3).to_bytes(4, "big")
    assert dictionary.encode("Session-Timeout", 60) == bytes((27, 6)) + (60).to_bytes(4, "big")  # ours remain
    assert "Acme-Role" not in RadiusDictionary()


@pytest.mark.parametrize("content,fragment", [
    (None, "cannot read"),
    ("ATTRIBUTE Acme-Broken 1 nonsense\n", "Illegal type: nonsense"),
    ("$INCLUDE dictionary.absent\n", "cannot read"),
])
def test_an_unusable_extra_dictionary_is_one_config_error_naming_the_key(tmp_path, content, fragment):
    from radiusd.config import ConfigError
    from radiusd.dictionary import RadiusDictionary

    path = tmp_path / "dictionary.extra"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as refused:
        RadiusDictionary([path])
    assert str(refused.value).startswith("[server] dictionaries: ") and fragment in str(refused.value)
    assert "\n" not in str(refused.value)


def test_freeradius_dictionary_tree_loads_and_its_vendor_attributes_encode():
    from radiusd.dictionary import RadiusDictionary

    dictionary = RadiusDictionary([need_file(FREERADIUS_DICTIONARY, "freeradius-common")])
    assert dictionary.encode("Aruba-User-Role", "employee") == bytes((26, 16)) + (14823).to_bytes(4, "big") + \
        bytes((1, 10)) + b"employee"
    assert dictionary.encode("Juniper-Junosspace-Profile", "x")  # declared "String" there: any case is read
    with pytest.raises(ValueError, match="not a top-level RADIUS attribute"):
        dictionary.validate("Auth-Type", "Accept")  # a server-internal attribute (number 1000)
