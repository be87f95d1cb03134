"""SMS OTP over real UDP (SPEC §3.1, issue 3): the file gateway's spool, single-use codes
bound to their State, the per-user send limit, and the HTTP gateway against a real HTTP
server on 127.0.0.1 standing in for the provider (success, HTTP 500, no answer).

Three servers share one SQLite database: ``files`` (spool gateway, at most 2 messages per
user and window), ``http`` (HTTP gateway, drop on backend errors, 1 s codes) and
``http_reject`` (HTTP gateway, Reject on backend errors).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.fakes import Provider
from tests.support import (ACCEPT, CHALLENGE, PASSWORD, REJECT, SECRET, Deltas, Provisioner, RadiusClient,
                           ServerProcess, admin, answer, challenge_state, login, settle, start_all, wait_for,
                           write_config)

CODE = re.compile(r"(?<!\d)(\d{6})(?!\d)")
PHONES = {  # user -> stored E.164 number (each user its own, to tell spool lines apart)
    "flow": "+905554443322", "wrong": "+905554443301", "bound": "+905554443302", "limited": "+905554443303",
    "appended": "+905554443304", "both": "+905554443305", "httpok": "+905554443306", "http500": "+905554443307",
    "hang": "+905554443308", "http500r": "+905554443309", "expire": "+905554443310", "burst": "+905554443311",
    "retrans": "+905554443312",
}
NAS = [{"name": "test", "address": "127.0.0.1/32", "secret": SECRET.decode()},
       {"name": "append", "address": "127.0.0.3/32", "secret": SECRET.decode(), "mfa_mode": "append"}]


class Servers:
    files: ServerProcess
    http: ServerProcess
    http_reject: ServerProcess
    spool: Path
    provider: Provider
    codes: list[str]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    provider = Provider()
    dirs = {name: tmp_path_factory.mktemp(f"sms-{name}") for name in ("files", "http", "http_reject")}
    url = f"sqlite:///{dirs['files'] / 'radiusd.db'}"
    common = {"mfa": {"required": True, "sms_code_ttl_seconds": 300}, "lockout": {"max_failures": 100}}
    http = {"gateway": "http", "url": provider.url + "/v1/sms", "timeout_seconds": 1,
            "headers": {"Authorization": "Bearer provider-token"}}
    configs = {
        "files": write_config(dirs["files"], url, nas=NAS, sections={**common, "server": {"auth_threads": 4}, "sms": {
            "spool_path": str(dirs["files"] / "sms.spool"), "max_per_window": 2, "window_seconds": 600}}),
    }
    for name in ("http", "http_reject"):
        shutil.copy(dirs["files"] / "seed.key", dirs[name] / "seed.key")
    configs["http"] = write_config(dirs["http"], url, sections={
        "mfa": {"required": True, "sms_code_ttl_seconds": 1}, "sms": http, "lockout": {"max_failures": 100}})
    configs["http_reject"] = write_config(dirs["http_reject"], url, sections={
        **common, "sms": http, "server": {"on_backend_error": "reject", "reject_delay_seconds": 0}})
    admin(configs["files"], "db", "upgrade")
    result = Servers()
    result.provider = provider
    result.spool = dirs["files"] / "sms.spool"
    result.codes = []
    added = admin(configs["files"], "user", "add", "flow", "--password-stdin", "--phone", "05554443322",
                  stdin=PASSWORD + "\n")
    assert json.loads(added.stdout)["phone"] == "+905554443322"  # the Turkish national form, stored E.164
    provisioner = Provisioner(configs["files"])
    try:
        for name, phone in PHONES.items():
            if name != "flow":
                provisioner.add([name], phone=phone)
        result.totp_both = provisioner.enrol_verified(["both"])["both"]
    finally:
        provisioner.close()
    servers = {name: ServerProcess(config, dirs[name] / "radiusd.log") for name, config in configs.items()}
    try:
        start_all(list(servers.values()))
        for name, server in servers.items():
            setattr(result, name, server)
        yield result
    finally:
        for server in servers.values():
            server.stop()
        provider.close()
    for server in servers.values():  # codes are never logged, by any server
        log = server.log()
        leaked = [code for code in result.codes if re.search(rf"(?<!\d){code}(?!\d)", log)]
        assert not leaked, f"SMS codes found in {server.log_path}"


def spool_lines(servers: Servers, phone: str) -> list[str]:
    if not servers.spool.exists():
        return []
    return [line for line in servers.spool.read_text().splitlines() if line.split(" ")[1] == phone]


def last_code(servers: Servers, phone: str) -> str:
    lines = spool_lines(servers, phone)
    assert lines, f"no SMS to {phone}"
    [code] = CODE.findall(lines[-1].split(" ", 2)[2])
    servers.codes.append(code)
    return code


@pytest.fixture
def client(servers, radius_client):
    return radius_client(servers.files.auth_port)


def assert_not_logged(server: ServerProcess, code: str) -> None:
    assert not re.search(rf"(?<!\d){code}(?!\d)", server.log()), "an SMS code is in the server log"


# -- file gateway ------------------------------------------------------------------------------------

def test_sms_flow_through_the_spool_file(servers, client):
    server = servers.files
    deltas = Deltas(server, "ok", "challenge")
    reply = login(client, "flow")
    state = challenge_state(reply)
    assert len(state) >= 16
    [prompt] = reply["Reply-Message"]
    assert "phone" in prompt.lower()
    [line] = spool_lines(servers, "+905554443322")
    stamp, phone, message = line.split(" ", 2)
    assert phone == "+905554443322"
    assert stamp.endswith("+00:00")
    assert message == f"Your radiusd code is {last_code(servers, phone)}"
    code = last_code(servers, phone)
    assert answer(client, "flow", state, code).code == ACCEPT
    assert deltas.changed() == {"ok": 1, "challenge": 1, "challenges_sms": 1}
    # single use: the State is gone after its answer
    deltas = Deltas(server, "bad_state")
    assert answer(client, "flow", state, code).code == REJECT
    assert deltas.changed() == {"bad_state": 1}
    assert_not_logged(server, code)


def test_a_wrong_sms_code_is_rejected_and_the_state_is_gone(servers, client):
    state = challenge_state(login(client, "wrong"))
    code = last_code(servers, PHONES["wrong"])
    deltas = Deltas(servers.files, "bad_otp", "bad_state")
    assert answer(client, "wrong", state, f"{(int(code) + 1) % 10**6:06d}").code == REJECT
    assert answer(client, "wrong", state, code).code == REJECT  # one answer per State
    assert deltas.changed() == {"bad_otp": 1, "bad_state": 1}


def test_an_sms_code_is_bound_to_its_state(servers, client):
    first = challenge_state(login(client, "bound"))
    first_code = last_code(servers, PHONES["bound"])
    second = challenge_state(login(client, "bound"))
    second_code = last_code(servers, PHONES["bound"])
    if first_code != second_code:  # one chance in a million that they are equal
        assert answer(client, "bound", first, second_code).code == REJECT
        assert answer(client, "bound", second, "１２３４５６").code == REJECT  # full-width digits
    else:
        assert answer(client, "bound", second, second_code).code == ACCEPT


def test_the_third_sms_within_the_window_is_refused(servers, client):
    deltas = Deltas(servers.files, "sms_rate_limited", "challenge")
    challenge_state(login(client, "limited"))
    challenge_state(login(client, "limited"))
    assert len(spool_lines(servers, PHONES["limited"])) == 2
    assert login(client, "limited").code == REJECT
    assert len(spool_lines(servers, PHONES["limited"])) == 2  # no third message was sent
    assert deltas.changed() == {"challenge": 2, "challenges_sms": 2, "sms_rate_limited": 1}
    assert login(client, "limited", "wrong-password").code == REJECT  # the password still comes first
    assert len(spool_lines(servers, PHONES["limited"])) == 2


def test_concurrent_logins_cannot_exceed_the_send_limit(servers, client):
    deltas = Deltas(servers.files, "sms_rate_limited", "challenge")
    requests = {}
    for identifier in range(6):
        request = client.access_request("burst", PASSWORD)
        request.id = identifier
        requests[identifier] = request
    for request in requests.values():  # all in flight at once, on four worker threads
        client.send_raw(request.RequestPacket())
    codes = []
    for _ in requests:
        data = client.sock.recv(4096)
        request = requests[data[1]]
        reply = request.CreateReply(packet=data)
        assert request.VerifyReply(reply, data)
        codes.append(reply.code)
    assert sorted(codes) == [REJECT] * 4 + [CHALLENGE] * 2
    assert len(spool_lines(servers, PHONES["burst"])) == 2
    assert deltas.changed() == {"challenge": 2, "challenges_sms": 2, "sms_rate_limited": 4}


def test_a_retransmitted_password_request_sends_no_second_sms(servers, client):
    request = client.access_request("retrans", PASSWORD)
    wire = request.RequestPacket()
    client.send_raw(wire)
    first = client.sock.recv(4096)
    client.send_raw(wire)
    second = client.sock.recv(4096)
    assert first == second and first[0] == CHALLENGE  # the cached Access-Challenge, same State
    assert len(spool_lines(servers, PHONES["retrans"])) == 1


def test_an_sms_only_user_is_refused_on_an_append_mode_nas(servers):
    client = RadiusClient(servers.files.auth_port, source="127.0.0.3")
    try:
        deltas = Deltas(servers.files, "otp_required")
        assert login(client, "appended").code == REJECT
        assert deltas.changed() == {"otp_required": 1}
        assert spool_lines(servers, PHONES["appended"]) == []
    finally:
        client.close()


def test_a_verified_softotp_comes_before_the_phone(servers, client):
    deltas = Deltas(servers.files, "challenge")
    state = challenge_state(login(client, "both"))
    assert spool_lines(servers, PHONES["both"]) == []
    assert deltas.changed() == {"challenge": 1, "challenges_totp": 1}
    settle(1)
    assert answer(client, "both", state, servers.totp_both.now()).code == ACCEPT


# -- HTTP gateway --------------------------------------------------------------------------------------

def provider_code(servers: Servers, phone: str) -> str:
    request = servers.provider.requests[-1]
    assert request["method"] == "POST" and request["path"] == "/v1/sms"
    assert request["headers"]["Authorization"] == "Bearer provider-token"
    body = json.loads(request["body"])
    assert body["to"] == phone
    [code] = CODE.findall(body["text"])
    servers.codes.append(code)
    return code


def test_sms_through_an_http_provider(servers, radius_client):
    servers.provider.status = 200
    client = radius_client(servers.http.auth_port)
    state = challenge_state(login(client, "httpok"))
    code = provider_code(servers, PHONES["httpok"])
    assert answer(client, "httpok", state, code).code == ACCEPT
    assert_not_logged(servers.http, code)


def backend_errors(server: ServerProcess) -> float:
    return server.metric("radiusd_backend_errors_total", backend="sms")




def test_http_provider_error_fails_closed_with_a_drop(servers, radius_client):
    servers.provider.status = 500
    server = servers.http
    client = radius_client(server.auth_port)
    before, dropped = backend_errors(server), server.metric("radiusd_dropped_packets_total", reason="backend_error", client="test")
    deltas = Deltas(server, "ok")
    requests = len(servers.provider.requests)
    client.send_raw(client.access_request("http500", PASSWORD).RequestPacket())
    assert wait_for(lambda: backend_errors(server) == before + 1)
    client.expect_silence(0.5)  # no Access-Challenge, no Accept, no Reject
    assert len(servers.provider.requests) == requests + 1  # the provider was asked, and failed
    assert server.metric("radiusd_dropped_packets_total", reason="backend_error", client="test") == dropped + 1
    assert deltas.changed() == {}


def test_http_provider_error_gets_a_reject_when_configured(servers, radius_client):
    servers.provider.status = 500
    server = servers.http_reject
    client = radius_client(server.auth_port)
    before = backend_errors(server)
    deltas = Deltas(server, "backend_error")
    assert login(client, "http500r").code == REJECT
    assert backend_errors(server) == before + 1
    assert deltas.changed() == {"backend_error": 1}


def test_http_provider_that_never_answers_fails_closed_after_the_timeout(servers, radius_client):
    servers.provider.status = None  # hang
    server = servers.http
    client = radius_client(server.auth_port)
    before = backend_errors(server)
    deltas = Deltas(server, "ok")
    started = time.monotonic()
    client.send_raw(client.access_request("hang", PASSWORD).RequestPacket())
    assert wait_for(lambda: backend_errors(server) == before + 1)
    assert time.monotonic() - started >= 1.0  # timeout_seconds = 1
    client.expect_silence(0.5)
    assert deltas.changed() == {}
    servers.provider.status = 200


def test_an_sms_code_expires_after_sms_code_ttl_seconds(servers, radius_client):
    servers.provider.status = 200
    client = radius_client(servers.http.auth_port)  # sms_code_ttl_seconds = 1
    state = challenge_state(login(client, "expire"))
    code = provider_code(servers, PHONES["expire"])
    time.sleep(1.5)
    deltas = Deltas(servers.http, "challenge_expired")
    assert answer(client, "expire", state, code).code == REJECT
    assert deltas.changed() == {"challenge_expired": 1}
