"""radiusd.services.factory: one set of services per audit actor over shared resources, built
lazily; the sessions service's Disconnect wiring reaches copies made before the server attached
it; the plugins' writes (last login, hash upgrade, directory record) go through UserService."""

from __future__ import annotations

import ipaddress
import time
from dataclasses import replace

import pytest
from sqlalchemy import select

from radiusd.accounting import AccountingRequest
from radiusd.config import Config
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, users
from radiusd.disconnect import ACK, DisconnectResult
from radiusd.model import Nas
from radiusd.services.factory import Resources, Services
from radiusd.services.users import NO_RECORD, find_user

PASSWORD = "correct-horse-battery"


@pytest.fixture
def database(sqlite_url):
    database = Database(sqlite_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def services(database) -> Services:
    # no seed key configured: only the services that need one ask for it
    return Services(Resources(Config(), database), actor="server")


def actors(database, reason: str) -> list[str]:
    with database.engine.connect() as conn:
        return list(conn.execute(select(audit_events.c.actor).where(audit_events.c.reason == reason)).scalars())


def test_as_actor_names_the_actor_in_the_audit_trail_and_shares_the_resources(services, database):
    api = services.as_actor("api:ops")
    api.users.create("ann", {}, password=PASSWORD)
    services.as_actor("cli").users.delete("ann")
    assert actors(database, "user.create") == ["api:ops"]
    assert actors(database, "user.delete") == ["cli"]
    assert api.resources is services.resources and api.users.hasher is services.users.hasher
    assert api.users is api.users, "built once per actor"


def test_services_that_need_no_seed_key_work_without_one(services):
    services.users.create("bob", {})
    assert services.users.show("bob")["username"] == "bob"
    with pytest.raises(Exception, match="seed"):
        services.nas.list()


def test_a_sessions_copy_made_before_attach_disconnects_through_what_was_attached(services, database):
    blocks = services.as_actor("admin").blocks  # as a plugin holds it: built before the server starts
    services.users.create("carol", {})
    services.sessions.record(AccountingRequest(nas="nas1", source="192.0.2.10", status_type="start",
                                               session_id="s1", user_name="carol", received_at=time.time()))
    sent = []

    def disconnect(targets):
        sent.extend(targets)
        return [DisconnectResult(target, ACK) for target in targets]

    nas = Nas("nas1", ipaddress.ip_network("192.0.2.10/32"), b"nas-secret-0123456789")
    services.sessions.attach(nas_lookup={"nas1": nas}.get, disconnect=disconnect, disconnect_later=None)
    blocks.block("carol", seconds=60, reason="test")
    assert [(target.session_id, target.host, target.secret) for target in sent] == \
        [("s1", "192.0.2.10", b"nas-secret-0123456789")]
    assert services.sessions.list_user_sessions("carol") == []
    with database.engine.connect() as conn:
        actor = conn.execute(select(audit_events.c.actor).where(audit_events.c.type == "session")).scalar()
    assert actor == "admin"


def test_record_login_matches_a_record_created_during_the_request_by_name_and_source(services, database):
    directory = services.as_actor("ldap_users").users
    assert directory.create_record("dave", "ldap", directory.sessions.now())
    assert not directory.create_record("dave", "ldap", directory.sessions.now()), "a concurrent first login"
    unsaved = replace(find_user(database, "dave"), id=NO_RECORD)  # as the pipeline still holds it
    directory.record_login(unsaved, directory.sessions.now())
    assert find_user(database, "dave").source == "ldap"
    assert services.users.show("dave")["last_login_at"] is not None
    assert actors(database, "user.create") == ["ldap_users"], "one record, one event"


def test_upgrade_hash_replaces_the_hash_unless_it_changed_meanwhile(services, database):
    services.users.create("erin", {}, password=PASSWORD)
    stale = find_user(database, "erin")
    services.users.set_password("erin", "another-password-1", "another-password-1")
    services.users.upgrade_hash(stale, PASSWORD.encode())
    with database.engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.username == "erin")).scalar()
    assert services.resources.hasher.verify(stored, b"another-password-1"), "a newer password is kept"
    current = find_user(database, "erin")
    services.users.upgrade_hash(current, b"another-password-1")
    assert find_user(database, "erin").password_hash != current.password_hash
