"""``radiusd-admin`` as operators run it: a subprocess, exit codes, JSON and table output."""

from __future__ import annotations

import json
import re
import os
import stat
import subprocess

import pytest
from sqlalchemy import select

from radiusd.config import SecuritySection, load_config
from radiusd.crypto import PasswordHasher, SeedKey
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import users
from radiusd.services.nas import NasService
from radiusd.services.users import find_user
from tests.support import BIN, SECRET, admin, write_config, write_seed_key

PASSWORD = "Correct-Horse-7731"


@pytest.fixture
def config(tmp_path, sqlite_url):
    """A configuration whose database has been upgraded (in-process: `db upgrade` has its own tests)."""
    path = write_config(tmp_path, sqlite_url)
    database = Database(sqlite_url)
    try:
        migrate.upgrade(database)
    finally:
        database.dispose()
    return path


def stored_usernames(config) -> list[str]:
    """The users in the database, read directly (cheaper than another subprocess)."""
    database = Database(load_config(str(config), environ={}).database.url)
    try:
        with database.engine.connect() as conn:
            return list(conn.execute(select(users.c.username).order_by(users.c.username)).scalars())
    finally:
        database.dispose()


def run_json(config, *args, stdin=None):
    result = admin(config, *args, stdin=stdin)
    return json.loads(result.stdout)


def assert_fails(result, code: int = 1, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    message = result.stderr.strip()
    if code == 1:
        assert message.startswith("radiusd-admin: "), message
        assert "\n" not in message, f"not one line: {message!r}"
        assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def add_alice(config, *extra, password=PASSWORD, check=True):
    return admin(config, "user", "add", "alice", "--password-stdin", *extra, stdin=password + "\n", check=check)


# -- db ----------------------------------------------------------------------------------------

def test_db_upgrade_creates_the_seed_key_file_and_prints_the_revision(tmp_path, sqlite_url):
    seed = tmp_path / "keys" / "seed.key"
    path = write_config(tmp_path, sqlite_url, sections={"security": {"seed_key": {"file": str(seed)}}})
    document = run_json(path, "db", "upgrade")
    assert document == {"revision": migrate.head_revision(), "seed_key_created": True}
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    key_text = seed.read_text()
    SeedKey.load(load_config(str(path), environ={}).security.seed_key)

    again = run_json(path, "db", "upgrade")
    assert again == {"revision": migrate.head_revision(), "seed_key_created": False}
    assert seed.read_text() == key_text, "an existing seed key must never be replaced"


def test_db_upgrade_refuses_an_unusable_seed_key(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url)
    (tmp_path / "seed.key").write_text("too-short\n")
    assert_fails(admin(path, "db", "upgrade", check=False), 1, "seed key")


def test_db_current_shows_revision_and_head_and_never_creates_the_database(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url)
    assert_fails(admin(path, "db", "current", check=False), 1, "does not exist", "radiusd-admin db upgrade")
    assert not (tmp_path / "radiusd.db").exists()
    admin(path, "db", "upgrade")
    assert run_json(path, "db", "current") == {"revision": migrate.head_revision(), "head": migrate.head_revision()}


def test_db_upgrade_table_output_is_key_value_lines(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url)
    output = admin(path, "db", "upgrade", fmt="table").stdout
    assert f"revision: {migrate.head_revision()}" in output.splitlines()


def test_config_error_is_one_line_and_exit_1(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url, sections={"server": {"auth_portt": 1}})
    assert_fails(admin(path, "db", "current", check=False), 1, "server.auth_portt")


# -- user --------------------------------------------------------------------------------------

ALL_FLAGS = ["--first-name", "Alice", "--last-name", "Liddell", "--email", "alice@example.com",
             "--phone", "05554443322", "--expires", "2030-01-02T03:04:05+03:00", "--framed-ip", "10.1.2.3",
             "--sponsor-name", "Bob Sponsor", "--sponsor-email", "bob@example.com",
             "--description", "contractor, 2nd floor", "--mfa-exempt",
             "--reply-attribute", "Session-Timeout=3600"]


def test_user_add_with_every_profile_flag(config):
    created = json.loads(add_alice(config, *ALL_FLAGS).stdout)
    assert created["username"] == "alice"
    assert created["first_name"] == "Alice" and created["last_name"] == "Liddell"
    assert created["email"] == "alice@example.com"
    assert created["phone"] == "+905554443322"
    assert created["expires_at"] == "2030-01-02T00:04:05+00:00"
    assert created["framed_ip_address"] == "10.1.2.3"
    assert created["sponsor_name"] == "Bob Sponsor" and created["sponsor_email"] == "bob@example.com"
    assert created["description"] == "contractor, 2nd floor"
    assert created["mfa_exempt"] is True
    assert created["reply_attributes"] == [{"name": "Session-Timeout", "value": "3600"}]
    assert created["status"] == "active"
    assert not any("password" in key for key in created)
    assert PASSWORD not in json.dumps(created)
    assert run_json(config, "user", "show", "alice") == created


def test_user_add_accepts_password_with_matching_confirmation_line(config):
    admin(config, "user", "add", "alice", "--password-stdin", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert run_json(config, "user", "show", "alice")["username"] == "alice"


def test_user_show_table_output_is_readable(config):
    add_alice(config, "--first-name", "Alice", "--framed-ip", "10.1.2.3")
    lines = admin(config, "user", "show", "alice", fmt="table").stdout.splitlines()
    assert "username: alice" in lines
    assert "first_name: Alice" in lines
    assert "framed_ip_address: 10.1.2.3" in lines
    assert "expires_at: -" in lines
    assert "status: active" in lines


def test_user_list_json_and_table(config):
    add_alice(config, "--first-name", "Alice")
    admin(config, "user", "add", "bob", "--password-stdin", "--last-name", "Builder", stdin=PASSWORD + "\n")
    listed = run_json(config, "user", "list")
    assert [user["username"] for user in listed] == ["alice", "bob"]
    assert run_json(config, "user", "list", "--search", "build") == [listed[1]]

    lines = admin(config, "user", "list", fmt="table").stdout.splitlines()
    assert lines[0].split() == ["USERNAME", "FIRST_NAME", "LAST_NAME", "STATUS", "EXPIRES_AT",
                                "FRAMED_IP_ADDRESS", "MFA_EXEMPT"]
    assert lines[1].split()[:2] == ["alice", "Alice"]
    assert lines[2].split()[0] == "bob" and "Builder" in lines[2]
    assert len(lines) == 3


def test_user_list_of_nobody(config):
    assert run_json(config, "user", "list") == []
    assert admin(config, "user", "list", fmt="table").stdout.strip() == "(none)"


def test_user_set_changes_given_fields_and_clears_with_empty_values(config):
    add_alice(config, *ALL_FLAGS)
    changed = run_json(config, "user", "set", "alice", "--last-name", "Hargreaves", "--expires", "",
                       "--framed-ip", "", "--no-mfa-exempt")
    assert changed["last_name"] == "Hargreaves"
    assert changed["expires_at"] is None and changed["framed_ip_address"] is None
    assert changed["mfa_exempt"] is False
    assert changed["first_name"] == "Alice" and changed["phone"] == "+905554443322"


def test_user_set_password_from_stdin(config):
    add_alice(config)
    admin(config, "user", "set", "alice", "--password-stdin", stdin="Another-Password-99\n")
    database = Database(load_config(str(config), environ={}).database.url)
    try:
        stored = find_user(database, "alice").password_hash
    finally:
        database.dispose()
    hasher = PasswordHasher(SecuritySection())
    assert hasher.verify(stored, b"Another-Password-99")
    assert not hasher.verify(stored, PASSWORD.encode())


def test_user_disable_enable_delete(config):
    add_alice(config)
    assert run_json(config, "user", "disable", "alice")["status"] == "disabled"
    assert run_json(config, "user", "list", "--status", "disabled")[0]["username"] == "alice"
    assert run_json(config, "user", "enable", "alice")["status"] == "active"
    assert run_json(config, "user", "delete", "alice") == {"deleted": "alice"}
    assert stored_usernames(config) == []


def test_duplicate_user_fails_with_one_line(config):
    add_alice(config)
    assert_fails(add_alice(config, check=False), 1, "alice already exists")


def test_unknown_user_fails_with_one_line(config):
    for verb, *rest in [["show"], ["set", "--first-name", "X"], ["disable"], ["enable"], ["delete"]]:
        assert_fails(admin(config, "user", verb, "ghost", *rest, check=False), 1, "user ghost not found")


INVALID_PROFILE_VALUES = [
    (["--phone", "12345"], "phone"),
    (["--phone", "0555444332"], "phone"),
    (["--email", "not-an-email"], "email"),
    (["--sponsor-email", "bob@"], "sponsor_email"),
    (["--framed-ip", "10.0.0.256"], "framed_ip_address"),
    (["--expires", "next tuesday"], "expires_at"),
    (["--expires", "2030-13-01"], "expires_at"),
    (["--reply-attribute", "No-Such-Attribute=1"], "No-Such-Attribute"),
    (["--reply-attribute", "Framed-IP-Address=nope"], "Framed-IP-Address"),
]


def test_invalid_profile_value_fails_with_one_line_and_creates_nothing(config):
    for flags, fragment in INVALID_PROFILE_VALUES:
        assert_fails(add_alice(config, *flags, check=False), 1, fragment)
    assert stored_usernames(config) == []


def test_invalid_value_in_user_set_changes_nothing(config):
    add_alice(config, "--email", "alice@example.com")
    assert_fails(admin(config, "user", "set", "alice", "--email", "broken", check=False), 1, "email")
    assert run_json(config, "user", "show", "alice")["email"] == "alice@example.com"


def test_password_mismatch_on_stdin_fails(config):
    result = admin(config, "user", "add", "alice", "--password-stdin", stdin=f"{PASSWORD}\n{PASSWORD}x\n",
                   check=False)
    assert_fails(result, 1, "confirmation differ")
    assert stored_usernames(config) == []


def test_missing_or_short_password_on_stdin_fails(config):
    for stdin in ["", "\n", "short\n"]:
        result = admin(config, "user", "add", "alice", "--password-stdin", stdin=stdin, check=False)
        assert_fails(result, 1, "assword")
    assert stored_usernames(config) == []


def test_password_is_never_taken_from_argv(config):
    result = admin(config, "user", "add", "alice", "--password", PASSWORD, check=False)
    assert_fails(result, 2, "No such option")
    result = admin(config, "user", "add", "alice", "--password-stdin", PASSWORD, stdin=PASSWORD + "\n", check=False)
    assert_fails(result, 2, "unexpected extra argument")
    assert stored_usernames(config) == []


def test_without_stdin_option_or_terminal_the_password_is_refused(config):
    result = admin(config, "user", "add", "alice", stdin=PASSWORD + "\n", check=False)
    assert_fails(result, 1, "--*-stdin")
    assert stored_usernames(config) == []


USAGE_ERRORS = [
    ["user", "add", "alice", "--bogus"],
    ["user", "add"],
    ["user", "show"],
    ["user", "frobnicate"],
    ["nas", "add", "vpn1", "--secret-stdin"],
    ["user", "list", "--status", "sleeping"],
    ["nas", "add", "vpn1", "--address", "192.0.2.1", "--coa-port", "many"],
    ["user", "add", "alice", "--reply-attribute", "Session-Timeout"],
]


def test_usage_errors_exit_2(config):
    for args in USAGE_ERRORS:
        result = admin(config, *args, stdin=PASSWORD + "\n", check=False)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        assert result.stdout == ""
    result = admin(config, "user", "list", fmt="yaml", check=False)
    assert result.returncode == 2
    assert stored_usernames(config) == []


# -- nas ---------------------------------------------------------------------------------------

def nas_secrets(config) -> dict[str, bytes]:
    """What the server would load: the database NAS entries with decrypted secrets."""
    settings = load_config(str(config), environ={})
    database = Database(settings.database.url)
    try:
        service = NasService(database, SeedKey.load(settings.security.seed_key), settings)
        return {entry.name: entry.secret for entry in service.registry_entries()}
    finally:
        database.dispose()


def test_nas_add_with_generated_secret_prints_it_once(config):
    shown = run_json(config, "nas", "add", "vpn1", "--address", "192.0.2.0/24", "--generate-secret",
                     "--mfa-mode", "append", "--coa-port", "1700")
    secret = shown["secret"]
    assert len(secret) >= 16
    assert shown["name"] == "vpn1" and shown["address"] == "192.0.2.0/24"
    assert shown["mfa_mode"] == "append" and shown["coa_port"] == 1700
    assert nas_secrets(config) == {"vpn1": secret.encode()}

    listed_json = admin(config, "nas", "list").stdout
    listed_table = admin(config, "nas", "list", fmt="table").stdout
    for output in (listed_json, listed_table):
        assert secret not in output
        assert SECRET.decode() not in output  # the config file NAS's secret either
    entries = json.loads(listed_json)
    assert [(entry["name"], entry["origin"]) for entry in entries] == [("test", "config"), ("vpn1", "database")]
    assert all("secret" not in key for entry in entries for key in entry)
    lines = listed_table.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "MFA_MODE", "COA_PORT", "ORIGIN", "MESSAGE_AUTHENTICATOR"]
    assert lines[2].split() == ["vpn1", "192.0.2.0/24", "append", "1700", "database", "unseen"]


def test_nas_list_shows_whether_each_nas_sent_message_authenticator(make_server, radius_client):
    server = make_server(nas=[
        {"name": "modern", "address": "127.0.0.1/32", "secret": SECRET.decode()},
        {"name": "pam-host", "address": "127.0.0.2/32", "secret": SECRET.decode()},
        {"name": "idle", "address": "127.0.0.3/32", "secret": SECRET.decode()}])
    modern, old = radius_client(server.auth_port), radius_client(server.auth_port, source="127.0.0.2")
    assert modern.send(modern.access_request("nobody", "Some-Password-1"))[1].code == 3
    old.send_raw(old.access_request("nobody", "Some-Password-1", message_authenticator=False).RequestPacket())
    old.expect_silence(0.3)  # the NAS entry requires one (the default): dropped
    assert "without Message-Authenticator" in server.log()
    assert server.stop() == 0  # the sightings are written at shutdown at the latest (else once a minute)

    entries = {entry["name"]: entry for entry in run_json(server.config_path, "nas", "list")}
    assert {name: entry["message_authenticator"] for name, entry in entries.items()} == {
        "modern": "yes", "pam-host": "no", "idle": "unseen"}
    assert entries["pam-host"]["without_at"] and entries["pam-host"]["with_at"] is None
    table = admin(server.config_path, "nas", "list", fmt="table").stdout.splitlines()
    assert [line.split()[-1] for line in table[1:]] == ["unseen", "yes", "no"]  # idle, modern, pam-host


def test_nas_add_with_secret_from_stdin(config):
    shown = run_json(config, "nas", "add", "vpn1", "--address", "2001:db8::/32", "--secret-stdin",
                     stdin="stdin-secret-0123456789\n")
    assert "secret" not in shown
    assert nas_secrets(config) == {"vpn1": b"stdin-secret-0123456789"}


def test_nas_add_with_empty_secret_fails(config):
    result = admin(config, "nas", "add", "vpn1", "--address", "192.0.2.1", "--secret-stdin", stdin="\n", check=False)
    assert_fails(result, 1, "secret")
    assert nas_secrets(config) == {}


def test_nas_add_with_short_secret_warns(config):
    result = admin(config, "nas", "add", "vpn1", "--address", "192.0.2.1", "--secret-stdin", stdin="short\n")
    assert "warning" in result.stderr and "shorter" in result.stderr
    assert "short\n" not in result.stdout


def test_nas_add_refuses_both_secret_options(config):
    result = admin(config, "nas", "add", "vpn1", "--address", "192.0.2.1", "--secret-stdin", "--generate-secret",
                   stdin="stdin-secret-0123456789\n", check=False)
    assert result.returncode == 2
    assert nas_secrets(config) == {}


def test_invalid_nas_add_fails_with_one_line(config):
    for args, fragment in [(["vpn1", "--address", "192.0.2.300"], "192.0.2.300"),
                           (["test", "--address", "192.0.2.9"], "configuration file")]:
        result = admin(config, "nas", "add", *args, "--secret-stdin", stdin="stdin-secret-0123456789\n",
                       check=False)
        assert_fails(result, 1, fragment)
    assert nas_secrets(config) == {}


def test_duplicate_nas_fails(config):
    admin(config, "nas", "add", "vpn1", "--address", "192.0.2.1", "--generate-secret")
    result = admin(config, "nas", "add", "vpn1", "--address", "192.0.2.2", "--generate-secret", check=False)
    assert_fails(result, 1, "vpn1 already exists")


def test_nas_rotate_secret(config):
    admin(config, "nas", "add", "vpn1", "--address", "192.0.2.1", "--secret-stdin", stdin="first-secret-0123456789\n")
    shown = run_json(config, "nas", "rotate-secret", "vpn1", "--secret-stdin", stdin="second-secret-0123456789\n")
    assert shown == {"name": "vpn1", "rotated": True}
    assert nas_secrets(config) == {"vpn1": b"second-secret-0123456789"}
    generated = run_json(config, "nas", "rotate-secret", "vpn1", "--generate-secret")["secret"]
    assert nas_secrets(config) == {"vpn1": generated.encode()}


def test_nas_rotate_secret_of_unknown_nas_fails(config):
    result = admin(config, "nas", "rotate-secret", "ghost", "--secret-stdin", stdin="second-secret-0123456789\n",
                   check=False)
    assert_fails(result, 1, "ghost not found")


def test_nas_remove(config):
    admin(config, "nas", "add", "vpn1", "--address", "192.0.2.1", "--generate-secret")
    assert run_json(config, "nas", "remove", "vpn1") == {"removed": "vpn1"}
    assert nas_secrets(config) == {}
    assert_fails(admin(config, "nas", "remove", "vpn1", check=False), 1, "vpn1 not found")


def test_nas_remove_of_a_config_file_nas_fails_clearly(config):
    result = admin(config, "nas", "remove", "test", check=False)
    assert_fails(result, 1, "test", "configuration file")
    assert [entry["name"] for entry in run_json(config, "nas", "list")] == ["test"]


def test_nas_commands_need_the_seed_key(config, tmp_path):
    (tmp_path / "seed.key").unlink()
    result = admin(config, "nas", "add", "vpn1", "--address", "192.0.2.1", "--generate-secret", check=False)
    assert_fails(result, 1, "seed.key")


# -- operator errors: one line, never a traceback (issue 14) -------------------------------------

def error_paths(tmp_path, config) -> list[tuple[list[str], str | None, dict]]:
    """(argv, stdin, expectations) of failures an operator meets; each must be one line."""
    other = tmp_path / "other"
    other.mkdir()
    broken = other / "broken.toml"
    broken.write_text("[database\n")
    missing_db = write_config(other, f"sqlite:///{other / 'absent.db'}")
    (tmp_path / "binary.key").write_bytes(b"\xff\xfe" * 20)
    return [
        (["--config", str(tmp_path / "nowhere.toml"), "user", "list"], None, {"code": 1, "says": "not found"}),
        (["--config", str(broken), "user", "list"], None, {"code": 1, "says": "not valid TOML"}),
        (["--config", str(missing_db), "user", "list"], None, {"code": 1, "says": "db upgrade"}),
        (["--config", str(config), "user", "show", "ghost"], None, {"code": 1, "says": "not found"}),
        (["--config", str(config), "user", "add", "bob", "--password-stdin", "--phone", "12"], "x" * 12 + "\n",
         {"code": 1, "says": "phone"}),
        (["--config", str(config), "user", "add", "bob", "--password-stdin"], "short\n", {"code": 1, "says": "8"}),
        (["--config", str(config), "user", "set", "ghost", "--expires", "tomorrow"], None, {"code": 1}),
        (["--config", str(config), "nas", "add", "x", "--address", "no-address", "--generate-secret"], None,
         {"code": 1, "says": "not an IP address"}),
        (["--config", str(config), "otp", "enroll", "ghost"], None, {"code": 1, "says": "not found"}),
        (["--config", str(config), "otp", "enroll", "alice", "--qr", "png"], None, {"code": 2}),
        (["--config", str(config), "otp", "enroll", "alice", "--qr", f"svg:{tmp_path}/no/such/dir/qr.svg"], None,
         {"code": 1, "says": "No such file"}),
        (["--config", str(config), "export", "users", "-o", f"{tmp_path}/no/such/dir/users.csv"], None,
         {"code": 1, "says": "No such file"}),
        (["--config", str(config), "import", "users", str(tmp_path / "absent.csv")], None, {"code": 2}),
        (["--config", str(config), "db", "rotate-seed-key", "--new-key-file", str(tmp_path / "binary.key")], None,
         {"code": 1, "says": "seed key"}),
        (["--config", str(config), "user", "frobnicate"], None, {"code": 2}),
    ]


def test_no_expected_failure_prints_a_traceback(config, tmp_path):
    add_alice(config)
    for argv, stdin, expected in error_paths(tmp_path, config):
        result = subprocess.run([str(BIN / "radiusd-admin"), *argv], input=stdin, capture_output=True, text=True,
                                timeout=60)
        assert "Traceback" not in result.stderr, (argv, result.stderr)
        assert result.returncode == expected["code"], (argv, result.returncode, result.stderr)
        if expected["code"] == 1:
            assert_fails(result, 1, *([expected["says"]] if "says" in expected else []))


def test_a_wrong_seed_key_is_one_line_not_a_traceback(config, tmp_path):
    add_alice(config)
    admin(config, "otp", "enroll", "alice")
    write_seed_key(tmp_path / "seed.key")  # another valid 32-byte key
    for command in (["otp", "verify", "alice", "123456"], ["nas", "add", "x", "--address", "192.0.2.9",
                                                           "--generate-secret"], ["otp", "enroll", "alice"]):
        assert_fails(admin(config, *command, check=False), 1, "does not open this database's key check value")


def test_rotate_seed_key_re_encrypts_and_the_old_key_is_refused_after(config, tmp_path):
    add_alice(config)
    admin(config, "nas", "add", "vpn1", "--address", "192.0.2.1", "--secret-stdin",
          stdin="first-secret-0123456789\n")
    new_key = tmp_path / "keys" / "new.key"
    done = run_json(config, "db", "rotate-seed-key", "--new-key-file", str(new_key))
    assert done == {"new_key_file": str(new_key), "new_key_created": True, "nas_secrets": 1, "totp_seeds": 0,
                    "operator_seeds": 0}
    assert stat.S_IMODE(new_key.stat().st_mode) == 0o600
    assert_fails(admin(config, "nas", "add", "vpn2", "--address", "192.0.2.2", "--generate-secret", check=False),
                 1, "does not open")
    (tmp_path / "seed.key").write_text(new_key.read_text())
    assert nas_secrets(config) == {"vpn1": b"first-secret-0123456789"}


# -- files: owner-only modes, paths relative to the configuration file --------------------------

def test_files_holding_secrets_are_created_owner_only(tmp_path):
    seed = tmp_path / "fresh" / "seed.key"
    url = f"sqlite:///{tmp_path / 'fresh' / 'radiusd.db'}"
    path = write_config(tmp_path, url, sections={"security": {"seed_key": {"file": str(seed)}}})
    admin(path, "db", "upgrade")
    add_alice(path)
    qr = tmp_path / "alice-qr.svg"
    admin(path, "otp", "enroll", "alice", "--qr", f"svg:{qr}", fmt="table")
    for created in (seed, tmp_path / "fresh" / "radiusd.db", qr):
        assert stat.S_IMODE(created.stat().st_mode) == 0o600, created


def test_relative_paths_in_the_configuration_start_at_its_directory(tmp_path):
    home = tmp_path / "etc"
    home.mkdir()
    (home / "radiusd.toml").write_text(
        'database.url = "sqlite:///var/radiusd.db"\n'
        'security.seed_key = { file = "keys/seed.key" }\n'
        'sms.spool_path = "var/sms.spool"\n'
        '[[nas]]\nname = "lab"\naddress = "127.0.0.1"\nsecret = { file = "nas.secret" }\n')
    (home / "nas.secret").write_text("lab-secret-0123456789\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args, check=True):
        result = subprocess.run([str(BIN / "radiusd-admin"), "--format", "json", *args], cwd=elsewhere,
                                env={**os.environ, "RADIUSD_CONFIG": str(home / "radiusd.toml")},
                                capture_output=True, text=True, timeout=60)
        assert not check or result.returncode == 0, result.stderr
        return result

    assert_fails(run("user", "list", check=False), 1, "does not exist", "radiusd-admin db upgrade")
    assert list(elsewhere.iterdir()) == [], "no database may be created outside db upgrade"
    run("db", "upgrade")
    assert (home / "var" / "radiusd.db").exists() and (home / "keys" / "seed.key").exists()
    assert json.loads(run("user", "list").stdout) == []
    assert [entry["name"] for entry in json.loads(run("nas", "list").stdout)] == ["lab"]
    assert list(elsewhere.iterdir()) == []


def test_the_qr_svg_is_large_enough_to_scan_off_a_screen(config, tmp_path):
    add_alice(config)
    qr = tmp_path / "qr.svg"
    admin(config, "otp", "enroll", "alice", "--qr", f"svg:{qr}", fmt="table")
    width = int(re.search(r'<svg[^>]* width="(\d+)"', qr.read_text()).group(1))
    assert width >= 300, width


def test_one_password_rule_counted_in_bytes(config):
    assert_fails(add_alice(config, password="äöü", check=False), 1, "8 to 128 bytes")  # 3 characters, 6 bytes
    assert not stored_usernames(config)
    add_alice(config, password="äöüä")  # 4 characters, 8 bytes: the rule is bytes
    assert stored_usernames(config) == ["alice"]


def test_a_framed_ip_address_already_assigned_is_refused_naming_its_user(config):
    add_alice(config, "--framed-ip", "10.9.0.1")
    result = admin(config, "user", "add", "bob", "--password-stdin", "--framed-ip", "10.9.0.1",
                   stdin=PASSWORD + "\n", check=False)
    assert_fails(result, 1, "10.9.0.1", "alice")
    admin(config, "user", "add", "bob", "--password-stdin", stdin=PASSWORD + "\n")
    assert_fails(admin(config, "user", "set", "bob", "--framed-ip", "10.9.0.1", check=False), 1, "alice")
    admin(config, "user", "set", "alice", "--framed-ip", "10.9.0.1")  # its own address: unchanged, fine


# -- operator ----------------------------------------------------------------------------------

def add_operator(config, name, role, *, password=PASSWORD, check=True):
    return admin(config, "operator", "add", name, "--role", role, "--password-stdin", stdin=password + "\n",
                 check=check)


def test_operator_add_list_set_role_and_remove(config):
    added = json.loads(add_operator(config, "root", "admin").stdout)
    assert (added["name"], added["role"], added["mfa"], added["status"]) == ("root", "admin", "none", "active")
    assert PASSWORD not in json.dumps(added)
    add_operator(config, "helen", "helpdesk")
    assert [(o["name"], o["role"]) for o in run_json(config, "operator", "list")] == \
        [("helen", "helpdesk"), ("root", "admin")]
    assert run_json(config, "operator", "set-role", "helen", "auditor")["role"] == "auditor"
    assert run_json(config, "operator", "reset-mfa", "helen")["mfa"] == "none"
    assert run_json(config, "operator", "remove", "helen") == {"removed": "helen"}
    table = admin(config, "operator", "list", fmt="table").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "ROLE", "MFA", "STATUS"] and table[1].split()[:2] == ["root", "admin"]


def test_operator_errors_are_one_line_with_exit_1(config):
    add_operator(config, "root", "admin")
    assert_fails(add_operator(config, "root", "auditor", check=False), 1, "operator root exists")
    assert_fails(add_operator(config, "weak", "auditor", password="short", check=False), 1, "8 to 128 bytes")
    assert_fails(admin(config, "operator", "remove", "root", check=False), 1, "last admin")
    assert_fails(admin(config, "operator", "set-role", "root", "helpdesk", check=False), 1, "last admin")
    assert_fails(admin(config, "operator", "reset-mfa", "nobody", check=False), 1, "operator nobody not found")
    assert_fails(admin(config, "operator", "unblock", "root", check=False), 1, "block root not found")


def test_operator_usage_errors_exit_2_and_the_password_is_never_an_argument(config):
    assert_fails(admin(config, "operator", "add", "root", "--role", "owner", "--password-stdin", stdin=PASSWORD,
                       check=False), 2, "owner")
    assert_fails(admin(config, "operator", "add", "root", "--password-stdin", stdin=PASSWORD, check=False), 2,
                 "--role")
    assert_fails(admin(config, "operator", "add", "root", "--role", "admin", "--password", PASSWORD,
                       check=False), 2, "No such option")
    # no terminal and no --password-stdin: refused, nothing created
    assert_fails(admin(config, "operator", "add", "root", "--role", "admin", check=False), 1, "--*-stdin")
    assert run_json(config, "operator", "list") == []
