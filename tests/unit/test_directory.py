"""radiusd.directory and the ldap_users plugin without a server: Active Directory bind codes,
memberOf parsing, the [ldap] section, the default plugin order and start-up checks."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from radiusd.bulkhead import Bulkheads
from radiusd.config import Config, ConfigError, load_config
from radiusd.decisions import Reason
from radiusd.dictionary import RadiusDictionary
from radiusd.directory import bind_refusal, group_names_from_dns
from radiusd.plugins.ldap_users import Plugin
from radiusd.services.factory import Resources, Services
from tests.support import toml_value

LDAP = {"urls": ["ldaps://dc1.example.org"], "bind_dn": "cn=radiusd,dc=example,dc=org",
        "bind_password": "secret", "base_dn": "ou=people,dc=example,dc=org"}


def ad_refusal(data: str) -> dict:
    return {"result": 49, "description": "invalidCredentials",
            "message": f"80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data {data}, v4563\x00"}


@pytest.mark.parametrize("data,reason", [
    ("52e", Reason.BAD_PASSWORD), ("525", Reason.UNKNOWN_USER), ("530", Reason.LDAP_RESTRICTED),
    ("531", Reason.LDAP_RESTRICTED), ("532", Reason.LDAP_PASSWORD_EXPIRED), ("533", Reason.LDAP_DISABLED),
    ("701", Reason.LDAP_EXPIRED), ("773", Reason.LDAP_MUST_CHANGE), ("775", Reason.LDAP_LOCKED),
    ("52E", Reason.BAD_PASSWORD), ("999", Reason.BAD_PASSWORD),
])
def test_active_directory_data_codes_give_their_reasons(data, reason):
    assert bind_refusal(ad_refusal(data)) is reason


def test_openldap_invalid_credentials_is_a_bad_password_and_other_codes_are_not_the_users_fault():
    assert bind_refusal({"result": 49, "description": "invalidCredentials", "message": ""}) is Reason.BAD_PASSWORD
    for code in (8, 51, 52, 53, 80):  # strongerAuthRequired, busy, unavailable, unwillingToPerform, other
        assert bind_refusal({"result": code, "message": "data 533"}) is None


def test_member_of_values_give_the_group_names_of_the_configured_rdn_attribute():
    dns = ["CN=VPN Admins,OU=Groups,DC=example,DC=org", "cn=vpn-users,ou=groups,dc=example,dc=org",
           "ou=not-a-group,dc=example,dc=org", "garbage"]
    assert group_names_from_dns(dns, "cn") == ["VPN Admins", "vpn-users"]


# -- configuration ---------------------------------------------------------------------------------

def config(**sections) -> Config:
    return Config.model_validate(sections)


def test_default_order_includes_ldap_users_only_with_an_ldap_section():
    assert "ldap_users" not in config().plugins.order
    order = config(ldap=LDAP).plugins.order
    assert order.index("local_users") < order.index("ldap_users") < order.index("totp")


def test_ldap_section_defaults_and_secret_references(monkeypatch):
    section = config(ldap={**LDAP, "bind_password": {"env": "LDAP_SECRET"}}).ldap
    monkeypatch.setenv("LDAP_SECRET", "from-env")
    assert section.bind_password.reveal() == "from-env"
    assert "from-env" not in repr(section)
    assert (section.connect_timeout_seconds, section.receive_timeout_seconds) == (2, 3)
    assert section.user_filter == "(&(objectClass=inetOrgPerson)(uid={username}))"
    assert section.group_filter == "(&(objectClass=groupOfNames)(member={dn}))"
    assert (section.start_tls, section.ca_file, section.group_reply_attributes) == (False, "", {})


@pytest.mark.parametrize("change,fragment", [
    ({"urls": ["http://dc1"]}, "ldap:// or ldaps://"),
    ({"urls": []}, "ldap.urls"),
    ({"user_filter": "(uid=%s)"}, "{username}"),
    ({"group_filter": "(member=x)"}, "{dn}"),
    ({"bind_password": None}, "bind_dn needs bind_password"),
    ({"receive_timeout_seconds": 2.5}, "ldap.receive_timeout_seconds"),
    ({"url": "ldap://dc1"}, "unknown configuration key ldap.url"),
    ({"group_reply_attributes": {"g": [{"name": "Class"}]}}, "ldap.group_reply_attributes.g.0.value"),
])
def test_invalid_ldap_settings_are_refused(tmp_path, change, fragment):
    settings = {**LDAP, **change}
    if settings.get("bind_password") is None:
        settings.pop("bind_password")
    lines = ["[ldap]"] + [f"{key} = {toml_value(value)}" for key, value in settings.items()]
    (tmp_path / "radiusd.toml").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "radiusd.toml"), environ={})
    assert fragment in str(caught.value)


def test_empty_group_filter_means_member_of():
    assert config(ldap={**LDAP, "group_filter": ""}).ldap.group_filter == ""


# -- the plugin at start-up --------------------------------------------------------------------------

def plugin_with(**sections) -> Plugin:
    settings = config(**sections)
    context = SimpleNamespace(config=settings, dictionary=RadiusDictionary(), database=None, clock=time.time,
                              services=Services(Resources(settings, None), actor="test"), bulkheads=Bulkheads(1))
    return Plugin(context)


def test_ldap_users_in_the_order_without_an_ldap_section_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"lists ldap_users but there is no \[ldap\] section"):
        plugin_with(plugins={"order": ["local_users", "ldap_users"]})


@pytest.mark.parametrize("attributes,fragment", [
    ([{"name": "No-Such-Attribute", "value": "x"}], "vpn: unknown attribute No-Such-Attribute"),
    ([{"name": "Framed-IP-Address", "value": "not-an-ip"}], "vpn: Framed-IP-Address"),
])
def test_group_reply_attributes_are_checked_against_the_dictionary(attributes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        plugin_with(ldap={**LDAP, "group_reply_attributes": {"vpn": attributes}})


def test_unreadable_bind_password_file_or_ca_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read secret file"):
        plugin_with(ldap={**LDAP, "bind_password": {"file": str(tmp_path / "missing")}})
    with pytest.raises(ConfigError, match="ca_file .* cannot be loaded"):
        plugin_with(ldap={**LDAP, "ca_file": str(tmp_path / "missing.pem")})


def test_valid_group_reply_attributes_are_kept_by_group_name_case_insensitively():
    plugin = plugin_with(ldap={**LDAP, "group_reply_attributes": {
        "VPN-Admins": [{"name": "Class", "value": "admins"}, {"name": "Fortinet-Group-Name", "value": "admins"}]}})
    assert plugin.group_attributes == {"vpn-admins": (("Class", "admins"), ("Fortinet-Group-Name", "admins"))}
