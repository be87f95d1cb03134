"""Storage on SQLite and PostgreSQL: migrations, the user and NAS services, UTC datetimes."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import UniqueConstraint, inspect, select, text, update

from radiusd.config import Config, NasSection, SecuritySection
from radiusd.crypto import DecryptionError, PasswordHasher, SeedKey
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, metadata, nas_devices, users
from radiusd.dictionary import RadiusDictionary
from radiusd.services import Conflict, Invalid, NotFound
from radiusd.services.nas import NasService, secret_purpose
from radiusd.services.users import UserService, find_user

UTC = timezone.utc
PASSWORD = "Correct-Horse-7731"


@pytest.fixture(scope="module")
def hasher():
    return PasswordHasher(SecuritySection())


@pytest.fixture(scope="module")
def dictionary():
    return RadiusDictionary()


@pytest.fixture
def fresh_database(database_url):
    database = Database(database_url, pool_size=2)
    yield database
    database.dispose()


@pytest.fixture
def database(fresh_database):
    migrate.upgrade(fresh_database)
    return fresh_database


@pytest.fixture
def users_service(database, hasher, dictionary):
    return UserService(database, hasher, dictionary, actor="test")


@pytest.fixture
def seed_key():
    return SeedKey(os.urandom(32))


@pytest.fixture
def static_nas_config():
    return Config(nas=[NasSection(name="static", address="203.0.113.250", secret="static-secret-0123456")])


@pytest.fixture
def nas_warnings():
    return []


@pytest.fixture
def nas_service(database, seed_key, static_nas_config, nas_warnings):
    return NasService(database, seed_key, static_nas_config, warn=nas_warnings.append)


def assert_utc(value: datetime) -> None:
    assert value.tzinfo is not None, "datetime came back naive"
    assert value.utcoffset() == timedelta(0)


# -- migrations --------------------------------------------------------------------------------

def _schema(connection) -> dict:
    inspector = inspect(connection)
    schema = {}
    for table in inspector.get_table_names():
        if table == "alembic_version":
            continue
        schema[table] = {
            "columns": {column["name"]: column["nullable"] for column in inspector.get_columns(table)},
            "primary_key": sorted(inspector.get_pk_constraint(table)["constrained_columns"]),
            "unique": sorted(tuple(c["column_names"]) for c in inspector.get_unique_constraints(table)),
            "indexes": sorted((tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
                              if not i.get("duplicates_constraint")),
        }
    return schema


def _expected_schema() -> dict:
    expected = {}
    for table in metadata.sorted_tables:
        expected[table.name] = {
            "columns": {column.name: column.nullable for column in table.columns},
            "primary_key": sorted(column.name for column in table.primary_key.columns),
            "unique": sorted({(column.name,) for column in table.columns if column.unique} |
                             {tuple(c.name for c in constraint.columns) for constraint in table.constraints
                              if isinstance(constraint, UniqueConstraint)}),
            "indexes": sorted((tuple(column.name for column in index.columns), bool(index.unique))
                              for index in table.indexes),
        }
    return expected


def test_migrations_create_exactly_the_tables_and_columns_of_the_metadata(database):
    with database.engine.connect() as connection:
        assert _schema(connection) == _expected_schema()
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_fresh_database_has_no_revision_then_head_after_upgrade(fresh_database):
    assert migrate.current_revision(fresh_database) is None
    assert not migrate.is_current(fresh_database)
    migrate.upgrade(fresh_database)
    assert migrate.current_revision(fresh_database) == migrate.head_revision()
    assert migrate.is_current(fresh_database)


def test_second_upgrade_is_a_no_op(database, users_service):
    users_service.create("alice", {"first_name": "Alice"})
    with database.engine.connect() as connection:
        before = _schema(connection)
    migrate.upgrade(database)
    assert migrate.current_revision(database) == migrate.head_revision()
    with database.engine.connect() as connection:
        assert _schema(connection) == before
    assert users_service.show("alice")["first_name"] == "Alice"


def test_timestamp_columns_are_timezone_aware_on_postgresql(postgres_url):
    database = Database(postgres_url, pool_size=1)
    try:
        migrate.upgrade(database)
        with database.engine.connect() as connection:
            columns = {column["name"]: column["type"] for column in inspect(connection).get_columns("users")}
    finally:
        database.dispose()
    assert columns["created_at"].timezone is True
    assert columns["expires_at"].timezone is True


# -- users -------------------------------------------------------------------------------------

FULL_PROFILE = {
    "first_name": "Alice", "last_name": "Liddell", "email": "alice@example.com", "phone": "+905554443322",
    "expires_at": "2030-01-02T03:04:05+03:00", "framed_ip_address": "10.1.2.3", "sponsor_name": "Bob",
    "sponsor_email": "bob@example.com", "description": "contractor", "mfa_exempt": True,
    "reply_attributes": [{"name": "Session-Timeout", "value": "3600"}],
}


def test_create_then_show_returns_every_field_and_no_secret(users_service):
    created = users_service.create("alice", FULL_PROFILE, password=PASSWORD, confirmation=PASSWORD)
    shown = users_service.show("alice")
    assert created == shown
    assert shown["username"] == "alice"
    for field in ("first_name", "last_name", "email", "phone", "framed_ip_address", "sponsor_name",
                  "sponsor_email", "description", "mfa_exempt", "reply_attributes"):
        assert shown[field] == FULL_PROFILE[field], field
    assert shown["expires_at"] == datetime(2030, 1, 2, 0, 4, 5, tzinfo=UTC)
    assert shown["status"] == "active" and shown["blocked"] is False
    assert shown["last_login_at"] is None
    assert not any("password" in key for key in shown)
    assert PASSWORD not in repr(shown)


def test_datetimes_come_back_timezone_aware_utc(users_service, database):
    if not database.is_sqlite:  # a server in another time zone must not shift what we read back
        with database.engine.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database.url.database}" SET timezone TO \'Asia/Tokyo\''))
            conn.commit()
        database.engine.dispose()
        with database.engine.connect() as conn:
            assert conn.execute(text("SHOW timezone")).scalar_one() == "Asia/Tokyo"
    before = datetime.now(UTC)
    users_service.create("alice", {"expires_at": datetime(2030, 6, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5)))})
    shown = users_service.show("alice")
    for field in ("created_at", "updated_at", "expires_at"):
        assert_utc(shown[field])
    assert shown["expires_at"] == datetime(2030, 6, 1, 17, 0, tzinfo=UTC)
    assert before - timedelta(seconds=5) <= shown["created_at"] <= datetime.now(UTC) + timedelta(seconds=5)
    assert_utc(find_user(users_service.database, "alice").expires_at)


def test_naive_expiry_is_taken_as_utc(users_service):
    users_service.create("alice", {"expires_at": "2030-01-01T00:00:00"})
    assert users_service.show("alice")["expires_at"] == datetime(2030, 1, 1, tzinfo=UTC)


def test_password_is_stored_hashed_and_verifies(users_service, database, hasher):
    users_service.create("alice", {}, password=PASSWORD, confirmation=PASSWORD)
    with database.engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash).where(users.c.username == "alice")).scalar_one()
    assert PASSWORD not in stored
    assert hasher.verify(find_user(database, "alice").password_hash, PASSWORD.encode())


def test_duplicate_username_is_a_conflict(users_service):
    users_service.create("alice", {})
    with pytest.raises(Conflict):
        users_service.create("alice", {"first_name": "Other"})
    assert users_service.show("alice")["first_name"] == ""


def test_unknown_user_is_not_found(users_service):
    calls = {"show": lambda: users_service.show("ghost"),
             "update": lambda: users_service.update("ghost", {"first_name": "X"}),
             "enable": lambda: users_service.set_enabled("ghost", True),
             "disable": lambda: users_service.set_enabled("ghost", False),
             "password": lambda: users_service.set_password("ghost", PASSWORD),
             "delete": lambda: users_service.delete("ghost")}
    users_service.create("alice", {})
    for operation, call in calls.items():
        with pytest.raises(NotFound, match="ghost"):
            call()
    assert users_service.show("alice")["status"] == "active"


def test_turkish_national_phone_is_normalised_to_e164(users_service):
    assert users_service.create("alice", {"phone": "05554443322"})["phone"] == "+905554443322"
    assert users_service.create("bob", {"phone": "0555 444 33 22"})["phone"] == "+905554443322"
    assert users_service.create("carol", {"phone": "0044 20 7946 0000"})["phone"] == "+442079460000"


INVALID_FIELDS = [
    ({"email": "not-an-email"}, "email"),
    ({"email": "alice@localhost"}, "email"),
    ({"sponsor_email": "bob@"}, "sponsor_email"),
    ({"phone": "12345"}, "phone"),
    ({"phone": "0555444332"}, "phone"),  # one digit short: phonenumbers says invalid
    ({"phone": "+90 555 abc"}, "phone"),
    ({"framed_ip_address": "10.0.0.256"}, "framed_ip_address"),
    ({"framed_ip_address": "2001:db8::1"}, "framed_ip_address"),
    ({"expires_at": "next tuesday"}, "expires_at"),
    ({"reply_attributes": [{"name": "No-Such-Attribute", "value": "1"}]}, "reply_attributes"),
    ({"reply_attributes": [{"name": "Framed-IP-Address", "value": "not-an-ip"}]}, "reply_attributes"),
    ({"reply_attributes": [{"name": "Session-Timeout", "value": "forever"}]}, "reply_attributes"),
    ({"status": "active"}, "status"),
    ({"password_hash": "x"}, "password_hash"),
]


def test_invalid_profile_field_is_refused_naming_the_field(users_service):
    # Validation does not depend on the database, but runs on both: one database per test, many cases.
    for fields, field in INVALID_FIELDS:
        with pytest.raises(Invalid) as caught:
            users_service.create("alice", fields)
        assert caught.value.field.startswith(field), (fields, caught.value.field)
    assert users_service.list()[0] == []


def test_invalid_username_is_refused(users_service):
    for username in ["", "x" * 65, "al\x00ice", "al\tice", "bob\n", "\x7fdel"]:
        with pytest.raises(Invalid) as caught:
            users_service.create(username, {})
        assert caught.value.field == "username", username
    assert users_service.list()[0] == []


def test_username_of_64_characters_and_unicode_is_accepted(users_service):
    assert users_service.create("x" * 64, {})["username"] == "x" * 64
    assert users_service.create("çağrı.öz", {})["username"] == "çağrı.öz"


def test_short_password_is_refused(users_service):
    with pytest.raises(Invalid) as caught:
        users_service.create("alice", {}, password="short7!", confirmation="short7!")
    assert caught.value.field == "password"
    with pytest.raises(NotFound):
        users_service.show("alice")


def test_password_and_confirmation_mismatch_is_refused(users_service):
    with pytest.raises(Invalid) as caught:
        users_service.create("alice", {}, password=PASSWORD, confirmation=PASSWORD + "x")
    assert caught.value.field == "password_confirmation"


def test_update_changes_only_the_given_fields(users_service):
    created = users_service.create("alice", FULL_PROFILE)
    updated = users_service.update("alice", {"last_name": "Hargreaves", "framed_ip_address": "user-selects"})
    assert updated["last_name"] == "Hargreaves"
    assert updated["framed_ip_address"] == "user-selects"
    for field in ("first_name", "email", "phone", "expires_at", "reply_attributes", "mfa_exempt"):
        assert updated[field] == created[field], field
    assert updated["updated_at"] >= created["updated_at"]
    assert updated["created_at"] == created["created_at"]


def test_update_can_clear_expiry_and_framed_ip(users_service):
    users_service.create("alice", FULL_PROFILE)
    updated = users_service.update("alice", {"expires_at": None, "framed_ip_address": ""})
    assert updated["expires_at"] is None and updated["framed_ip_address"] is None


def test_invalid_update_changes_nothing(users_service):
    created = users_service.create("alice", FULL_PROFILE)
    with pytest.raises(Invalid):
        users_service.update("alice", {"first_name": "Changed", "email": "broken"})
    with pytest.raises(Invalid):
        users_service.update("alice", {"reply_attributes": [{"name": "Framed-IP-Address", "value": "x"}]})
    assert users_service.show("alice") == created


def test_disable_and_enable_change_the_status(users_service):
    users_service.create("alice", {})
    assert users_service.set_enabled("alice", False)["status"] == "disabled"
    assert find_user(users_service.database, "alice").enabled is False
    assert users_service.set_enabled("alice", True)["status"] == "active"


def test_past_expiry_shows_as_expired(users_service):
    users_service.create("alice", {"expires_at": datetime.now(UTC) - timedelta(minutes=1)})
    assert users_service.show("alice")["status"] == "expired"


def test_set_password_replaces_the_hash(users_service, hasher):
    users_service.create("alice", {}, password=PASSWORD)
    users_service.set_password("alice", "Another-Password-99", "Another-Password-99")
    stored = find_user(users_service.database, "alice").password_hash
    assert hasher.verify(stored, b"Another-Password-99")
    assert not hasher.verify(stored, PASSWORD.encode())


def test_set_password_refuses_a_short_or_mismatched_password(users_service, hasher):
    users_service.create("alice", {}, password=PASSWORD)
    with pytest.raises(Invalid):
        users_service.set_password("alice", "short")
    with pytest.raises(Invalid):
        users_service.set_password("alice", "Another-Password-99", "Another-Password-98")
    assert hasher.verify(find_user(users_service.database, "alice").password_hash, PASSWORD.encode())


def test_delete_removes_the_user(users_service):
    users_service.create("alice", {})
    users_service.delete("alice")
    with pytest.raises(NotFound):
        users_service.show("alice")
    assert find_user(users_service.database, "alice") is None
    with pytest.raises(NotFound):
        users_service.delete("alice")


def test_admin_changes_are_audited(users_service, database):
    users_service.create("alice", {})
    users_service.update("alice", {"first_name": "A"})
    users_service.set_enabled("alice", False)
    users_service.delete("alice")
    with database.engine.connect() as conn:
        rows = conn.execute(select(audit_events).order_by(audit_events.c.id)).all()
    assert [(row.type, row.username, row.reason, row.actor) for row in rows] == [
        ("admin", "alice", "user.create", "test"), ("admin", "alice", "user.update", "test"),
        ("admin", "alice", "user.disable", "test"), ("admin", "alice", "user.delete", "test")]
    assert_utc(rows[0].occurred_at)


@pytest.fixture
def population(users_service):
    now = datetime.now(UTC)
    users_service.create("anna", {"first_name": "Anna", "last_name": "Smith", "email": "anna@example.com"})
    users_service.create("bert", {"first_name": "Bert", "email": "bert@corp.example", "expires_at": now + timedelta(days=2)})
    users_service.create("carl", {"last_name": "SMITHSON", "expires_at": now + timedelta(days=30)})
    users_service.create("dora", {"expires_at": now - timedelta(days=1)})
    users_service.create("emil", {})
    users_service.set_enabled("emil", False)
    users_service.create("fred", {"email": "fred@corp.example"})
    users_service.create("gina", {"first_name": "Regina"})
    return now


def usernames(page) -> list[str]:
    return [user["username"] for user in page]


def test_list_orders_by_username(users_service, population):
    page, cursor = users_service.list()
    assert usernames(page) == ["anna", "bert", "carl", "dora", "emil", "fred", "gina"]
    assert cursor is None


def test_list_search_matches_username_names_and_email_case_insensitively(users_service, population):
    assert usernames(users_service.list(q="smith")[0]) == ["anna", "carl"]
    assert usernames(users_service.list(q="CORP.example")[0]) == ["bert", "fred"]
    assert usernames(users_service.list(q="gin")[0]) == ["gina"]
    assert usernames(users_service.list(q="nobody")[0]) == []


def test_list_filters_by_status(users_service, population):
    assert usernames(users_service.list(status="active")[0]) == ["anna", "bert", "carl", "fred", "gina"]
    assert usernames(users_service.list(status="disabled")[0]) == ["emil"]
    assert usernames(users_service.list(status="expired")[0]) == ["dora"]


def test_list_filters_by_expires_before(users_service, population):
    page, _ = users_service.list(expires_before=population + timedelta(days=7))
    assert usernames(page) == ["bert", "dora"]
    page, _ = users_service.list(expires_before=population + timedelta(days=365), status="active")
    assert usernames(page) == ["bert", "carl"]


def test_list_pages_with_a_cursor(users_service, population):
    seen, cursor, pages = [], None, []
    while True:
        page, cursor = users_service.list(limit=3, cursor=cursor)
        pages.append(usernames(page))
        seen.extend(usernames(page))
        if cursor is None:
            break
        assert len(pages) < 5, "pagination does not end"
    assert pages == [["anna", "bert", "carl"], ["dora", "emil", "fred"], ["gina"]]
    assert seen == sorted(seen) and len(set(seen)) == 7


def test_list_page_that_ends_exactly_has_no_next_cursor(users_service, population):
    page, cursor = users_service.list(limit=7)
    assert len(page) == 7 and cursor is None
    page, cursor = users_service.list(limit=6)
    assert len(page) == 6 and cursor == "fred"


def test_list_pagination_combines_with_filters(users_service, population):
    page, cursor = users_service.list(status="active", limit=2)
    assert usernames(page) == ["anna", "bert"]
    page, cursor = users_service.list(status="active", limit=2, cursor=cursor)
    assert usernames(page) == ["carl", "fred"]
    page, cursor = users_service.list(status="active", limit=2, cursor=cursor)
    assert usernames(page) == ["gina"] and cursor is None


# -- NAS devices -------------------------------------------------------------------------------

NAS_SECRET = "nas-shared-secret-0123456789"


def test_nas_secret_is_stored_encrypted(nas_service, database, seed_key):
    nas_service.add("vpn1", "192.0.2.0/24", NAS_SECRET, mfa_mode="append", coa_port=1700)
    with database.engine.connect() as conn:
        raw = bytes(conn.execute(select(nas_devices.c.secret_encrypted)).scalar_one())
    assert NAS_SECRET.encode() not in raw
    assert seed_key.decrypt(raw, secret_purpose("vpn1")) == NAS_SECRET.encode()


def test_added_nas_is_listed_after_the_static_ones_without_a_secret(nas_service):
    shown = nas_service.add("vpn1", "192.0.2.7/24", NAS_SECRET, mfa_mode="append", coa_port=1700)
    assert shown == {"name": "vpn1", "address": "192.0.2.0/24", "require_message_authenticator": None,
                     "mfa_mode": "append", "coa_port": 1700, "origin": "database"}
    listed = nas_service.list()
    assert [(entry["name"], entry["origin"]) for entry in listed] == [("static", "config"), ("vpn1", "database")]
    assert all("secret" not in key for entry in listed for key in entry)
    assert NAS_SECRET not in repr(listed)


def test_registry_entries_decrypt_the_secret(nas_service):
    nas_service.add("vpn1", "192.0.2.0/24", NAS_SECRET, require_message_authenticator=False)
    nas_service.add("vpn2", "2001:db8::/32", NAS_SECRET + "-2")
    entries = {entry.name: entry for entry in nas_service.registry_entries()}
    assert entries["vpn1"].secret == NAS_SECRET.encode()
    assert entries["vpn2"].secret == (NAS_SECRET + "-2").encode()
    assert str(entries["vpn1"].network) == "192.0.2.0/24"
    assert entries["vpn1"].require_message_authenticator is False
    assert entries["vpn2"].require_message_authenticator is True  # the [security] default
    assert entries["vpn1"].origin == "database"


def test_secret_moved_to_another_nas_row_does_not_decrypt(nas_service, database):
    nas_service.add("vpn1", "192.0.2.1", NAS_SECRET)
    nas_service.add("vpn2", "192.0.2.2", "another-secret-0123456789")
    with database.writer.begin() as conn:
        stolen = conn.execute(select(nas_devices.c.secret_encrypted).where(nas_devices.c.name == "vpn1")).scalar_one()
        conn.execute(update(nas_devices).where(nas_devices.c.name == "vpn2").values(secret_encrypted=stolen))
    with pytest.raises(DecryptionError):
        nas_service.registry_entries()


def test_rotate_secret_replaces_the_stored_secret(nas_service, database):
    nas_service.add("vpn1", "192.0.2.1", NAS_SECRET)
    with database.engine.connect() as conn:
        before = conn.execute(select(nas_devices.c.secret_encrypted)).scalar_one()
    nas_service.rotate_secret("vpn1", "rotated-secret-0123456789")
    with database.engine.connect() as conn:
        after = conn.execute(select(nas_devices.c.secret_encrypted)).scalar_one()
    assert before != after
    assert [entry.secret for entry in nas_service.registry_entries()] == [b"rotated-secret-0123456789"]


def test_remove_deletes_the_nas(nas_service):
    nas_service.add("vpn1", "192.0.2.1", NAS_SECRET)
    nas_service.remove("vpn1")
    assert nas_service.registry_entries() == []
    assert [entry["name"] for entry in nas_service.list()] == ["static"]
    with pytest.raises(NotFound):
        nas_service.show("vpn1")


def test_unknown_nas_is_not_found(nas_service):
    with pytest.raises(NotFound):
        nas_service.remove("ghost")
    with pytest.raises(NotFound):
        nas_service.rotate_secret("ghost", NAS_SECRET)


def test_duplicate_nas_name_is_a_conflict(nas_service):
    nas_service.add("vpn1", "192.0.2.1", NAS_SECRET)
    with pytest.raises(Conflict):
        nas_service.add("vpn1", "192.0.2.2", NAS_SECRET)


def test_static_nas_cannot_be_added_removed_or_rotated(nas_service):
    for call in (lambda: nas_service.add("static", "192.0.2.9", NAS_SECRET),
                 lambda: nas_service.remove("static"),
                 lambda: nas_service.rotate_secret("static", NAS_SECRET)):
        with pytest.raises(Conflict, match="configuration file"):
            call()


INVALID_NAS = [
    ({"name": "", "address": "192.0.2.1"}, "name"),
    ({"name": "x" * 65, "address": "192.0.2.1"}, "name"),
    ({"name": "bad\nname", "address": "192.0.2.1"}, "name"),
    ({"name": "vpn1", "address": "192.0.2.300"}, "address"),
    ({"name": "vpn1", "address": "vpn.example.com"}, "address"),
    ({"name": "vpn1", "address": "192.0.2.1", "mfa_mode": "sometimes"}, "mfa_mode"),
    ({"name": "vpn1", "address": "192.0.2.1", "coa_port": 0}, "coa_port"),
]


def test_invalid_nas_is_refused(nas_service):
    for kwargs, field in INVALID_NAS:
        with pytest.raises(Invalid) as caught:
            nas_service.add(secret=NAS_SECRET, **kwargs)
        assert caught.value.field == field, kwargs
    assert nas_service.registry_entries() == []


def test_empty_nas_secret_is_refused(nas_service):
    with pytest.raises(Invalid) as caught:
        nas_service.add("vpn1", "192.0.2.1", "")
    assert caught.value.field == "secret"
    nas_service.add("vpn1", "192.0.2.1", NAS_SECRET)
    with pytest.raises(Invalid):
        nas_service.rotate_secret("vpn1", "")
    assert [entry.secret for entry in nas_service.registry_entries()] == [NAS_SECRET.encode()]


def test_short_nas_secret_is_accepted_with_a_warning(nas_service, nas_warnings):
    nas_service.add("vpn1", "192.0.2.1", "short")
    assert len(nas_warnings) == 1 and "vpn1" in nas_warnings[0]
    nas_service.add("vpn2", "192.0.2.2", NAS_SECRET)
    assert len(nas_warnings) == 1


def test_nas_timestamps_are_utc(nas_service, database):
    nas_service.add("vpn1", "192.0.2.1", NAS_SECRET)
    with database.engine.connect() as conn:
        row = conn.execute(select(nas_devices)).one()
    assert_utc(row.created_at)
    assert_utc(row.updated_at)
