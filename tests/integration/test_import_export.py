"""``radiusd-admin import users`` / ``export users`` / ``user bulk-*`` as operators run them,
against a real ``radiusd serve``: imported users (plaintext, argon2 and bcrypt hashes) log in
over RADIUS, a bcrypt hash becomes argon2id at the first login, an apply is all or nothing,
the export imports again as it is, and the benchmark kit's file works."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from sqlalchemy import select

from radiusd.config import SecuritySection
from radiusd.crypto import PasswordHasher
from radiusd.db.engine import Database
from radiusd.db.tables import users
from tests.support import BIN, ROOT, RadiusClient, ServerProcess, admin, write_config

ACCEPT, REJECT = 2, 3
PASSWORD = "Correct-Horse-7731"
BENCH_KIT = ROOT.parent / "shared" / "bench"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("import")
    config = write_config(directory, f"sqlite:///{directory / 'radiusd.db'}")
    admin(config, "db", "upgrade")
    started = ServerProcess(config, directory / "radiusd.log").start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def database(server):
    database = Database(server.settings["database"]["url"], pool_size=2)
    yield database
    database.dispose()


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(rows)
    return path


def login(server, username: str, password: str):
    client = RadiusClient(server.auth_port)
    try:
        return client.send(client.access_request(username, password))[1]
    finally:
        client.close()


def stored_hash(database, username: str) -> str | None:
    with database.engine.connect() as conn:
        return conn.execute(select(users.c.password_hash).where(users.c.username == username)).scalar()


def import_json(server, path: Path, *options: str, check: bool = True) -> tuple[dict, subprocess.CompletedProcess]:
    result = admin(server.config_path, "import", "users", str(path), *options, check=check)
    return json.loads(result.stdout), result


def test_imported_users_log_in_over_radius_and_bcrypt_becomes_argon2id(server, database, tmp_path):
    argon2_hash = PasswordHasher(SecuritySection()).hash("argon2-password")
    bcrypt_hash = bcrypt.hashpw(b"bcrypt-password", bcrypt.gensalt(4)).decode()
    path = write_csv(tmp_path / "users.csv", [
        ["username", "password", "password_hash", "framed_ip_address", "mfa_exempt", "reply_attributes"],
        ["imp-plain", PASSWORD, "", "10.40.0.1", "true", "Session-Timeout=600"],
        ["imp-argon2", "", argon2_hash, "10.40.0.2", "true", ""],
        ["imp-bcrypt", "", bcrypt_hash, "10.40.0.3", "true", ""],
    ])
    dry, _ = import_json(server, path)
    assert dry["dry_run"] is True and dry["created"] == 3 and stored_hash(database, "imp-plain") is None
    report, _ = import_json(server, path, "--apply")
    assert report["applied"] is True and report["created"] == 3

    reply = login(server, "imp-plain", PASSWORD)
    assert reply.code == ACCEPT
    assert reply["Framed-IP-Address"] == ["10.40.0.1"] and reply["Session-Timeout"] == [600]
    assert login(server, "imp-argon2", "argon2-password").code == ACCEPT
    assert login(server, "imp-argon2", "wrong-password").code == REJECT

    assert stored_hash(database, "imp-bcrypt").startswith("$2b$")
    assert login(server, "imp-bcrypt", "bcrypt-password").code == ACCEPT
    upgraded = stored_hash(database, "imp-bcrypt")
    assert upgraded.startswith("$argon2id$") and "m=19456,t=2,p=1" in upgraded
    assert login(server, "imp-bcrypt", "bcrypt-password").code == ACCEPT  # and it still logs in
    assert login(server, "imp-bcrypt", "wrong-password").code == REJECT


def test_one_bad_line_with_apply_writes_nothing_and_exits_1(server, database, tmp_path):
    path = write_csv(tmp_path / "bad.csv", [["username", "password", "framed_ip_address"],
                                             ["aon-1", PASSWORD, "10.41.0.1"], ["aon-2", PASSWORD, "10.41.0.300"],
                                             ["aon-3", PASSWORD, "10.41.0.3"]])
    report, result = import_json(server, path, "--apply", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"radiusd-admin: 1 error in {path}; nothing was imported"
    assert report["applied"] is False
    assert report["errors"] == [{"line": 3, "column": "framed_ip_address",
                                 "message": "framed_ip_address: Framed-IP-Address must be an IPv4 address, "
                                            "user-selects or nas-assigns"}]
    assert all(stored_hash(database, name) is None for name in ("aon-1", "aon-3"))
    assert login(server, "aon-1", PASSWORD).code == REJECT
    assert PASSWORD not in result.stdout + result.stderr


def test_table_output_lists_each_error_by_line_and_column(server, tmp_path):
    path = write_csv(tmp_path / "t.csv", [["username", "email", "colour"], ["tab-1", "nope", "blue"]])
    result = admin(server.config_path, "import", "users", str(path), fmt="table", check=False)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert "error_count: 2" in lines
    assert any(line.split()[:2] == ["1", "colour"] for line in lines)
    assert any(line.split()[:2] == ["2", "email"] for line in lines)


def test_export_then_import_reproduces_the_users(server, tmp_path):
    config = server.config_path
    admin(config, "user", "add", "rt-ada", "--password-stdin", "--first-name", "Ada", "--email", "ada@example.com",
          "--phone", "+905554443322", "--expires", "2031-05-06T07:08:09Z", "--framed-ip", "10.42.0.1",
          "--description", "=1+2, \"quoted\"\nnext line", "--mfa-exempt",
          "--reply-attribute", "Reply-Message=hi;there", stdin=PASSWORD + "\n")
    admin(config, "user", "add", "rt-off", "--password-stdin", "--sponsor-name", "@boss", stdin=PASSWORD + "\n")
    admin(config, "user", "disable", "rt-off")
    exported = tmp_path / "export.csv"
    shown = json.loads(admin(config, "export", "users", "--output", str(exported)).stdout)
    assert shown["output"] == str(exported) and shown["users"] >= 2
    assert exported.stat().st_mode & 0o777 == 0o600
    text = exported.read_text(encoding="utf-8")
    assert "'=1+2" in text and "'@boss" in text and "$argon2" not in text and "$2b$" not in text
    assert admin(config, "export", "users", fmt="table").stdout == text  # standard output: the same file

    other = write_config(tmp_path, f"sqlite:///{tmp_path / 'other.db'}")
    admin(other, "db", "upgrade")
    report = json.loads(admin(other, "import", "users", str(exported), "--apply").stdout)
    assert report["created"] == shown["users"] and report["error_count"] == 0
    for name in ("rt-ada", "rt-off"):
        original = json.loads(admin(config, "user", "show", name).stdout)
        copied = json.loads(admin(other, "user", "show", name).stdout)
        for key in ("created_at", "updated_at", "last_login_at"):
            original.pop(key), copied.pop(key)
        assert copied == original
    again = admin(other, "export", "users", fmt="table").stdout
    rows = lambda text: [row[:13] for row in csv.reader(io.StringIO(text, newline=""))]  # noqa: E731
    assert rows(again) == rows(text)


def test_on_conflict_skip_and_update_from_the_cli(server, tmp_path):
    first = write_csv(tmp_path / "a.csv", [["username", "first_name"], ["oc-1", "One"]])
    import_json(server, first, "--apply")
    second = write_csv(tmp_path / "b.csv", [["username", "first_name"], ["oc-1", "Uno"], ["oc-2", "Two"]])
    report, result = import_json(server, second, "--apply", check=False)
    assert result.returncode == 1 and report["errors"][0]["column"] == "username"
    report, _ = import_json(server, second, "--apply", "--on-conflict", "skip")
    assert (report["created"], report["skipped"]) == (1, 1)
    report, _ = import_json(server, second, "--apply", "--on-conflict", "update")
    assert report["updated"] == 2
    assert json.loads(admin(server.config_path, "user", "show", "oc-1").stdout)["first_name"] == "Uno"


def test_bulk_password_reset_and_expiration_take_effect_over_radius(server, tmp_path):
    config = server.config_path
    path = write_csv(tmp_path / "b.csv", [["username", "password", "mfa_exempt"],
                                           ["br-1", PASSWORD, "true"], ["br-2", PASSWORD, "true"]])
    import_json(server, path, "--apply")
    reset = json.loads(admin(config, "user", "bulk-password-reset", "br-1", "br-2").stdout)
    passwords = {item["username"]: item["password"] for item in reset["items"]}
    assert reset["count"] == 2 and set(passwords) == {"br-1", "br-2"}
    assert login(server, "br-1", PASSWORD).code == REJECT
    assert login(server, "br-1", passwords["br-1"]).code == ACCEPT

    expired = json.loads(admin(config, "user", "bulk-expire", "br-1", "br-2", "--expires", "2001-01-01").stdout)
    assert expired["expired"] is True and {item["status"] for item in expired["items"]} == {"expired"}
    assert login(server, "br-2", passwords["br-2"]).code == REJECT
    admin(config, "user", "bulk-expire", "br-1", "br-2", "--expires", "2040-01-01T00:00:00Z")
    assert login(server, "br-2", passwords["br-2"]).code == ACCEPT

    usage = admin(config, "user", "bulk-password-reset", "br-1", "--status", "active", check=False)
    assert usage.returncode == 2
    missing = admin(config, "user", "bulk-expire", "br-1", "ghost", "--expires", "2001-01-01", check=False)
    assert missing.returncode == 1 and "user ghost not found" in missing.stderr
    assert json.loads(admin(config, "user", "show", "br-1").stdout)["status"] == "active"  # all or none


def test_the_benchmark_kit_file_imports_and_logs_in(server, tmp_path):
    """The kit's ``gen_users.py --format radiusd-csv`` (plaintext passwords; a few lines of it)."""
    generator = BENCH_KIT / "gen_users.py"
    if not generator.exists():
        pytest.skip(f"the benchmark kit is not at {BENCH_KIT}")
    lines = subprocess.run([sys.executable, str(generator), "--format", "radiusd-csv", "-n", "1000"],
                           capture_output=True, text=True, check=True).stdout.splitlines(keepends=True)
    path = tmp_path / "bench-users.csv"
    path.write_text("".join(lines[:9]), encoding="utf-8", newline="")  # the header and user0000..user0007
    report, _ = import_json(server, path, "--apply")
    assert report["created"] == 8 and report["passwords_to_hash"] == 8
    reply = login(server, "user0001", "pw-1-bench")
    assert reply.code == ACCEPT and reply["Framed-IP-Address"] == ["10.100.0.2"]


def test_the_progress_bar_is_drawn_on_a_terminal_only(server, tmp_path):
    path = write_csv(tmp_path / "p.csv", [["username", "password"], ["pb-1", PASSWORD], ["pb-2", PASSWORD]])
    primary, secondary = pty.openpty()
    try:
        command = [str(BIN / "radiusd-admin"), "--config", str(server.config_path),
                   "--format", "json", "import", "users", str(path), "--apply"]
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=secondary, stdin=subprocess.DEVNULL,
                                timeout=60)
        os.close(secondary)
        secondary = None
        drawn = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the terminal closed
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(primary)
        if secondary is not None:
            os.close(secondary)
    assert result.returncode == 0 and json.loads(result.stdout)["created"] == 2
    assert b"hashing passwords" in drawn and b"100%" in drawn
    plain = admin(server.config_path, "import", "users", str(path), "--apply", "--on-conflict", "update")
    assert "hashing" not in plain.stderr  # not a terminal: no bar
