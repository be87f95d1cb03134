"""radiusd.services.bulk and its parts (cells, csv_import, csv_export, hashing; issue 6): the
CSV format, import validation and reports, the one transaction of an apply, on-conflict, export
round trips and formula escaping, bulk password reset and bulk expiration, audit events; in
process, on SQLite (and PostgreSQL where the transaction matters)."""

from __future__ import annotations

import csv
import io
import json
import threading
from datetime import datetime, timedelta, timezone

import bcrypt
import pytest
from sqlalchemy import func, select

from radiusd.config import SecuritySection
from radiusd.crypto import PasswordHasher
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, users
from radiusd.dictionary import RadiusDictionary
from radiusd.services import Invalid, NotFound
from radiusd.services.bulk import BulkService
from radiusd.services.cells import (
    EXPORT_COLUMNS,
    PROFILE_COLUMNS,
    escape_formula,
    format_reply_attributes,
    parse_reply_attributes,
    unescape_formula,
)
from radiusd.services.hashing import ImportCancelled, hash_passwords
from radiusd.services.users import UserFields, UserService, find_user

HASHER = PasswordHasher(SecuritySection())
PASSWORD = "Correct-Horse-7731"


@pytest.fixture(scope="module")
def argon2_hash():
    return HASHER.hash(PASSWORD)


def make_database(url: str) -> Database:
    database = Database(url, pool_size=4)
    migrate.upgrade(database)
    return database


@pytest.fixture
def database(sqlite_url):
    database = make_database(sqlite_url)
    yield database
    database.dispose()


@pytest.fixture
def bulk(database):
    return BulkService(database, HASHER, RadiusDictionary(), actor="test", hash_threads=2)


@pytest.fixture
def user_service(database):
    return UserService(database, HASHER, RadiusDictionary(), actor="test")


def csv_bytes(rows: list[list[str]], *, bom: bool = False) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return (b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode()


def user_count(database) -> int:
    with database.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(users)).scalar()


def admin_events(database) -> list:
    with database.engine.connect() as conn:
        return conn.execute(select(audit_events).where(audit_events.c.type == "admin")
                            .order_by(audit_events.c.id)).all()


def errors_by_place(report: dict) -> set[tuple[int, str | None]]:
    return {(error["line"], error["column"]) for error in report["errors"]}


# -- cell formats ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cell", ["=1+2", "+905554443322", "-2", "@SUM(A1)", "\tx", "\rx", "'=x", "''+x",
                                  "'quoted'", "plain", "", "a=b", "'"])
def test_formula_escape_is_undone_exactly_by_the_import(cell):
    escaped = escape_formula(cell)
    assert unescape_formula(escaped) == cell
    if cell[:1] in ("=", "+", "-", "@", "\t", "\r"):
        assert escaped == "'" + cell


def test_the_import_removes_one_quote_before_a_formula_character_only():
    assert unescape_formula("'=HYPERLINK(x)") == "=HYPERLINK(x)"
    assert unescape_formula("'quoted'") == "'quoted'"
    assert unescape_formula("plain") == "plain"


def test_reply_attribute_cells_round_trip_with_escaped_separators():
    attributes = [{"name": "Reply-Message", "value": r"semi;colon and back\slash"},
                  {"name": "Session-Timeout", "value": 3600}]
    cell = format_reply_attributes(attributes)
    assert cell == r"Reply-Message=semi\;colon and back\\slash;Session-Timeout=3600"
    assert parse_reply_attributes(cell) == [{"name": "Reply-Message", "value": r"semi;colon and back\slash"},
                                            {"name": "Session-Timeout", "value": "3600"}]
    assert parse_reply_attributes(" Class = a=b ; ") == [{"name": "Class", "value": "a=b"}]


@pytest.mark.parametrize("cell", ["Session-Timeout", "=3600", "a\\"])
def test_malformed_reply_attribute_cells_are_refused(cell):
    with pytest.raises(ValueError):
        parse_reply_attributes(cell)


def test_the_columns_are_the_user_fields_of_spec_5():
    assert set(PROFILE_COLUMNS) == set(UserFields.model_fields)
    assert "password" not in EXPORT_COLUMNS and "password_hash" not in EXPORT_COLUMNS


# -- parsing -------------------------------------------------------------------------------------------

def test_bom_crlf_and_quoted_cells_with_commas_and_newlines_parse(bulk, database):
    data = csv_bytes([["username", "description", "reply_attributes", "mfa_exempt"],
                      ["ann", "first, second\nthird \"quoted\"", "Reply-Message=hi\\;there;Session-Timeout=60", "yes"],
                      ["ben", "", "", ""]], bom=True)
    report = bulk.import_users(data, apply=True)
    assert report["error_count"] == 0 and report["created"] == 2, report
    ann = UserService(database, HASHER, RadiusDictionary()).show("ann")
    assert ann["description"] == "first, second\nthird \"quoted\""
    assert ann["mfa_exempt"] is True
    assert ann["reply_attributes"] == [{"name": "Reply-Message", "value": "hi;there"},
                                       {"name": "Session-Timeout", "value": 60}]


def test_lines_are_counted_from_the_header_across_multiline_cells(bulk):
    data = b'username,description,framed_ip_address\n"ann","two\nlines",10.0.0.1\nben,,10.0.0.999\n'
    report = bulk.import_users(data)
    assert errors_by_place(report) == {(4, "framed_ip_address")}


def test_not_utf8_and_broken_quoting_are_reported_with_their_line(bulk):
    assert errors_by_place(bulk.import_users(b"username\nann\nb\xe9n\n")) == {(3, None)}
    report = bulk.import_users(b'username,description\nann,"unterminated\n')
    assert report["error_count"] == 1 and report["errors"][0]["line"] == 2
    assert bulk.import_users(b"")["error_count"] == 1


# -- dry run and its report -------------------------------------------------------------------------------

def test_dry_run_writes_nothing_and_reports_every_bad_line(bulk, database, user_service, argon2_hash):
    user_service.create("taken", {"framed_ip_address": "10.9.0.1"})
    before, events = user_count(database), len(admin_events(database))
    rows = [
        ["username", "password", "password_hash", "framed_ip_address", "expires_at", "email", "phone", "mfa_exempt",
         "reply_attributes", "nickname"],
        ["good", PASSWORD, "", "10.9.0.2", "2031-01-31", "g@example.com", "+905554443322", "true", "", "x"],  # 2
        ["ip", PASSWORD, "", "10.9.0.300", "", "", "", "", "", ""],  # 3 bad IP
        ["date", PASSWORD, "", "", "31/01/2031", "", "", "", "", ""],  # 4 bad date
        ["mail", PASSWORD, "", "", "", "not-an-email", "12", "", "", ""],  # 5 bad email and phone
        ["good", PASSWORD, "", "", "", "", "", "", "", ""],  # 6 duplicate username in the file
        ["taken", PASSWORD, "", "", "", "", "", "", "", ""],  # 7 exists in the database
        ["dupip", PASSWORD, "", "10.9.0.2", "", "", "", "", "", ""],  # 8 Framed-IP-Address of line 2
        ["dbip", PASSWORD, "", "10.9.0.1", "", "", "", "", "", ""],  # 9 Framed-IP-Address of "taken"
        ["", PASSWORD, "", "", "", "", "", "", "", ""],  # 10 missing username
        ["short", "short", "", "", "", "", "", "", "", ""],  # 11 too short a password
        ["hash", "", "$1$not-ours", "", "", "", "", "", "", ""],  # 12 not an argon2 or bcrypt hash
        ["both", PASSWORD, argon2_hash, "", "", "", "", "", "", ""],  # 13 password and hash
        ["flag", PASSWORD, "", "", "", "", "", "maybe", "", ""],  # 14 not a boolean
        ["attr", PASSWORD, "", "", "", "", "", "", "No-Such-Attribute=1", ""],  # 15 unknown attribute
        ["cells", PASSWORD],  # 16 too few cells
    ]
    report = bulk.import_users(csv_bytes(rows))
    assert errors_by_place(report) == {
        (1, "nickname"), (3, "framed_ip_address"), (4, "expires_at"), (5, "email"), (5, "phone"),
        (6, "username"), (7, "username"), (8, "framed_ip_address"), (9, "framed_ip_address"), (10, "username"),
        (11, "password"), (12, "password_hash"), (13, "password_hash"), (14, "mfa_exempt"),
        (15, "reply_attributes"), (16, None)}
    assert report["dry_run"] is True and report["applied"] is False
    assert report["rows"] == 15 and report["valid"] == 1 and report["error_count"] == 16
    assert [error["line"] for error in report["errors"]] == sorted(error["line"] for error in report["errors"])
    assert user_count(database) == before and len(admin_events(database)) == events
    text = json.dumps(report)
    assert PASSWORD not in text and argon2_hash not in text and "$1$not-ours" not in text and "short\"" not in text


def test_apply_with_one_bad_line_writes_nothing(bulk, database):
    rows = [["username", "password"]] + [[f"ok{i}", PASSWORD] for i in range(5)] + [["bad", "short"]]
    report = bulk.import_users(csv_bytes(rows), apply=True)
    assert report["applied"] is False and report["error_count"] == 1
    assert user_count(database) == 0 and admin_events(database) == []


@pytest.fixture(params=["sqlite", "postgresql"])
def any_database(request, tmp_path):
    if request.param == "sqlite":
        database = make_database(f"sqlite:///{tmp_path / 'radiusd.db'}")
        yield database
        database.dispose()
        return
    from tests.conftest import _postgres_database

    for url in _postgres_database():
        database = make_database(url)
        yield database
        database.dispose()


def test_a_conflict_found_while_writing_rolls_the_whole_file_back(any_database, argon2_hash, monkeypatch):
    bulk = BulkService(any_database, HASHER, RadiusDictionary(), actor="test")
    plan = bulk.plan_import(csv_bytes([["username", "password_hash"], ["one", argon2_hash], ["two", argon2_hash]]))
    UserService(any_database, HASHER, RadiusDictionary()).create("two", {})  # created meanwhile
    with pytest.raises(Exception) as raised:
        bulk.apply_import(plan)
    assert "nothing was imported" in str(raised.value)
    assert find_user(any_database, "one") is None
    # and the same plan succeeds once the late user is gone
    UserService(any_database, HASHER, RadiusDictionary()).delete("two")
    assert bulk.apply_import(plan)["created"] == 2


def test_a_thousand_rows_import_in_one_transaction(bulk, database, argon2_hash):
    rows = [["username", "password_hash", "framed_ip_address", "mfa_exempt"]]
    rows += [[f"bulk{i:04d}", argon2_hash, f"10.20.{i // 256}.{i % 256}", "true"] for i in range(1000)]
    dry = bulk.import_users(csv_bytes(rows))
    assert dry["error_count"] == 0 and dry["created"] == 1000 and user_count(database) == 0
    report = bulk.import_users(csv_bytes(rows), apply=True)
    assert report["applied"] is True and report["created"] == 1000
    assert user_count(database) == 1000
    user = find_user(database, "bulk0999")
    assert user.framed_ip_address == "10.20.3.231" and user.mfa_exempt and user.password_hash == argon2_hash
    assert [event.reason for event in admin_events(database)] == ["user.import"]
    assert admin_events(database)[0].detail["created"] == 1000


# -- on conflict ---------------------------------------------------------------------------------------

def test_on_conflict_fail_skip_and_update(bulk, database, user_service):
    user_service.create("kept", {"first_name": "Old", "email": "old@example.com", "framed_ip_address": "10.3.0.1"},
                        password=PASSWORD)
    old_hash = find_user(database, "kept").password_hash
    data = csv_bytes([["username", "first_name", "framed_ip_address"], ["kept", "New", "10.3.0.2"],
                      ["fresh", "Fresh", "10.3.0.1"]])
    assert errors_by_place(bulk.import_users(data)) == {(2, "username"), (3, "framed_ip_address")}

    skipped = bulk.import_users(data, apply=True, on_conflict="skip")
    assert skipped["error_count"] == 1  # "fresh" would take the address "kept" keeps
    data = csv_bytes([["username", "first_name", "framed_ip_address"], ["kept", "New", "10.3.0.2"],
                      ["fresh", "Fresh", "10.3.0.3"]])
    skipped = bulk.import_users(data, apply=True, on_conflict="skip")
    assert (skipped["created"], skipped["skipped"], skipped["updated"]) == (1, 1, 0)
    assert user_service.show("kept")["first_name"] == "Old"

    data = csv_bytes([["username", "first_name", "framed_ip_address", "password"], ["kept", "New", "10.3.0.2", ""],
                      ["fresh", "Fresh", "10.3.0.1", ""]])  # the two swap-ish: kept gives its address up
    updated = bulk.import_users(data, apply=True, on_conflict="update")
    assert (updated["created"], updated["skipped"], updated["updated"]) == (0, 0, 2), updated
    kept = user_service.show("kept")
    assert kept["first_name"] == "New" and kept["framed_ip_address"] == "10.3.0.2"
    assert kept["email"] == "old@example.com"  # a column the file does not have is left alone
    assert find_user(database, "kept").password_hash == old_hash  # an empty password cell changes nothing
    assert user_service.show("fresh")["framed_ip_address"] == "10.3.0.1"


def test_update_clears_a_column_whose_cell_is_empty(bulk, user_service):
    user_service.create("clear", {"phone": "+905554443322", "mfa_exempt": True})
    bulk.import_users(csv_bytes([["username", "phone", "mfa_exempt"], ["clear", "", ""]]), apply=True,
                      on_conflict="update")
    shown = user_service.show("clear")
    assert shown["phone"] == "" and shown["mfa_exempt"] is False


def test_unknown_on_conflict_is_invalid(bulk):
    with pytest.raises(Invalid):
        bulk.import_users(b"username\nx\n", on_conflict="merge")


# -- export ----------------------------------------------------------------------------------------------

def full_profile(**changes) -> dict:
    profile = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "05554443322",
               "expires_at": "2031-01-02T03:04:05+03:00", "framed_ip_address": "10.7.0.1", "sponsor_name": "Bob",
               "sponsor_email": "bob@example.com", "description": "=HYPERLINK(\"http://x\")\nsecond line, comma",
               "mfa_exempt": True, "reply_attributes": [{"name": "Session-Timeout", "value": 3600},
                                                        {"name": "Reply-Message", "value": "a;b\\c"}]}
    profile.update(changes)
    return profile


def export_text(bulk, **kwargs) -> str:
    return b"".join(bulk.export_csv(**kwargs)).decode()


def comparable(view: dict) -> dict:
    return {key: value for key, value in view.items() if key not in ("created_at", "updated_at", "last_login_at")}


def test_export_has_every_field_but_secrets_and_escapes_formulas(bulk, user_service):
    user_service.create("ada", full_profile(), password=PASSWORD)
    text = export_text(bulk)
    assert "argon2" not in text and PASSWORD not in text
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(EXPORT_COLUMNS)
    ada = dict(zip(rows[0], rows[1]))
    assert ada["description"].startswith("'=HYPERLINK") and ada["phone"] == "'+905554443322"
    assert ada["reply_attributes"] == "Session-Timeout=3600;Reply-Message=a\\;b\\\\c"
    assert ada["mfa_exempt"] == "true" and ada["enabled"] == "true" and ada["status"] == "active"
    assert text.endswith("\r\n")


def test_export_then_import_reproduces_the_users(bulk, user_service, tmp_path):
    user_service.create("ada", full_profile(), password=PASSWORD)
    user_service.create("off", full_profile(framed_ip_address="user-selects", description="-dash", phone="",
                                            expires_at="2001-01-01T00:00:00Z", reply_attributes=[]))
    user_service.set_enabled("off", False)
    user_service.create("@at", {"first_name": "+plus", "last_name": "\ttab"})
    exported = export_text(bulk, page_rows=2)  # three users: two pages
    other = make_database(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        copy = BulkService(other, HASHER, RadiusDictionary(), actor="test")
        report = copy.import_users(exported.encode(), apply=True)
        assert report["created"] == 3 and report["error_count"] == 0, report
        copied = UserService(other, HASHER, RadiusDictionary())
        for name in ("ada", "off", "@at"):
            assert comparable(copied.show(name)) == comparable(user_service.show(name)), name
        assert copied.show("off")["status"] == "disabled"
        assert find_user(other, "ada").password_hash is None  # no secret travelled
        reexported = export_text(copy)
        strip = lambda text: [row[:13] for row in csv.reader(io.StringIO(text, newline=""))]  # noqa: E731
        assert strip(reexported) == strip(exported)
    finally:
        other.dispose()


def test_export_is_produced_page_by_page(bulk, user_service):
    for index in range(5):
        user_service.create(f"p{index}", {})
    pages = []
    chunks = list(bulk.export_csv(progress=pages.append, page_rows=2))
    assert len(chunks) == 1 + 3 and pages == [2, 2, 1]


# -- bulk password reset ---------------------------------------------------------------------------------

def test_bulk_password_reset_returns_new_passwords_once_and_old_ones_stop_working(bulk, database, user_service):
    for name in ("r1", "r2", "r3"):
        user_service.create(name, {}, password=PASSWORD)
    result = bulk.reset_passwords(["r1", "r2", "r1"])
    assert result["count"] == 2 and [item["username"] for item in result["items"]] == ["r1", "r2"]
    for item in result["items"]:
        stored = find_user(database, item["username"]).password_hash
        assert HASHER.verify(stored, item["password"].encode())
        assert not HASHER.verify(stored, PASSWORD.encode())
        assert len(item["password"]) == 20
    assert HASHER.verify(find_user(database, "r3").password_hash, PASSWORD.encode())
    assert len({item["password"] for item in result["items"]}) == 2
    event = admin_events(database)[-1]
    assert event.reason == "user.bulk_password_reset" and event.detail["count"] == 2
    assert all(item["password"] not in json.dumps(event.detail) for item in result["items"])


def test_bulk_password_reset_by_filter(bulk, database, user_service):
    for name in ("team-a", "team-b", "other"):
        user_service.create(name, {}, password=PASSWORD)
    user_service.set_enabled("team-b", False)
    assert [item["username"] for item in bulk.reset_passwords(q="team")["items"]] == ["team-a", "team-b"]
    assert [item["username"] for item in bulk.reset_passwords(status="disabled")["items"]] == ["team-b"]
    assert [item["username"] for item in bulk.reset_passwords(q="team", status="active")["items"]] == ["team-a"]
    with pytest.raises(Invalid):
        bulk.reset_passwords(q="e", max_users=2)
    assert HASHER.verify(find_user(database, "other").password_hash, PASSWORD.encode())


def test_bulk_password_reset_refuses_unknown_users_and_ambiguous_selections(bulk, user_service):
    user_service.create("known", {}, password=PASSWORD)
    with pytest.raises(NotFound):
        bulk.reset_passwords(["known", "ghost"])
    with pytest.raises(Invalid):
        bulk.reset_passwords(["known"], status="active")
    with pytest.raises(Invalid):
        bulk.reset_passwords()


# -- bulk expiration -------------------------------------------------------------------------------------

class Sessions:
    def __init__(self):
        self.noticed = []

    def notice_expiry(self, username: str) -> None:
        self.noticed.append(username)


def test_bulk_expiration_expires_at_once_and_ends_sessions(database, user_service):
    sessions = Sessions()
    bulk = BulkService(database, HASHER, RadiusDictionary(), actor="test", sessions=sessions)
    for name in ("e1", "e2", "e3"):
        user_service.create(name, {})
    past = datetime.now(timezone.utc) - timedelta(minutes=1)
    result = bulk.set_expiration(["e2", "e1"], past.isoformat())
    assert result["count"] == 2 and result["expired"] is True
    assert [item["status"] for item in result["items"]] == ["expired", "expired"]
    assert sorted(sessions.noticed) == ["e1", "e2"]
    assert user_service.show("e3")["status"] == "active"

    later = bulk.set_expiration(["e1", "e2"], "2040-01-01")
    assert later["expired"] is False and {item["status"] for item in later["items"]} == {"active"}
    assert later["expires_at"] == datetime(2040, 1, 1, tzinfo=timezone.utc)
    assert bulk.set_expiration(["e1"], None)["items"][0]["expires_at"] is None
    reasons = [event.reason for event in admin_events(database)]
    assert reasons.count("user.bulk_expiration") == 3


def test_bulk_expiration_is_all_or_none(bulk, user_service):
    user_service.create("real", {})
    with pytest.raises(NotFound):
        bulk.set_expiration(["real", "ghost"], "2001-01-01")
    assert user_service.show("real")["expires_at"] is None
    with pytest.raises(Invalid):
        bulk.set_expiration(["real"], "next tuesday")


# -- hashing --------------------------------------------------------------------------------------------

def test_passwords_are_hashed_in_parallel_in_order_with_progress():
    done = []
    hashes = hash_passwords(HASHER, ["password-1", "password-2", "password-3"], 2, progress=done.append)
    assert len(done) == 3
    assert [HASHER.verify(hashed, f"password-{i}".encode()) for i, hashed in enumerate(hashes, 1)] == [True] * 3


def test_a_stopped_import_writes_nothing(bulk, database):
    stop = threading.Event()
    stop.set()
    plan = bulk.plan_import(csv_bytes([["username", "password"], ["s1", PASSWORD], ["s2", PASSWORD]]))
    with pytest.raises(ImportCancelled):
        bulk.apply_import(plan, stop=stop)
    assert user_count(database) == 0


def test_imported_bcrypt_and_argon2_hashes_are_kept_as_given(bulk, database, argon2_hash):
    bcrypt_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    bulk.import_users(csv_bytes([["username", "password_hash"], ["a2", argon2_hash], ["bc", bcrypt_hash]]),
                      apply=True)
    assert find_user(database, "a2").password_hash == argon2_hash
    assert find_user(database, "bc").password_hash == bcrypt_hash
    assert HASHER.verify(bcrypt_hash, PASSWORD.encode()) and HASHER.needs_rehash(bcrypt_hash)
