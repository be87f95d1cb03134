"""Push approval over real UDP against a real ``radiusd serve`` (SPEC §3.1 push, issue 8).

One module-wide server with the admin API, ``[mfa] push_timeout_seconds = 2`` and two NASes:
127.0.0.1 in append mode (the reply is held for the phone) and 127.0.0.2 in challenge mode.
Users are activated through ``POST /mobile/activate``; the phone's part is played through the
device routes. RADIUS requests that wait for the phone run in a helper thread.
"""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from pyrad import packet as pyrad_packet

from tests.support import PASSWORD, SECRET, RadiusClient, activated_user, start_api_server

PUSH_TIMEOUT = 2
ACCEPT, REJECT, CHALLENGE = pyrad_packet.AccessAccept, pyrad_packet.AccessReject, pyrad_packet.AccessChallenge
CLI = "02-00-00-00-00-01"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    started = start_api_server(tmp_path_factory.mktemp("push"), sections={
        "mfa": {"required": True, "push_timeout_seconds": PUSH_TIMEOUT}}, nas=[
        {"name": "vpn-append", "address": "127.0.0.1/32", "secret": SECRET.decode(), "mfa_mode": "append"},
        {"name": "vpn-challenge", "address": "127.0.0.2/32", "secret": SECRET.decode(), "mfa_mode": "challenge"}])
    yield started
    started.server.stop()


@pytest.fixture(scope="module")
def admin_api(server):
    return server.admin_api()


@pytest.fixture
def append_client(server):
    client = RadiusClient(server.server.auth_port, timeout=10)
    yield client
    client.close()


@pytest.fixture
def challenge_client(server):
    client = RadiusClient(server.server.auth_port, timeout=10, source="127.0.0.2")
    yield client
    client.close()


def next_push(device, wait: int = 5) -> dict:
    reply = device.get("/api/v1/mobile/push", query={"wait": wait})
    assert reply.status == 200, reply.raw
    [item] = reply.json()["items"]
    return item


def decide(device, push: dict, decision: str) -> None:
    reply = device.post(f"/api/v1/mobile/push/{push['push_id']}", {"decision": decision})
    assert reply.status == 200, reply.raw


def login_in_background(client: RadiusClient, username: str, password: str = PASSWORD, **attributes):
    pool = ThreadPoolExecutor(max_workers=1)
    request = client.access_request(username, password, Calling_Station_Id=CLI, **attributes)
    started = time.monotonic()
    future = pool.submit(client.send, request)
    pool.shutdown(wait=False)
    return future, started


def test_append_mode_push_approved_on_the_phone_is_an_accept_with_the_users_attributes(admin_api, append_client):
    _, device = activated_user(admin_api, "push-alice", framed_ip_address="10.8.0.5")
    future, _ = login_in_background(append_client, "push-alice")
    push = next_push(device)
    assert (push["nas"], push["calling_station_id"], push["status"]) == ("vpn-append", CLI, "pending")
    assert len(push["number"]) == 2
    decide(device, push, "approve")
    _, reply = future.result(timeout=10)
    assert reply.code == ACCEPT
    assert reply["Framed-IP-Address"] == ["10.8.0.5"]


def test_append_mode_push_denied_on_the_phone_is_a_reject(admin_api, append_client, server):
    _, device = activated_user(admin_api, "push-bob")
    before = server.server.metric("radiusd_auth_decisions_total", reason="push_denied")
    future, _ = login_in_background(append_client, "push-bob")
    decide(device, next_push(device), "deny")
    assert future.result(timeout=10)[1].code == REJECT
    assert server.server.metric("radiusd_auth_decisions_total", reason="push_denied") == before + 1
    blocked = admin_api.get("/api/v1/users/push-bob").json()
    assert blocked["status"] == "active"  # one failure counted, far from the lockout


def test_append_mode_push_nobody_answers_is_rejected_after_push_timeout_seconds(admin_api, append_client, server):
    activated_user(admin_api, "push-carol")
    future, started = login_in_background(append_client, "push-carol")
    assert future.result(timeout=10)[1].code == REJECT
    elapsed = time.monotonic() - started
    assert PUSH_TIMEOUT - 0.2 <= elapsed < PUSH_TIMEOUT + 2, elapsed
    assert server.server.metric("radiusd_auth_decisions_total", reason="push_timeout") >= 1


def test_retransmissions_while_the_push_is_held_create_no_second_push_and_get_the_single_answer(
        admin_api, append_client, server):
    _, device = activated_user(admin_api, "push-dave")
    created = server.server.metric("radiusd_push_requests_total", event="created")
    request = append_client.access_request("push-dave", PASSWORD, Calling_Station_Id=CLI)
    wire = request.RequestPacket()
    append_client.send_raw(wire)
    push = next_push(device)
    for _ in range(3):  # the NAS retries while the user looks for the phone
        append_client.send_raw(wire)
        time.sleep(0.1)
    assert len(device.get("/api/v1/mobile/push").json()["items"]) == 1
    decide(device, push, "approve")
    assert append_client.receive(request, wire).code == ACCEPT
    append_client.expect_silence(0.5)
    assert server.server.metric("radiusd_push_requests_total", event="created") == created + 1
    assert server.server.metric("radiusd_dropped_packets_total", reason="duplicate_in_progress", client="vpn-append") >= 3


def test_the_reactor_answers_status_server_at_once_while_a_push_is_held(admin_api, append_client, server):
    _, device = activated_user(admin_api, "push-erin")
    future, _ = login_in_background(append_client, "push-erin")
    push = next_push(device)
    probe_client = RadiusClient(server.server.auth_port, timeout=2)
    try:
        started = time.monotonic()
        _, reply = probe_client.send(probe_client.status_server())
        assert reply.code == ACCEPT and time.monotonic() - started < 0.5
    finally:
        probe_client.close()
    assert not future.done()
    decide(device, push, "approve")
    assert future.result(timeout=10)[1].code == ACCEPT


def test_append_mode_password_with_a_totp_code_is_accepted_without_a_push(admin_api, append_client, server):
    totp, device = activated_user(admin_api, "push-frank")
    created = server.server.metric("radiusd_push_requests_total", event="created")
    _, reply = append_client.send(append_client.access_request("push-frank", PASSWORD + totp.now()))
    assert reply.code == ACCEPT
    assert server.server.metric("radiusd_push_requests_total", event="created") == created
    assert device.get("/api/v1/mobile/push").json()["items"] == []


def test_challenge_mode_sends_a_push_and_the_empty_answer_waits_for_the_approval(
        admin_api, challenge_client, server):
    _, device = activated_user(admin_api, "push-gina")
    before = server.server.metric("radiusd_challenges_total", factor="push")
    _, challenge = challenge_client.send(challenge_client.access_request("push-gina", PASSWORD,
                                                                         Calling_Station_Id=CLI))
    assert challenge.code == CHALLENGE
    prompt = "".join(part if isinstance(part, str) else part.decode() for part in challenge["Reply-Message"])
    push = next_push(device, wait=0)
    assert f"request {push['number']}" in prompt and "code" in prompt
    assert server.server.metric("radiusd_challenges_total", factor="push") == before + 1
    answer = challenge_client.access_request("push-gina", "", State=challenge["State"][0])
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(challenge_client.send, answer)
    pool.shutdown(wait=False)
    time.sleep(0.3)
    assert not future.done()  # waiting for the phone
    decide(device, push, "approve")
    assert future.result(timeout=10)[1].code == ACCEPT


def test_challenge_mode_answered_with_a_totp_code_instead_is_accepted(admin_api, challenge_client):
    totp, device = activated_user(admin_api, "push-hank")
    _, challenge = challenge_client.send(challenge_client.access_request("push-hank", PASSWORD))
    assert challenge.code == CHALLENGE
    _, reply = challenge_client.send(challenge_client.access_request("push-hank", totp.now(),
                                                                     State=challenge["State"][0]))
    assert reply.code == ACCEPT


def test_agent_api_auth_waits_for_the_push_like_a_challenge_mode_nas(admin_api, server):
    _, device = activated_user(admin_api, "push-ivan")
    _, agent = server.client_of_type("agent", "push-agent")
    first = agent.post("/api/v1/auth", {"username": "push-ivan", "password": PASSWORD}).json()
    assert first["result"] == "challenge"
    push = next_push(device, wait=0)
    assert push["nas"] == "api:push-agent"
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(agent.post, "/api/v1/auth", {"username": "push-ivan", "password": "",
                                                      "state": first["state"]})
    pool.shutdown(wait=False)
    time.sleep(0.3)
    decide(device, push, "approve")
    assert future.result(timeout=10).json()["result"] == "accept"
    assert base64.b64decode(first["state"])
