"""``radiusd`` as a process: check-config, plugins, serve, SIGTERM, SIGHUP, the ops site."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone

import pytest
from sqlalchemy import insert

from radiusd.config import load_config
from radiusd.crypto import SeedKey
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import users
from radiusd.plugin import hook_names
from radiusd.services.nas import NasService
from tests.support import BIN, SECRET, ServerProcess, admin, drop_database, wait_for, write_config, write_seed_key

PASSWORD = "Correct-Horse-7731"
LOCAL_SECRET = "local-secret-0123456789"


def radiusd(config, *args, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RADIUSD_")}
    return subprocess.run([str(BIN / "radiusd"), "--config", str(config), *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode != 0, (result.stdout, result.stderr)
    message = result.stderr.strip()
    assert message.startswith("radiusd: "), message
    assert "\n" not in message, f"not one line: {message!r}"
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def upgrade(url: str) -> None:
    database = Database(url)
    try:
        migrate.upgrade(database)
    finally:
        database.dispose()


@pytest.fixture
def config(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url)
    upgrade(sqlite_url)
    return path


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_for_log(server: ServerProcess, text: str, timeout: float = 15) -> dict:
    """The first JSON log record whose message contains ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.log().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if text in record.get("message", ""):
                return record
        time.sleep(0.1)
    raise AssertionError(f"no log line with {text!r}: {server.log()}")


# -- check-config ------------------------------------------------------------------------------

def test_check_config_accepts_a_good_configuration(config):
    result = radiusd(config, "check-config")
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert "1 NAS entries" in result.stdout


def test_check_config_refuses_an_unknown_key(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url, sections={"mfa": {"totp_windw": 2}})
    upgrade(sqlite_url)
    assert_refused(radiusd(path, "check-config"), "unknown configuration key mfa.totp_windw")


def test_check_config_refuses_an_unknown_key_in_a_disabled_plugins_section(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url, sections={"push": {"webhook_ulr": "https://relay.example/"},
                                                        "plugins": {"disabled": ["push"]}})
    upgrade(sqlite_url)
    assert_refused(radiusd(path, "check-config"), "unknown configuration key push.webhook_ulr")


def test_check_config_refuses_a_missing_seed_key_file_and_says_db_upgrade_creates_it(config, tmp_path):
    (tmp_path / "seed.key").unlink()
    assert_refused(radiusd(config, "check-config"), "[security] seed_key", f"seed key file {tmp_path / 'seed.key'}",
                   "does not exist", "`radiusd-admin db upgrade` creates it")


@pytest.mark.parametrize("content", [b"\xff" + os.urandom(31), b"c2hvcnQ=\n", b"not base64 at all!\n"],
                         ids=["binary", "short", "not-base64"])
def test_check_config_refuses_a_seed_key_file_that_holds_no_seed_key_in_one_line(config, tmp_path, content):
    (tmp_path / "seed.key").write_bytes(content)
    message = assert_refused(radiusd(config, "check-config"), "[security] seed_key",
                             "32 random bytes, base64-encoded")
    assert "Error" not in message  # no exception name: UnicodeDecodeError, binascii.Error


@pytest.mark.parametrize("url,fragments", [
    ("mysql://radiusd:pw@127.0.0.1/radiusd", ("database.url", "mysql databases are not supported",
                                               "sqlite:///PATH or postgresql+psycopg://")),
    ("postgresql+psycopg2://radiusd@127.0.0.1/radiusd", ("database.url", "postgresql+psycopg://radiusd@")),
    ("no-scheme-here", ("database.url", "not a database URL")),
])
def test_check_config_refuses_an_unsupported_database_url_with_the_fix(tmp_path, url, fragments):
    message = assert_refused(radiusd(write_config(tmp_path, url), "check-config"), *fragments)
    assert "ModuleNotFoundError" not in message and "Value error" not in message


def test_check_config_refuses_a_database_without_the_schema(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url)
    assert_refused(radiusd(path, "check-config"), "schema is not current", "radiusd-admin db upgrade")


def test_check_config_refuses_an_unreachable_database(tmp_path):
    path = write_config(tmp_path, "postgresql+psycopg://radiusd@127.0.0.1:1/radiusd")
    started = time.monotonic()
    assert_refused(radiusd(path, "check-config"), "database unreachable")
    assert time.monotonic() - started < 30


def test_check_config_refuses_a_stored_reply_attribute_the_dictionary_lacks(config, sqlite_url):
    database = Database(sqlite_url)
    now = datetime.now(timezone.utc)
    try:
        with database.writer.begin() as conn:
            conn.execute(insert(users).values(
                username="alice", enabled=True, mfa_exempt=False, created_at=now, updated_at=now,
                reply_attributes=[{"name": "Session-Timeout", "value": "60"},
                                  {"name": "Acme-Unknown-Attribute", "value": "1"}]))
    finally:
        database.dispose()
    assert_refused(radiusd(config, "check-config"), "alice", "Acme-Unknown-Attribute")


def test_check_config_refuses_a_nas_secret_that_does_not_decrypt(config, tmp_path, sqlite_url):
    settings = load_config(str(config), environ={})
    database = Database(sqlite_url)
    try:
        NasService(database, SeedKey.load(settings.security.seed_key), settings).add(
            "vpn1", "192.0.2.1", "nas-secret-0123456789")
    finally:
        database.dispose()
    (tmp_path / "seed.key").unlink()
    upgrade = admin(config, "db", "upgrade", check=False)  # writes a new, different seed key, and refuses it
    assert upgrade.returncode == 1 and "does not decrypt the secrets stored" in upgrade.stderr, upgrade.stderr
    assert_refused(radiusd(config, "check-config"), "does not decrypt the secrets stored in this database")


def test_check_config_refuses_a_bad_config_nas(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url, nas=[{"name": "a", "address": "127.0.0.1", "secret": ""}])
    upgrade(sqlite_url)
    assert_refused(radiusd(path, "check-config"), "secret is empty")


# -- plugins -----------------------------------------------------------------------------------

def hook_lines(result: subprocess.CompletedProcess) -> dict[str, list[str]]:
    assert result.returncode == 0, result.stderr
    hooks = {}
    for line in result.stdout.splitlines():
        hook, _, names = line.partition(": ")
        hooks[hook] = [] if names == "-" else names.split(", ")
    return hooks


BUILTIN_ORDER = ["account_state", "local_users", "audit"]


def assert_config_order(hooks: dict[str, list[str]], order: list[str]) -> None:
    for hook, names in hooks.items():
        assert names == [name for name in order if name in names], (hook, names, order)


def test_plugins_lists_each_hook_in_the_configured_order(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url, sections={"plugins": {"order": BUILTIN_ORDER}})
    hooks = hook_lines(radiusd(path, "plugins"))
    assert list(hooks) == hook_names()  # in the order the pipeline calls them
    assert {"radiusd_find_user", "radiusd_check_account", "radiusd_authenticate", "radiusd_second_factor",
            "radiusd_reply_attributes", "radiusd_post_auth"} <= set(hooks)
    assert hooks["radiusd_find_user"] == ["local_users"]
    assert hooks["radiusd_check_account"] == ["account_state"]
    assert hooks["radiusd_authenticate"] == ["local_users"]
    assert hooks["radiusd_post_auth"][-2:] == ["local_users", "audit"]
    assert_config_order(hooks, BUILTIN_ORDER)


def test_plugins_order_follows_the_configuration(tmp_path, sqlite_url):
    reordered = ["audit", "local_users", "account_state"]
    default = hook_lines(radiusd(write_config(tmp_path, sqlite_url,
                                              sections={"plugins": {"order": BUILTIN_ORDER}}), "plugins"))
    path = write_config(tmp_path, sqlite_url, sections={"plugins": {"order": reordered}})
    hooks = hook_lines(radiusd(path, "plugins"))
    assert hooks["radiusd_post_auth"][:2] == ["audit", "local_users"]
    assert_config_order(hooks, reordered)
    assert {hook: sorted(names) for hook, names in hooks.items()} == \
        {hook: sorted(names) for hook, names in default.items()}


def test_disabled_plugin_is_not_listed(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url, sections={"plugins": {"order": BUILTIN_ORDER,
                                                                    "disabled": ["audit"]}})
    hooks = hook_lines(radiusd(path, "plugins"))
    assert "local_users" in hooks["radiusd_post_auth"]
    assert all("audit" not in names for names in hooks.values())


def test_plugins_refuses_an_unknown_plugin(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url,
                        sections={"plugins": {"order": ["account_state", "local_users", "no_such_plugin"]}})
    assert_refused(radiusd(path, "plugins"), "no_such_plugin")
    upgrade(sqlite_url)
    assert_refused(radiusd(path, "check-config"), "no_such_plugin")


def test_plugins_refuses_disabling_a_plugin_not_in_order(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url, sections={"plugins": {
        "order": ["account_state", "local_users"], "disabled": ["audit"]}})
    assert_refused(radiusd(path, "plugins"), "audit")


def test_plugins_refuses_an_order_that_checks_no_account_state(tmp_path, sqlite_url):
    # without account_state, disabled, expired and blocked users would be accepted
    path = write_config(tmp_path, sqlite_url, sections={"plugins": {
        "order": ["account_state", "local_users", "audit"], "disabled": ["account_state"]}})
    assert_refused(radiusd(path, "plugins"), "account state")
    upgrade(sqlite_url)
    assert_refused(radiusd(path, "serve", timeout=30), "account state")


# -- serve -------------------------------------------------------------------------------------

def test_serve_refuses_to_start_without_the_seed_key(config, tmp_path):
    (tmp_path / "seed.key").unlink()
    assert_refused(radiusd(config, "serve", timeout=30), "seed.key")


def test_serve_refuses_to_start_on_an_old_schema(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url)
    assert_refused(radiusd(path, "serve", timeout=30), "radiusd-admin db upgrade")


def test_serve_refuses_to_start_with_an_unusable_nas_entry(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url, nas=[{"name": "a", "address": "127.0.0.1", "secret": ""}])
    upgrade(sqlite_url)
    assert_refused(radiusd(path, "serve", timeout=30), "cannot start", "secret is empty")


def test_serve_refuses_to_start_when_the_auth_port_is_taken(config):
    port = load_config(str(config), environ={}).server.auth_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))
        assert_refused(radiusd(config, "serve", timeout=30), "cannot start",
                       f"[server] auth_port {port} on 127.0.0.1 is already in use", "set another [server] auth_port")


def test_serve_names_the_ops_port_when_it_is_taken(config):
    port = load_config(str(config), environ={}).ops.port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        assert_refused(radiusd(config, "serve", timeout=30), f"[ops] port {port} on 127.0.0.1 is already in use")


def test_sigterm_finishes_the_request_in_flight_then_exits_0(make_server, radius_client):
    server = make_server(sections={"server": {"reject_delay_seconds": 2}})
    admin(server.config_path, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    client = radius_client(server.auth_port, timeout=10)
    request = client.access_request("alice", "Wrong-Password-000")
    wire = request.RequestPacket()
    sent = time.monotonic()
    client.send_raw(wire)
    wait_for_log(server, "Login incorrect")  # decided; the Reject now waits for its delay
    server.signal(signal.SIGTERM)
    reply = client.receive(request, wire)
    assert reply.code == 3
    assert time.monotonic() - sent >= 1.9
    assert server.process.wait(20) == 0
    assert "stopping: finishing requests in progress" in server.log()


def test_sighup_loads_a_nas_added_with_the_admin_cli(make_server, radius_client):
    server = make_server(nas=[{"name": "elsewhere", "address": "127.0.0.2/32", "secret": SECRET.decode()}])
    stranger = radius_client(server.auth_port, secret=LOCAL_SECRET.encode())
    stranger.send_raw(stranger.status_server().RequestPacket())
    stranger.expect_silence(0.5)  # 127.0.0.1 is not a NAS yet: dropped

    admin(server.config_path, "nas", "add", "local", "--address", "127.0.0.1", "--secret-stdin",
          stdin=LOCAL_SECRET + "\n")
    stranger.send_raw(stranger.status_server().RequestPacket())
    stranger.expect_silence(0.5)  # nothing changes before SIGHUP

    server.signal(signal.SIGHUP)
    assert wait_for_log(server, "reloaded 2 NAS entries")
    client = radius_client(server.auth_port, secret=LOCAL_SECRET.encode())
    _, reply = client.send(client.status_server())
    assert reply.code == 2
    _, reply = client.send(client.access_request("nobody", "Some-Password-1"))
    assert reply.code == 3
    assert server.metric("radiusd_dropped_packets_total", reason="unknown_client", client="unknown") >= 2


def test_sighup_with_a_broken_config_keeps_the_old_nas_list(make_server, radius_client):
    server = make_server()
    good = server.config_path.read_text()
    client = radius_client(server.auth_port)
    assert client.send(client.status_server())[1].code == 2

    server.config_path.write_text(good.replace(SECRET.decode(), "changed-secret-0123456789")
                                  + "\n[no_such_section]\nkey = 1\n")
    server.signal(signal.SIGHUP)
    record = wait_for_log(server, "reload failed, keeping the previous NAS list")
    assert "no_such_section" in record["message"]
    assert server.process.poll() is None
    assert client.send(client.status_server())[1].code == 2  # the old secret still works

    server.config_path.write_text(good.replace(SECRET.decode(), "changed-secret-0123456789"))
    server.signal(signal.SIGHUP)
    wait_for_log(server, "reloaded 1 NAS entries")
    client.send_raw(client.status_server().RequestPacket())
    client.expect_silence(0.5)  # the old secret no longer verifies: dropped
    changed = radius_client(server.auth_port, secret=b"changed-secret-0123456789")
    assert changed.send(changed.status_server())[1].code == 2
    assert server.stop() == 0


def acme_dictionary(directory, number: int, kind: str = "string"):
    """``dictionary.local``, which $INCLUDEs ``dictionary.acme`` (vendor 64999, Acme-Role = ``number``)."""
    (directory / "dictionary.acme").write_text(
        f"VENDOR Acme 64999\nBEGIN-VENDOR Acme\nATTRIBUTE Acme-Role {number} {kind}\nEND-VENDOR Acme\n")
    path = directory / "dictionary.local"
    path.write_text("$INCLUDE dictionary.acme\n")
    return path


def acme_role(number: int, value: bytes) -> bytes:
    return bytes((26, 8 + len(value))) + (64999).to_bytes(4, "big") + bytes((number, 2 + len(value))) + value


def test_sighup_reads_the_extra_dictionaries_again_and_a_broken_one_keeps_the_old(make_server, radius_client,
                                                                                   tmp_path):
    path = acme_dictionary(tmp_path, 1)
    server = make_server(sections={"server": {"dictionaries": [str(path)]}})
    admin(server.config_path, "user", "add", "dave", "--password-stdin", "--reply-attribute", "Acme-Role=admins",
          stdin=PASSWORD + "\n")
    client = radius_client(server.auth_port)
    assert acme_role(1, b"admins") in client.send(client.access_request("dave", PASSWORD))[1].raw_packet

    acme_dictionary(tmp_path, 7)
    server.signal(signal.SIGHUP)
    assert wait_for(lambda: "reloaded 1 NAS entries and 2 dictionary files" in server.log())
    assert acme_role(7, b"admins") in client.send(client.access_request("dave", PASSWORD))[1].raw_packet

    acme_dictionary(tmp_path, 9, kind="nonsense")
    server.signal(signal.SIGHUP)
    record = wait_for_log(server, "reload failed, keeping the previous NAS list and dictionaries")
    assert "[server] dictionaries" in record["message"] and "nonsense" in record["message"]
    assert acme_role(7, b"admins") in client.send(client.access_request("dave", PASSWORD))[1].raw_packet
    assert_refused(radiusd(server.config_path, "check-config"), "[server] dictionaries", "dictionary.acme",
                   "Illegal type: nonsense")
    assert server.stop() == 0


# -- ops site ----------------------------------------------------------------------------------

def test_livez_readyz_and_metrics(make_server):
    server = make_server()
    status, body = http_get(server.ops_url + "/livez")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, body = http_get(server.ops_url + "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, body = http_get(server.ops_url + "/metrics")
    assert status == 200
    from radiusd import __version__

    assert f'radiusd_build_info{{version="{__version__}"}} 1.0' in body.decode()
    assert server.metric("radiusd_build_info", version=__version__) == 1.0
    assert http_get(server.ops_url + "/nothing-here")[0] == 404


def test_readyz_turns_503_with_the_failing_check_when_the_database_goes_away(postgres_url, make_server,
                                                                             radius_client):
    server = make_server(postgres_url)
    assert http_get(server.ops_url + "/readyz")[0] == 200
    client = radius_client(server.auth_port)
    assert client.send(client.status_server())[1].code == 2

    drop_database(postgres_url)
    deadline = time.monotonic() + 20  # the health monitor polls every 2 s
    while True:
        status, body = http_get(server.ops_url + "/readyz")
        if status != 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 503, body
    document = json.loads(body)
    assert document["status"] == "unavailable"
    assert list(document["failing"]) == ["database"]
    assert "unreachable" in document["failing"]["database"]
    assert http_get(server.ops_url + "/livez")[0] == 200  # alive, just not ready

    client.send_raw(client.status_server().RequestPacket())
    client.expect_silence(0.5)  # Status-Server is not answered while not ready
    assert server.stop() == 0



# -- operator setup (issue 14): the seed key check, file modes, quiet scrapes ----------------------

def test_check_config_and_serve_refuse_a_seed_key_that_does_not_open_the_database(tmp_path, sqlite_url):
    path = write_config(tmp_path, sqlite_url)
    admin(path, "db", "upgrade")  # writes the key check value
    write_seed_key(tmp_path / "seed.key")  # another valid 32-byte key
    for command in ("check-config", "serve"):
        assert_refused(radiusd(path, command), "does not open this database's key check value")


def test_check_config_warns_when_the_database_or_seed_key_is_readable_by_others(config, tmp_path):
    (tmp_path / "seed.key").chmod(0o644)
    (tmp_path / "radiusd.db").chmod(0o640)
    result = radiusd(config, "check-config")
    assert result.returncode == 0, result.stderr
    assert "seed.key is readable by other users (mode 0644)" in result.stderr
    assert "radiusd.db is readable by other users (mode 0640)" in result.stderr


def test_the_server_runs_with_an_owner_only_umask_and_logs_scrapes_at_debug(make_server):
    server = make_server()
    with open(f"/proc/{server.process.pid}/status") as status:
        assert "Umask:\t0077" in status.read()
    for _ in range(3):
        assert http_get(server.ops_url + "/metrics")[0] == 200
    database = server.config_path.parent / "radiusd.db"
    for name in (database, database.with_name("radiusd.db-wal"), database.with_name("radiusd.db-shm")):
        if name.exists():
            assert oct(name.stat().st_mode & 0o777) == "0o600", name
    time.sleep(0.5)
    assert "/metrics" not in server.log()
