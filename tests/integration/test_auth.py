"""SPEC §3 over real UDP against a real ``radiusd serve`` process, checked with pyrad.

One module-scoped server holds the users most tests need (metrics are read as deltas);
tests that need another configuration start their own server.
"""

from __future__ import annotations

import sqlite3
import struct
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from pyrad import packet as pyrad_packet

from tests.support import (DICTIONARY, PG_ADMIN_URL, RadiusClient, SECRET, ServerProcess, add_users, admin, wait_for,
                           write_config)

PASSWORD = "correct-horse-battery"
ACCEPT, REJECT = pyrad_packet.AccessAccept, pyrad_packet.AccessReject


# -- helpers -----------------------------------------------------------------------------------



def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def attribute_types(data: bytes) -> list[int]:
    """Attribute numbers of a raw packet in wire order (walked here, not by our codec)."""
    length = struct.unpack_from("!H", data, 2)[0]
    types, offset = [], 20
    while offset < length:
        types.append(data[offset])
        offset += data[offset + 1]
    return types


def shape(data: bytes) -> tuple:
    return data[0], len(data), struct.unpack_from("!H", data, 2)[0], tuple(attribute_types(data))


def exchange(client: RadiusClient, request) -> tuple[bytes, pyrad_packet.Packet]:
    """Send, and return the raw reply bytes and the pyrad-verified reply."""
    wire = request.RequestPacket()
    client.send_raw(wire)
    data = client.sock.recv(4096)
    reply = request.CreateReply(packet=data)
    assert request.VerifyReply(reply, data, enforce_ma=True), "reply does not verify with pyrad"
    assert data[20] == 80, "Message-Authenticator is not the first attribute"
    return data, reply


def decisions(server: ServerProcess, reason: str) -> float:
    return server.metric("radiusd_auth_decisions_total", reason=reason)


def dropped(server: ServerProcess, reason: str, client: str = "test") -> float:
    return server.metric("radiusd_dropped_packets_total", reason=reason, client=client)


def auth_audit_rows(database: str, username: str) -> int:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT count(*) FROM audit_events WHERE type = 'auth' AND username = ?",
                            (username,)).fetchone()[0]




def readyz_status(server: ServerProcess) -> int:
    try:
        with urllib.request.urlopen(server.ops_url + "/readyz", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


# -- the shared server -------------------------------------------------------------------------

@contextmanager
def running_server(directory, users: dict[str, list[str]], *, sections=None, then=()):
    """A ``radiusd serve`` on its own SQLite file, started while its users are being added."""
    database = directory / "radiusd.db"
    config = write_config(directory, f"sqlite:///{database}", sections=sections)
    admin(config, "db", "upgrade")
    process = ServerProcess(config, directory / "radiusd.log")
    process.database = str(database)
    try:
        with ThreadPoolExecutor(max_workers=1) as starter:
            started = starter.submit(process.start)
            add_users(config, users, PASSWORD)
            for command in then:  # radiusd-admin commands to run once the users exist
                admin(config, *command)
            started.result()
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    now = datetime.now(timezone.utc)
    expiry = now + timedelta(hours=1)
    users = {
        "alice": ["--framed-ip", "10.20.30.40", "--reply-attribute", "Cisco-AVPair=shell:priv-lvl=15",
                  "--reply-attribute", "Cisco-AVPair=ip:addr-pool=vpn", "--reply-attribute", "Idle-Timeout=600"],
        "selects": ["--framed-ip", "user-selects"],
        "assigns": ["--framed-ip", "nas-assigns", "--expires", iso(expiry), "--reply-attribute",
                    "Session-Timeout=600"],
        "expiring": ["--expires", iso(expiry)],
        "capped": ["--expires", iso(expiry), "--reply-attribute", "Session-Timeout=86400"],
        "dora": [],
        "expired": ["--expires", iso(now - timedelta(hours=1))],
        "blocky": [],
    }
    then = [("user", "disable", "dora"), ("user", "block", "blocky", "--seconds", "3600", "--reason", "test")]
    with running_server(tmp_path_factory.mktemp("auth"), users, then=then) as process:
        process.expiry = expiry
        yield process


@pytest.fixture
def client(server, radius_client):
    return radius_client(server.auth_port)


# -- Access-Accept -----------------------------------------------------------------------------

def test_accept_carries_framed_ip_and_reply_attributes_including_vendor_ones(server, client):
    before = decisions(server, "ok")
    data, reply = exchange(client, client.access_request("alice", PASSWORD))
    assert reply.code == ACCEPT
    assert reply["Framed-IP-Address"] == ["10.20.30.40"]
    assert reply["Cisco-AVPair"] == ["shell:priv-lvl=15", "ip:addr-pool=vpn"]
    assert reply["Idle-Timeout"] == [600]
    assert "Session-Timeout" not in reply  # no expiry, none configured
    assert attribute_types(data)[0] == 80
    assert 26 in attribute_types(data)
    assert decisions(server, "ok") == before + 1
    assert server.metric("radiusd_access_responses_total", client="test", code="accept") >= 1


@pytest.mark.parametrize("user,address", [("selects", "255.255.255.255"), ("assigns", "255.255.255.254")])
def test_special_framed_ip_values_are_sent_as_their_rfc_2865_addresses(client, user, address):
    _, reply = exchange(client, client.access_request(user, PASSWORD))
    assert reply.code == ACCEPT
    assert reply["Framed-IP-Address"] == [address]


def session_timeout_left(server) -> float:
    return (server.expiry - datetime.now(timezone.utc)).total_seconds()


def test_session_timeout_is_the_time_left_before_the_account_expires(server, client):
    _, reply = exchange(client, client.access_request("expiring", PASSWORD))
    assert reply.code == ACCEPT
    [timeout] = reply["Session-Timeout"]
    assert 3500 < timeout <= 3600
    assert abs(timeout - session_timeout_left(server)) <= 5


def test_configured_session_timeout_longer_than_the_time_left_is_capped(server, client):
    _, reply = exchange(client, client.access_request("capped", PASSWORD))
    assert reply.code == ACCEPT
    [timeout] = reply["Session-Timeout"]
    assert 3500 < timeout <= 3600
    assert abs(timeout - session_timeout_left(server)) <= 5


def test_configured_session_timeout_shorter_than_the_time_left_is_kept(client):
    _, reply = exchange(client, client.access_request("assigns", PASSWORD))
    assert reply["Session-Timeout"] == [600]


# -- Access-Reject -----------------------------------------------------------------------------

REJECTS = {
    "unknown user": ("nobody-here", PASSWORD, "unknown_user"),
    "wrong password": ("alice", "not-the-password", "bad_password"),
    "disabled": ("dora", PASSWORD, "disabled"),
    "expired": ("expired", PASSWORD, "expired"),
    "blocked": ("blocky", PASSWORD, "blocked"),
}


def test_every_reject_has_the_same_shape_and_its_own_decision_reason(server, client):
    shapes = {}
    for case, (user, password, reason) in REJECTS.items():
        before = decisions(server, reason)
        data, reply = exchange(client, client.access_request(user, password))
        assert reply.code == REJECT, case
        assert decisions(server, reason) == before + 1, case
        shapes[case] = shape(data)
    assert len(set(shapes.values())) == 1, shapes
    code, length, declared, types = shapes["unknown user"]
    assert (code, length, declared, types) == (REJECT, 38, 38, (80,))  # nothing but Message-Authenticator


def test_reject_with_proxy_state_carries_only_message_authenticator_and_the_echo(client):
    request = client.access_request("nobody-here", PASSWORD)
    request.AddAttribute("Proxy-State", b"ps")
    data, reply = exchange(client, request)
    assert reply.code == REJECT
    assert attribute_types(data) == [80, 33]


UNSUPPORTED = {
    "CHAP": {"CHAP_Password": b"\x01" + bytes(16), "CHAP_Challenge": bytes(range(16))},
    "MS-CHAP": {"MS_CHAP_Challenge": bytes(range(16)), "MS_CHAP2_Response": bytes(50)},
    "EAP": {"EAP_Message": b"\x02\x01\x00\x0a\x01alice"},
}


@pytest.mark.parametrize("method", UNSUPPORTED)
def test_chap_mschap_and_eap_requests_are_rejected_as_unsupported_with_a_log_line(server, client, method):
    before = decisions(server, "unsupported_auth_type")
    data, reply = exchange(client, client.access_request("alice", None, **UNSUPPORTED[method]))
    assert reply.code == REJECT
    assert attribute_types(data) == [80]
    assert decisions(server, "unsupported_auth_type") == before + 1
    assert wait_for(lambda: f"Login incorrect (unsupported_auth_type: {method} " in server.log(), timeout=5), \
        f"no log line saying why {method} was refused"


def test_request_without_message_authenticator_is_dropped_when_required(server, client):
    before = dropped(server, "missing_message_authenticator")
    client.send_raw(client.access_request("alice", PASSWORD, message_authenticator=False).RequestPacket())
    assert wait_for(lambda: dropped(server, "missing_message_authenticator") == before + 1)
    client.expect_silence(0.3)


def test_request_signed_with_the_wrong_secret_is_dropped(server, radius_client):
    client = radius_client(server.auth_port, secret=b"not-the-right-secret")
    before = dropped(server, "bad_authenticator")
    client.send_raw(client.access_request("alice", PASSWORD).RequestPacket())
    assert wait_for(lambda: dropped(server, "bad_authenticator") == before + 1)
    client.expect_silence(0.3)


# -- Status-Server, retransmissions, Proxy-State -----------------------------------------------

def test_status_server_is_answered_with_access_accept(server, client):
    before = server.metric("radiusd_status_server_requests_total", client="test")
    data, reply = exchange(client, client.status_server())
    assert reply.code == ACCEPT
    assert attribute_types(data) == [80]
    assert server.metric("radiusd_status_server_requests_total", client="test") == before + 1


def test_retransmission_gets_identical_reply_bytes_and_is_decided_once(server, client):
    decided = decisions(server, "ok")
    duplicates = server.metric("radiusd_duplicate_requests_total", client="test")
    audited = auth_audit_rows(server.database, "alice")
    request = client.access_request("alice", PASSWORD)
    wire = request.RequestPacket()
    replies = []
    for _ in range(3):
        client.send_raw(wire)
        replies.append(client.sock.recv(4096))
    assert replies[0] == replies[1] == replies[2]
    reply = request.CreateReply(packet=replies[0])
    assert request.VerifyReply(reply, replies[0], enforce_ma=True)
    assert reply.code == ACCEPT
    assert decisions(server, "ok") == decided + 1
    assert server.metric("radiusd_duplicate_requests_total", client="test") == duplicates + 2
    assert auth_audit_rows(server.database, "alice") == audited + 1


def test_two_proxy_states_are_echoed_in_order_at_the_end(client):
    request = client.access_request("alice", PASSWORD)
    request.AddAttribute("Proxy-State", b"proxy-first")
    request.AddAttribute("Proxy-State", b"proxy-second")
    data, reply = exchange(client, request)
    assert reply.code == ACCEPT
    assert reply["Proxy-State"] == [b"proxy-first", b"proxy-second"]
    assert attribute_types(data)[-2:] == [33, 33]
    assert data.index(b"proxy-first") < data.index(b"proxy-second")


# -- the reactor is never blocked --------------------------------------------------------------

def test_status_server_is_answered_while_fifty_logins_are_hashing(server, client):
    users = ["alice", "selects", "assigns", "expiring", "capped"]
    requests = {}
    for identifier in range(50):
        request = pyrad_packet.AuthPacket(code=pyrad_packet.AccessRequest, secret=SECRET,
                                          dict=DICTIONARY, id=identifier)
        request.add_message_authenticator()
        request["User-Name"] = users[identifier % len(users)]
        request["User-Password"] = request.PwCrypt(PASSWORD)
        requests[identifier] = request
    status = client.status_server()
    status.id = 50
    wires = [request.RequestPacket() for request in requests.values()]
    status_wire = status.RequestPacket()
    for wire in wires:
        client.send_raw(wire)
    client.send_raw(status_wire)

    order = []
    client.sock.settimeout(20)
    while len(order) < 51:
        data = client.sock.recv(4096)
        identifier = data[1]
        request = status if identifier == 50 else requests[identifier]
        reply = request.CreateReply(packet=data)
        assert request.VerifyReply(reply, data, enforce_ma=True)
        assert reply.code == ACCEPT
        order.append(identifier)
    assert sorted(order) == list(range(51))
    position = order.index(50)
    assert position < 10, f"Status-Server answered after {position} of 50 Access-Accepts"


# -- other configurations ----------------------------------------------------------------------

def test_unknown_nas_gets_no_reply_and_is_counted(make_server, radius_client):
    server = make_server(nas=[{"name": "elsewhere", "address": "127.0.0.2/32", "secret": SECRET.decode()}])
    client = radius_client(server.auth_port)
    client.send_raw(client.access_request("alice", PASSWORD).RequestPacket())
    client.send_raw(client.status_server().RequestPacket())
    assert wait_for(lambda: dropped(server, "unknown_client", client="unknown") == 2)
    client.expect_silence(0.3)
    assert server.metric("radiusd_access_requests_total", client="elsewhere") == 0
    metrics = urllib.request.urlopen(server.ops_url + "/metrics", timeout=5).read().decode()
    assert "127.0.0.1" not in metrics  # labels never carry unknown addresses


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """``[mfa] required = true`` and a half-second reject delay."""
    sections = {"mfa": {"required": True}, "server": {"reject_delay_seconds": 0.5}}
    with running_server(tmp_path_factory.mktemp("strict"), {"nofactor": [], "exempt": ["--mfa-exempt"]},
                        sections=sections) as process:
        yield process


def test_required_mfa_rejects_a_user_without_a_second_factor(strict_server, radius_client):
    client = radius_client(strict_server.auth_port)
    before = decisions(strict_server, "otp_required")
    _, reply = exchange(client, client.access_request("nofactor", PASSWORD))
    assert reply.code == REJECT
    assert decisions(strict_server, "otp_required") == before + 1


def test_required_mfa_accepts_an_exempt_user(strict_server, radius_client):
    client = radius_client(strict_server.auth_port)
    _, reply = exchange(client, client.access_request("exempt", PASSWORD))
    assert reply.code == ACCEPT


@pytest.mark.parametrize("user,password", [("nobody-here", PASSWORD), ("exempt", "wrong-password")])
def test_reject_arrives_no_sooner_than_the_reject_delay(strict_server, radius_client, user, password):
    client = radius_client(strict_server.auth_port)
    request = client.access_request(user, password)
    started = time.monotonic()
    _, reply = exchange(client, request)
    elapsed = time.monotonic() - started
    assert reply.code == REJECT
    assert elapsed >= 0.5, f"Reject after {elapsed:.3f} s"


# -- backend failure: fail closed --------------------------------------------------------------

def test_database_outage_drops_requests_and_status_server(make_server, radius_client, postgres_url):
    import psycopg

    server = make_server(postgres_url)
    add_users(server.config_path, {"alice": []}, PASSWORD)
    client = radius_client(server.auth_port)
    assert exchange(client, client.access_request("alice", PASSWORD))[1].code == ACCEPT

    name = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    request = client.access_request("alice", PASSWORD)
    for attempt in (1, 2):  # the NAS's retry is processed again, and is not an Accept either
        client.send_raw(request.RequestPacket())
        assert wait_for(lambda: dropped(server, "backend_error") == attempt)
        client.expect_silence(0.3)
    assert decisions(server, "backend_error") == 2
    assert server.metric("radiusd_backend_errors_total", backend="db") >= 2
    assert server.metric("radiusd_access_responses_total", client="test", code="accept") == 1

    assert wait_for(lambda: readyz_status(server) == 503, timeout=10)
    client.send_raw(client.status_server().RequestPacket())
    assert wait_for(lambda: dropped(server, "backend_error") == 3)
    client.expect_silence(0.3)
    assert server.metric("radiusd_status_server_requests_total", client="test") == 0


def test_database_failure_gets_a_reject_when_configured(make_server, radius_client):
    server = make_server(sections={"server": {"on_backend_error": "reject"}})
    add_users(server.config_path, {"alice": []}, PASSWORD)
    client = radius_client(server.auth_port)
    assert exchange(client, client.access_request("alice", PASSWORD))[1].code == ACCEPT

    database = server.settings["database"]["url"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        conn.execute("ALTER TABLE users RENAME TO users_gone")

    before = decisions(server, "backend_error")
    data, reply = exchange(client, client.access_request("alice", PASSWORD))
    assert reply.code == REJECT
    assert attribute_types(data) == [80]
    assert decisions(server, "backend_error") == before + 1
    assert server.metric("radiusd_backend_errors_total", backend="db") >= 1
    assert dropped(server, "backend_error") == 0

