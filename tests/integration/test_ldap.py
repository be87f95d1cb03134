"""The directory backend (SPEC §8, issue 9) against a real OpenLDAP ``slapd``.

One module-wide slapd (``tests.ldap_fixture``: people, groupOfNames groups, memberOf, LDAPS and
StartTLS with a test CA) serves every test. The directory client is exercised directly (filter
escaping, memberOf, TLS verification, timeouts, reconnecting), then end to end over real UDP
against one module-wide ``radiusd serve`` whose first LDAP URL is a closed port and whose second
is the slapd's ``ldaps://`` one; servers with broken directories are started where needed.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from radiusd.config import load_config
from radiusd.crypto import PasswordHasher
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.decisions import Reason
from radiusd.dictionary import RadiusDictionary
from radiusd.directory import Directory
from radiusd.errors import BackendError
from radiusd.plugins.ldap_users import LdapSection
from radiusd.services.users import UserService
from tests.ldap_fixture import (GROUPS, PEOPLE, SERVICE_DN, SERVICE_PASSWORD, USERS, Slapd, user_dn)
from tests.faultproxy import FaultProxy, upstream_of
from tests.support import (ACCEPT, REJECT, BIN, RadiusClient, ServerProcess, admin, answer, challenge_state, decisions,
                           enrol_verified, free_port, login, write_config)

ORDER = ["account_state", "local_users", "ldap_users", "totp", "sms_otp", "audit"]
LOCAL_PASSWORD = "local-erin-password"
GROUP_REPLY_ATTRIBUTES = {
    "vpn-admins": [{"name": "Class", "value": "admins"}, {"name": "Fortinet-Group-Name", "value": "admins"}],
    "vpn-users": [{"name": "Filter-Id", "value": "vpn"}],
}
INJECTIONS = ["*", "alice)(uid=*", "*)(uid=*", "*)(|(uid=*", "admin*", "al*", "alice\\", "alice\x00"]


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    server = Slapd.start(tmp_path_factory.mktemp("slapd"))
    yield server
    server.stop()


def closed_url() -> str:
    return f"ldap://127.0.0.1:{free_port(socket.SOCK_STREAM)}"


def ldap_settings(slapd: Slapd, **overrides) -> dict:
    settings = {"urls": [slapd.url], "bind_dn": SERVICE_DN, "bind_password": SERVICE_PASSWORD,
                "base_dn": PEOPLE, "group_base_dn": GROUPS, "connect_timeout_seconds": 1,
                "receive_timeout_seconds": 1}
    settings.update(overrides)
    return settings


def directory(slapd: Slapd, **overrides) -> Directory:
    return Directory(LdapSection(**ldap_settings(slapd, **overrides)))


@pytest.fixture
def blackhole():
    """A TCP port that accepts connections and never answers: an LDAP server that hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


# -- the directory client --------------------------------------------------------------------------

def test_user_search_finds_the_directory_spelling_of_the_username(slapd):
    found = directory(slapd).find("ALICE")
    assert (found.dn, found.username) == (user_dn("alice"), "alice")


@pytest.mark.parametrize("username", INJECTIONS)
def test_filter_metacharacters_in_the_username_match_nobody(slapd, username):
    assert directory(slapd).find(username) is None


def test_groups_come_from_a_group_search_or_from_member_of(slapd):
    by_search = directory(slapd)
    assert sorted(by_search.groups(by_search.find("alice"))) == ["vpn-admins", "vpn-users"]
    by_member_of = directory(slapd, group_filter="")
    assert sorted(by_member_of.groups(by_member_of.find("alice"))) == ["vpn-admins", "vpn-users"]
    assert by_member_of.groups(by_member_of.find("erin")) == []


def test_user_bind_tells_right_from_wrong_passwords(slapd):
    client = directory(slapd)
    assert client.authenticate(user_dn("bob"), USERS["bob"].encode()) is None
    assert client.authenticate(user_dn("bob"), b"not-bobs-password") is Reason.BAD_PASSWORD


def test_an_empty_password_never_reaches_a_server():
    client = Directory(LdapSection(urls=[closed_url()], base_dn=PEOPLE))  # asking it would raise
    assert client.authenticate(user_dn("bob"), b"") is Reason.NO_PASSWORD


@pytest.mark.parametrize("tls", ["ldaps", "start_tls"])
def test_tls_verifies_the_certificate_against_ca_file(slapd, tls):
    settings = {"urls": [slapd.tls_url]} if tls == "ldaps" else {"urls": [slapd.url], "start_tls": True}
    assert directory(slapd, ca_file=str(slapd.ca_file), **settings).find("bob").username == "bob"
    for wrong in ({"ca_file": str(slapd.other_ca_file)}, {"ca_file": ""}):  # another CA; the system's
        with pytest.raises(BackendError, match="CERTIFICATE_VERIFY_FAILED"):
            directory(slapd, **settings, **wrong).find("bob")


def test_a_server_that_does_not_answer_costs_one_timeout_then_the_next_is_used(slapd, blackhole):
    client = directory(slapd, urls=[f"ldap://127.0.0.1:{blackhole}", slapd.url])
    started = time.monotonic()
    assert client.find("bob").username == "bob"
    assert 0.9 < time.monotonic() - started < 3
    started = time.monotonic()
    assert client.authenticate(user_dn("bob"), USERS["bob"].encode()) is None
    assert time.monotonic() - started < 0.5, "a server found unusable is tried last for a while"


def test_no_server_answering_is_a_backend_error_within_the_timeouts(blackhole):
    client = Directory(LdapSection(urls=[closed_url(), f"ldaps://127.0.0.1:{blackhole}"], base_dn=PEOPLE,
                                   connect_timeout_seconds=1, receive_timeout_seconds=1))
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        client.find("bob")
    assert time.monotonic() - started < 3
    assert caught.value.backend == "ldap" and "Connection refused" in caught.value.detail


def test_pooled_connections_closed_by_a_server_restart_are_replaced(slapd):
    client = directory(slapd)
    assert client.find("bob").username == "bob"  # leaves a pooled service connection
    slapd.restart()
    assert client.find("bob").username == "bob"
    assert client.authenticate(user_dn("bob"), USERS["bob"].encode()) is None


def test_readiness_check_binds_as_the_service_account(slapd):
    directory(slapd).check()
    with pytest.raises(BackendError, match="service bind as .* refused: invalidCredentials"):
        directory(slapd, bind_password="wrong").check()
    with pytest.raises(BackendError, match="noSuchObject"):
        directory(slapd, base_dn="ou=nowhere,dc=example,dc=org").check()


# -- end to end over RADIUS ------------------------------------------------------------------------

class Storage:
    """A server's database and users, from this process (a CLI process per step costs about a
    second); the server reads the same database on every request."""

    def __init__(self, config_path):
        config = load_config(str(config_path), environ={})
        self.database = Database(config.database.url, pool_size=2)
        self.users = UserService(self.database, PasswordHasher(config.security), RadiusDictionary(), actor="test")

    def upgrade(self) -> "Storage":
        migrate.upgrade(self.database)
        return self


@pytest.fixture(scope="module")
def server(slapd, tmp_path_factory):
    """radiusd with [ldap] urls = [a closed port, the slapd's ldaps://], a local user ``erin``
    whose name the directory also has, and a lockout after 3 failures."""
    path = tmp_path_factory.mktemp("ldap-radiusd")
    config = write_config(path, f"sqlite:///{path / 'radiusd.db'}", sections={
        "ldap": ldap_settings(slapd, urls=[closed_url(), slapd.tls_url], ca_file=str(slapd.ca_file),
                              group_reply_attributes=GROUP_REPLY_ATTRIBUTES),
        "plugins": {"order": ORDER},
        "lockout": {"max_failures": 3},
    })
    storage = Storage(config).upgrade()
    storage.users.create("erin", {}, password=LOCAL_PASSWORD)
    process = ServerProcess(config, path / "radiusd.log").start()
    process.database, process.storage = path / "radiusd.db", storage
    yield process
    process.stop()
    storage.database.dispose()


@pytest.fixture
def client(server, radius_client):
    return radius_client(server.auth_port)


def stored(server: ServerProcess, username: str):
    with sqlite3.connect(server.database) as conn:
        return conn.execute("SELECT source, password_hash FROM users WHERE username = ?", (username,)).fetchone()


def test_directory_user_is_accepted_with_the_reply_attributes_of_their_groups(server, client):
    assert stored(server, "alice") is None
    _, reply = client.send(client.access_request("alice", USERS["alice"]))
    assert reply.code == ACCEPT
    assert reply["Class"] == [b"admins"]
    assert reply["Fortinet-Group-Name"] == ["admins"]
    assert reply["Filter-Id"] == ["vpn"]
    assert stored(server, "alice") == ("ldap", None), "the first bind creates a local record, no password"


def test_the_first_url_down_and_the_second_up_still_works(server, client):
    first, second = server.settings["ldap"]["urls"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(first.rsplit(":", 1)[1])), timeout=1).close()
    assert second.startswith("ldaps://")
    _, reply = client.send(client.access_request("bob", USERS["bob"]))
    assert reply.code == ACCEPT
    assert reply["Filter-Id"] == ["vpn"] and "Class" not in reply


def test_another_spelling_of_the_username_is_the_same_local_user(server, client):
    _, reply = client.send(client.access_request("Alice", USERS["alice"]))
    assert reply.code == ACCEPT and reply["Class"] == [b"admins"]
    with sqlite3.connect(server.database) as conn:
        assert conn.execute("SELECT count(*) FROM users WHERE lower(username) = 'alice'").fetchone() == (1,)


@pytest.mark.parametrize("password,reason", [("not-alices-password", "bad_password"), ("", "no_password")])
def test_wrong_or_empty_password_is_rejected(server, client, password, reason):
    before = decisions(server, reason)
    _, reply = client.send(client.access_request("alice", password))
    assert reply.code == REJECT
    assert decisions(server, reason) == before + 1


def test_filter_injection_attempts_are_unknown_users(server, client):
    before = decisions(server, "unknown_user")
    for username in INJECTIONS[:5]:
        for password in (USERS["alice"], "anything"):
            _, reply = client.send(client.access_request(username, password))
            assert reply.code == REJECT, username
    assert decisions(server, "unknown_user") == before + 10


def test_a_local_account_wins_its_name_over_the_directory(server, client):
    _, reply = client.send(client.access_request("erin", USERS["erin"]))
    assert reply.code == REJECT
    _, reply = client.send(client.access_request("erin", LOCAL_PASSWORD))
    assert reply.code == ACCEPT
    assert stored(server, "erin")[0] == "local"


def test_directory_user_with_totp_goes_through_the_challenge(server, client):
    assert stored(server, "carol") is None, "nothing to enrol before the first login"
    assert login(client, "carol", USERS["carol"]).code == ACCEPT  # mfa not required: the record is made
    app = enrol_verified(server.config_path, "carol")
    state = challenge_state(login(client, "carol", USERS["carol"]))
    reply = answer(client, "carol", state, app.now())
    assert reply.code == ACCEPT
    assert reply["Filter-Id"] == ["vpn"], "group attributes are found again in the second round"
    state = challenge_state(login(client, "carol", USERS["carol"]))
    assert answer(client, "carol", state, "000000" if app.now() != "000000" else "111111").code == REJECT


def test_directory_user_is_blocked_after_max_failures_like_a_local_user(server, client):
    assert login(client, "dave", USERS["dave"]).code == ACCEPT
    lockouts = server.metric("radiusd_lockouts_total")
    blocked = decisions(server, "blocked")
    for _ in range(3):
        assert login(client, "dave", "wrong-password").code == REJECT
    assert server.metric("radiusd_lockouts_total") == lockouts + 1
    assert login(client, "dave", USERS["dave"]).code == REJECT
    assert decisions(server, "blocked") == blocked + 1
    listed = json.loads(admin(server.config_path, "user", "list", "--blocked").stdout)
    assert [user["username"] for user in listed] == ["dave"]
    admin(server.config_path, "user", "unblock", "dave")
    assert login(client, "dave", USERS["dave"]).code == ACCEPT


def test_a_disabled_directory_user_is_refused(server, client):
    assert login(client, "bob", USERS["bob"]).code == ACCEPT
    server.storage.users.set_enabled("bob", False)
    before = decisions(server, "disabled")
    assert login(client, "bob", USERS["bob"]).code == REJECT
    assert decisions(server, "disabled") == before + 1
    server.storage.users.set_enabled("bob", True)


def test_no_directory_or_service_password_is_logged(server):
    log = server.log()
    assert "Login OK: [alice]" in log
    for secret in [SERVICE_PASSWORD, *USERS.values(), LOCAL_PASSWORD]:
        assert secret not in log


# -- broken directories ------------------------------------------------------------------------------

def readyz(server: ServerProcess) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.ops_url + "/readyz", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for_failing_ldap(server: ServerProcess, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = readyz(server)
        if status == 503 and (body.get("failing") or {}).get("ldap", "not checked yet") != "not checked yet":
            return body["failing"]["ldap"]
        time.sleep(0.1)
    raise AssertionError(f"/readyz never reported the ldap check failing: {server.log()}")


def test_directory_down_or_hanging_drops_directory_users_but_not_local_ones(slapd, make_server, blackhole,
                                                                             radius_client):
    server = make_server(start=False, name="ldap-down", sections={
        "ldap": ldap_settings(slapd, urls=[closed_url(), f"ldap://127.0.0.1:{blackhole}"]),
        "plugins": {"order": ORDER}})
    storage = Storage(server.config_path)
    storage.users.create("local", {}, password=LOCAL_PASSWORD)
    storage.database.dispose()
    server.start(wait_for="/livez")
    assert "Connection refused" in wait_for_failing_ldap(server)
    client = radius_client(server.auth_port)
    errors = server.metric("radiusd_backend_errors_total", backend="ldap")
    dropped = server.metric("radiusd_dropped_packets_total", reason="backend_error", client="test")
    started = time.monotonic()
    client.send_raw(client.access_request("alice", USERS["alice"]).RequestPacket())
    while server.metric("radiusd_backend_errors_total", backend="ldap") == errors:
        assert time.monotonic() - started < 5, "the request did not fail within the LDAP timeouts"
        time.sleep(0.05)
    assert time.monotonic() - started < 3  # connect + receive timeout of the hanging server, and a bit
    client.expect_silence(0.2)
    assert server.metric("radiusd_dropped_packets_total", reason="backend_error", client="test") == dropped + 1
    _, reply = client.send(client.access_request("local", LOCAL_PASSWORD))
    assert reply.code == ACCEPT, "local users do not need the directory"


def local_login_seconds(client, logins: int = 9) -> float:
    """The median time of ``logins`` local-user logins, one after the other."""
    times = []
    for _ in range(logins):
        started = time.monotonic()
        _, reply = client.send(client.access_request("local", LOCAL_PASSWORD))
        assert reply.code == ACCEPT
        times.append(time.monotonic() - started)
    return statistics.median(times)


def test_a_black_holed_directory_leaves_local_users_their_latency(slapd, make_server, radius_client):
    """Bulkheads: directory users waiting on a server that never answers hold at most their share
    of the auth threads, so local logins keep their latency (within 2x of normal)."""
    with FaultProxy(upstream_of(slapd.url), lifetime=120) as proxy:
        server = make_server(start=False, name="ldap-bulkhead", sections={
            "ldap": ldap_settings(slapd, urls=[f"ldap://127.0.0.1:{proxy.port}"], connect_timeout_seconds=3,
                                  receive_timeout_seconds=3),
            "plugins": {"order": ORDER}, "server": {"auth_threads": 2}})
        storage = Storage(server.config_path)
        storage.users.create("local", {}, password=LOCAL_PASSWORD)
        storage.database.dispose()
        server.start(wait_for="/livez")
        client = radius_client(server.auth_port)
        normal = local_login_seconds(client)
        proxy.black_hole()
        stop = threading.Event()

        def directory_logins():
            nas = RadiusClient(server.auth_port, timeout=1)
            try:
                for _ in range(200):
                    if stop.is_set():
                        return
                    nas.send_raw(nas.access_request("alice", USERS["alice"]).RequestPacket())
                    stop.wait(0.2)
            finally:
                nas.close()

        load = [threading.Thread(target=directory_logins, daemon=True) for _ in range(3)]
        for thread in load:
            thread.start()
        try:
            time.sleep(1)  # the directory requests are stuck by now
            stalled = local_login_seconds(client)
        finally:
            stop.set()
            for thread in load:
                thread.join(10)
    assert server.metric("radiusd_backend_errors_total", backend="ldap") > 0
    assert stalled <= 2 * normal + 0.1, (normal, stalled)


def test_ldaps_with_a_certificate_from_another_ca_is_a_backend_error_not_an_accept(slapd, make_server,
                                                                                 radius_client):
    server = make_server(start=False, name="ldap-wrong-ca", sections={
        "ldap": ldap_settings(slapd, urls=[slapd.tls_url], ca_file=str(slapd.other_ca_file)),
        "plugins": {"order": ORDER}}).start(wait_for="/livez")
    assert "CERTIFICATE_VERIFY_FAILED" in wait_for_failing_ldap(server)
    client = radius_client(server.auth_port)
    client.send_raw(client.access_request("alice", USERS["alice"]).RequestPacket())
    client.expect_silence(1.0)
    assert server.metric("radiusd_backend_errors_total", backend="ldap") >= 1
    assert "Login OK" not in server.log()


# -- radiusd check-config --------------------------------------------------------------------------

def check_config(config, **environ) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "radiusd"), "--config", str(config), "check-config"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **environ})


def test_check_config_tests_the_service_account_bind(slapd, tmp_path):
    config = write_config(tmp_path, f"sqlite:///{tmp_path / 'radiusd.db'}", sections={
        "ldap": ldap_settings(slapd, bind_password={"env": "LDAP_BIND_PASSWORD"}), "plugins": {"order": ORDER}})
    Storage(config).upgrade().database.dispose()
    good = check_config(config, LDAP_BIND_PASSWORD=SERVICE_PASSWORD)
    assert good.returncode == 0, good.stderr
    assert "ldap_users" in good.stdout
    config.write_text(config.read_text().replace('{ env = "LDAP_BIND_PASSWORD" }', '"wrong-password"'))
    bad = check_config(config)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (f"radiusd: ldap check failed: service bind as {SERVICE_DN} refused: "
                                  "invalidCredentials")
