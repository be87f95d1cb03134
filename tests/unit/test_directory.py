"""radiusd.directory without a server: Active Directory bind codes and memberOf parsing. The
ldap_users plugin and its [ldap] section are tests/plugins/test_ldap_users.py; what needs a real
slapd is tests/integration/test_ldap.py."""

from __future__ import annotations

import pytest

from radiusd.decisions import Reason
from radiusd.directory import bind_refusal, group_names_from_dns


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
