"""The local_users plugin on SQLite: users found in the users table, their argon2id (or imported
bcrypt) password checked and upgraded after a login, Framed-IP-Address and reply attributes, and
the last login recorded on an Accept."""

from __future__ import annotations

from datetime import datetime, timezone

import bcrypt
import pytest
from sqlalchemy import update

from radiusd.db.tables import users
from radiusd.decisions import Accept, Challenge, PasswordOk, Reason, Reject
from radiusd.services.users import find_user
from tests.fakes import PASSWORD, auth_request, local_user


@pytest.fixture
def world(make_world):
    return make_world()


@pytest.fixture
def plugin(world):
    return world.plugin("local_users")


def stored_hash(world, name: str) -> str | None:
    return world.user_row(name).password_hash


def test_find_user_reads_the_users_table_and_knows_nobody_else(world, plugin):
    world.add_user("alice", framed_ip_address="10.0.0.7", phone="+905554443322")
    alice = plugin.radiusd_find_user(request=auth_request("alice"))
    assert (alice.username, alice.source, alice.framed_ip_address, alice.phone) == (
        "alice", "local", "10.0.0.7", "+905554443322")
    assert plugin.radiusd_find_user(request=auth_request("nobody")) is None


def test_the_stored_password_is_checked(world, plugin):
    world.add_user("alice")
    alice = find_user(world.database, "alice")
    assert plugin.radiusd_authenticate(request=auth_request("alice"), user=alice,
                                       password=PASSWORD.encode()) == PasswordOk("local_users")
    for wrong in (b"wrong-password", PASSWORD.upper().encode(), PASSWORD.encode() + b"x"):
        assert plugin.radiusd_authenticate(request=auth_request("alice"), user=alice, password=wrong) == \
            Reject(Reason.BAD_PASSWORD, "local_users")


def test_a_password_this_plugin_does_not_hold_is_not_its_to_judge(world, plugin):
    world.services().users.create("nopass", {})  # no password: another plugin's, or none
    nopass = find_user(world.database, "nopass")
    assert nopass.password_hash is None
    assert plugin.radiusd_authenticate(request=auth_request("nopass"), user=nopass, password=b"x") is None
    directory_user = local_user("dora", source="ldap", password_hash=None)
    assert plugin.radiusd_authenticate(request=auth_request("dora"), user=directory_user, password=b"x") is None


def test_an_imported_bcrypt_hash_becomes_argon2id_at_the_first_successful_login(world, plugin):
    world.add_user("imported")
    legacy = bcrypt.hashpw(b"bcrypt-password", bcrypt.gensalt(4)).decode()
    with world.database.writer.begin() as conn:
        conn.execute(update(users).where(users.c.username == "imported").values(password_hash=legacy))
    user = find_user(world.database, "imported")
    request = auth_request("imported")
    assert plugin.radiusd_authenticate(request=request, user=user, password=b"wrong") == \
        Reject(Reason.BAD_PASSWORD, "local_users")
    assert stored_hash(world, "imported") == legacy  # a wrong password changes nothing
    assert plugin.radiusd_authenticate(request=request, user=user, password=b"bcrypt-password") == \
        PasswordOk("local_users")
    upgraded = stored_hash(world, "imported")
    assert upgraded.startswith("$argon2id$") and not world.runtime.hasher.needs_rehash(upgraded)
    current = find_user(world.database, "imported")
    assert plugin.radiusd_authenticate(request=request, user=current, password=b"bcrypt-password") == \
        PasswordOk("local_users")
    assert stored_hash(world, "imported") == upgraded  # a current hash is not rewritten


@pytest.mark.parametrize("address, sent", [
    ("10.0.0.7", "10.0.0.7"),
    ("user-selects", "255.255.255.255"),
    ("nas-assigns", "255.255.255.254"),
])
def test_framed_ip_address_comes_first_then_the_users_reply_attributes(world, plugin, address, sent):
    world.add_user("alice", framed_ip_address=address, reply_attributes=[{"name": "Session-Timeout", "value": 3600},
                                                                         {"name": "Class", "value": "vpn"}])
    alice = find_user(world.database, "alice")
    assert plugin.radiusd_reply_attributes(request=auth_request("alice"), user=alice) == [
        ("Framed-IP-Address", sent), ("Session-Timeout", 3600), ("Class", "vpn")]


def test_a_user_without_attributes_adds_none(world, plugin):
    world.add_user("plain")
    assert plugin.radiusd_reply_attributes(request=auth_request("plain"), user=find_user(world.database, "plain")) \
        == []


def test_the_last_login_is_recorded_on_an_accept_only(world, plugin):
    world.add_user("alice")
    alice = find_user(world.database, "alice")
    for decision in (Reject(Reason.BAD_PASSWORD), Challenge(b"s" * 20, "Code?", "totp")):
        plugin.radiusd_post_auth(request=auth_request("alice"), user=alice, decision=decision)
    plugin.radiusd_post_auth(request=auth_request("nobody"), user=None, decision=Reject(Reason.UNKNOWN_USER))
    assert world.user_row("alice").last_login_at is None
    world.clock.advance(42)
    plugin.radiusd_post_auth(request=auth_request("alice"), user=alice, decision=Accept())
    assert world.user_row("alice").last_login_at == datetime.fromtimestamp(world.clock(), timezone.utc)
