"""The ldap_users plugin (SPEC §8) without a server: the directory it asks is a stand-in, the
local records are on SQLite. Users found in the directory and passed on unsaved until their first
bind creates the record, a local account winning its name, binds and their refusals, group reply
attributes, the directory's bulkhead, the [ldap] section and the start-up checks. What needs a
real slapd (searches, TLS, timeouts, failover) is tests/integration/test_ldap.py."""

from __future__ import annotations

import time
from contextlib import ExitStack
from types import SimpleNamespace

import pytest

from radiusd.bulkhead import Bulkheads
from radiusd.config import Config, ConfigError, load_config
from radiusd.decisions import Accept, PasswordOk, Reason, Reject
from radiusd.dictionary import RadiusDictionary
from radiusd.directory import DirectoryEntry
from radiusd.errors import BackendError
from radiusd.plugins.ldap_users import Plugin
from radiusd.services.factory import Resources, Services
from radiusd.services.users import NO_RECORD, find_user
from tests.fakes import auth_request
from tests.support import toml_value

LDAP = {"urls": ["ldaps://dc1.example.org"], "bind_dn": "cn=radiusd,dc=example,dc=org",
        "bind_password": "secret", "base_dn": "ou=people,dc=example,dc=org"}
GROUPS = {"VPN-Admins": [{"name": "Class", "value": "admins"}], "vpn-users": [{"name": "Session-Timeout",
                                                                                "value": 3600}]}
PEOPLE = "ou=people,dc=example,dc=org"


class Directory:
    """What the plugin asks of ``radiusd.directory.Directory``, over entries the test holds:
    ``people`` maps the directory's spelling of a name to (password, groups)."""

    def __init__(self, people: dict[str, tuple[bytes, list[str]]], refusal: Reason = Reason.BAD_PASSWORD):
        self.people = people
        self.refusal = refusal
        self.asked: list[tuple] = []

    def find(self, username: str) -> DirectoryEntry | None:
        self.asked.append(("find", username))
        spelling = next((name for name in self.people if name.casefold() == username.casefold()), None)
        return None if spelling is None else DirectoryEntry(f"uid={spelling},{PEOPLE}", spelling)

    def authenticate(self, dn: str, password: bytes) -> Reason | None:
        self.asked.append(("bind", dn))
        name = dn.split(",")[0].removeprefix("uid=")
        return None if self.people[name][0] == password else self.refusal

    def groups(self, entry: DirectoryEntry) -> list[str]:
        self.asked.append(("groups", entry.username))
        return self.people[entry.username][1]

    def check(self) -> None:
        pass


@pytest.fixture
def world(make_world):
    world = make_world(ldap={**LDAP, "group_reply_attributes": GROUPS})
    world.plugin("ldap_users").directory = Directory({"Alice": (b"alice-pw", ["vpn-admins", "VPN-USERS", "other"]),
                                                      "bob": (b"bob-pw", [])})
    return world


@pytest.fixture
def plugin(world):
    return world.plugin("ldap_users")


def found(plugin, name: str, request=None):
    request = request or auth_request(name)
    return request, plugin.radiusd_find_user(request=request)


# -- users -----------------------------------------------------------------------------------------

def test_a_directory_user_without_a_record_is_passed_on_unsaved_in_the_directorys_spelling(world, plugin):
    _, user = found(plugin, "ALICE")
    assert (user.id, user.username, user.source, user.password_hash) == (NO_RECORD, "Alice", "ldap", None)
    assert (user.enabled, user.mfa_exempt, user.expires_at) == (True, False, None)
    assert find_user(world.database, "Alice") is None  # nothing written by a lookup
    assert found(plugin, "nobody")[1] is None


def test_the_first_correct_bind_creates_the_record_and_the_accept_records_the_login(world, plugin):
    request, user = found(plugin, "alice")
    assert plugin.radiusd_authenticate(request=request, user=user, password=b"alice-pw") == PasswordOk("ldap_users")
    record = find_user(world.database, "Alice")
    assert (record.source, record.password_hash) == ("ldap", None)
    assert world.user_row("Alice").last_login_at is None
    plugin.radiusd_post_auth(request=request, user=user, decision=Accept())
    assert world.user_row("Alice").last_login_at is not None
    _, returning = found(plugin, "alice")  # the record now holds the user's factors, blocks, expiry
    assert returning.id == record.id and returning.id != NO_RECORD


def test_a_wrong_bind_creates_no_record(world, plugin):
    request, user = found(plugin, "alice")
    assert plugin.radiusd_authenticate(request=request, user=user, password=b"wrong") == \
        Reject(Reason.BAD_PASSWORD, "ldap_users")
    plugin.radiusd_post_auth(request=request, user=user, decision=Reject(Reason.BAD_PASSWORD))
    assert find_user(world.database, "Alice") is None


def test_the_directorys_refusal_reason_is_the_rejects(world, plugin):
    plugin.directory.refusal = Reason.LDAP_LOCKED
    request, user = found(plugin, "bob")
    assert plugin.radiusd_authenticate(request=request, user=user, password=b"wrong") == \
        Reject(Reason.LDAP_LOCKED, "ldap_users")


def test_an_empty_password_is_refused_without_a_bind(world, plugin):
    request, user = found(plugin, "bob")
    assert plugin.radiusd_authenticate(request=request, user=user, password=b"") == \
        Reject(Reason.NO_PASSWORD, "ldap_users")
    assert [kind for kind, _ in plugin.directory.asked] == ["find"]  # an empty simple bind is anonymous


def test_a_local_account_wins_its_name_and_its_password_is_not_this_plugins(world, plugin):
    world.add_user("bob")
    assert found(plugin, "BOB")[1] is None
    local = find_user(world.database, "bob")
    assert plugin.radiusd_authenticate(request=auth_request("bob"), user=local, password=b"bob-pw") is None
    assert plugin.radiusd_reply_attributes(request=auth_request("bob"), user=local) == []


def test_a_name_the_users_table_cannot_hold_is_nobody(world, plugin):
    long_name = "x" * 65
    plugin.directory.people[long_name] = (b"pw", [])
    assert found(plugin, long_name)[1] is None


def test_the_entry_found_for_a_request_is_not_searched_again_but_a_new_request_searches(world, plugin):
    request, user = found(plugin, "alice")
    plugin.radiusd_authenticate(request=request, user=user, password=b"alice-pw")
    plugin.radiusd_post_auth(request=request, user=user, decision=Accept())
    assert [kind for kind, _ in plugin.directory.asked] == ["find", "bind"]
    record = find_user(world.database, "Alice")  # a second round: the record is found locally
    second = auth_request("alice", b"alice-pw")
    assert plugin.radiusd_authenticate(request=second, user=record, password=b"alice-pw") == PasswordOk("ldap_users")
    assert [kind for kind, _ in plugin.directory.asked] == ["find", "bind", "find", "bind"]


def test_a_user_who_left_the_directory_meanwhile_is_unknown(world, plugin):
    request, user = found(plugin, "alice")
    plugin.radiusd_authenticate(request=request, user=user, password=b"alice-pw")
    record = find_user(world.database, "Alice")
    del plugin.directory.people["Alice"]
    later = auth_request("alice")
    assert plugin.radiusd_authenticate(request=later, user=record, password=b"alice-pw") == \
        Reject(Reason.UNKNOWN_USER, "ldap_users", "not in the directory")
    with pytest.raises(BackendError):
        plugin.radiusd_reply_attributes(request=later, user=record)


# -- reply attributes ----------------------------------------------------------------------------

def test_group_reply_attributes_follow_the_users_groups_case_insensitively(world, plugin):
    request, user = found(plugin, "alice")
    assert plugin.radiusd_reply_attributes(request=request, user=user) == [("Class", "admins"),
                                                                           ("Session-Timeout", 3600)]
    request, bob = found(plugin, "bob")
    assert plugin.radiusd_reply_attributes(request=request, user=bob) == []


def test_without_group_reply_attributes_the_groups_are_not_asked_for(make_world):
    world = make_world(ldap=LDAP)
    plugin = world.plugin("ldap_users")
    plugin.directory = Directory({"carol": (b"pw", ["vpn-admins"])})
    request, user = found(plugin, "carol")
    assert plugin.radiusd_reply_attributes(request=request, user=user) == []
    assert [kind for kind, _ in plugin.directory.asked] == ["find"]


# -- the directory's bulkhead and health -------------------------------------------------------------

def test_a_directory_that_holds_every_ldap_slot_fails_the_next_call_at_once(world, plugin):
    bulkheads = world.runtime.context.bulkheads
    with ExitStack() as stalled:  # other requests stalled in the directory
        for _ in range(bulkheads.limit):
            stalled.enter_context(bulkheads.enter("ldap"))
        with pytest.raises(BackendError) as refused:
            plugin.radiusd_find_user(request=auth_request("alice"))
        assert refused.value.backend == "ldap"
        assert plugin.directory.asked == []
    assert found(plugin, "alice")[1] is not None


def test_the_health_check_is_the_directorys(plugin):
    assert plugin.radiusd_health_checks() == {"ldap": plugin.directory.check}


# -- the [ldap] section ---------------------------------------------------------------------------------

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
