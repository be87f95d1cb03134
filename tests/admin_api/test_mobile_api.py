"""The authenticator app's routes and the push routes of user clients, over real HTTP against a
real ``radiusd serve`` (SPEC §5 ``/mobile/*``, ``/push``; §6; issue 8): activation and its
refusals and limits, device tokens, remote configuration sync, the long poll, deciding pushes,
user-client pushes and the wake-up webhook (a loopback HTTP server).
"""

from __future__ import annotations

import http.client
import http.server
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import (Api, activated_user, admin, assert_problem, enrolment_for, start_api_server, step_start,
                           totp_of)

ACTIVATIONS_PER_ADDRESS = 40


@pytest.fixture(scope="module")
def webhook():
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/push-wake", received
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, webhook):
    started = start_api_server(tmp_path_factory.mktemp("mobile"), sections={
        "push": {"webhook_url": webhook[0]},
        "api": {"activation_requests_per_minute": ACTIVATIONS_PER_ADDRESS}})  # this module activates ~25
    yield started
    started.server.stop()


@pytest.fixture(scope="module")
def admin_api(server) -> Api:
    return server.admin_api()


@pytest.fixture(scope="module")
def user_app(server) -> Api:
    return server.client_of_type("user", "mobile-app")[1]


def activation(enrolment: dict, otp: str | None = None) -> dict:
    return {"activation_code": enrolment["activation_code"],
            "otp": otp if otp is not None else totp_of(enrolment).at(step_start() - 30),
            "device_name": "Pixel", "platform": "android"}


def entry(admin_api: Api, username: str) -> dict:
    return next(item for item in admin_api.all_pages("/api/v1/softotp", 500) if item["username"] == username)


def wrong_code(enrolment: dict) -> str:
    totp = totp_of(enrolment)
    valid = {totp.at(time.time() + offset * 30) for offset in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222") if code not in valid)


# -- activation ---------------------------------------------------------------------------------------

def test_activation_returns_a_device_token_and_marks_the_enrolment_verified(server, admin_api):
    enrolment = enrolment_for(admin_api, "mob-alice")
    assert entry(admin_api, "mob-alice")["verified"] is False
    reply = server.api().post("/api/v1/mobile/activate", activation(enrolment))
    assert reply.status == 201, reply.raw
    document = reply.json()
    assert set(document) == {"device_id", "device_token", "username"}
    assert entry(admin_api, "mob-alice")["verified"] is True
    device = server.api(document["device_token"])
    assert device.get("/api/v1/mobile/config").status == 200
    assert_problem(device.get("/api/v1/users"), 403, "insufficient_scope")  # a device is no admin
    assert_problem(admin_api.get("/api/v1/mobile/config"), 403, "insufficient_scope")
    assert_problem(server.api("rdv_" + "x" * 43).get("/api/v1/mobile/config"), 401, "invalid_token")
    events = admin_api.get("/api/v1/audit-events", query={"username": "mob-alice", "type": "device"}).json()
    assert events["items"][0]["reason"] == "otp.activated"
    assert document["device_token"] not in server.server.log()


def test_a_used_or_unknown_activation_code_is_refused(server, admin_api):
    enrolment = enrolment_for(admin_api, "mob-bob")
    assert server.api().post("/api/v1/mobile/activate", activation(enrolment)).status == 201
    assert_problem(server.api().post("/api/v1/mobile/activate", activation(enrolment)), 403, "activation_refused")
    forged = {**activation(enrolment), "activation_code": "AAAAAAAAAAAAAAAA"}
    assert_problem(server.api().post("/api/v1/mobile/activate", forged), 403, "activation_refused")


def test_an_expired_activation_code_is_refused(server, admin_api):
    enrolment = enrolment_for(admin_api, "mob-carol")
    with sqlite3.connect(server.database_url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE otp_enrolments SET expires_at = '2000-01-01 00:00:00.000000' "
                     "WHERE user_id = (SELECT id FROM users WHERE username = 'mob-carol')")
    problem = assert_problem(server.api().post("/api/v1/mobile/activate", activation(enrolment)), 403,
                             "activation_refused")
    assert "expired" in problem["detail"]
    assert entry(admin_api, "mob-carol")["verified"] is False


def test_wrong_codes_count_as_failures_and_attempts_per_activation_code_are_limited(server, admin_api):
    enrolment = enrolment_for(admin_api, "mob-dave")
    bad = activation(enrolment, wrong_code(enrolment))
    for _ in range(5):  # the lockout's max_failures (5) and the per-code limit (5 a minute)
        assert_problem(server.api().post("/api/v1/mobile/activate", bad), 403, "activation_refused")
    blocked = {item["username"]: item for item in admin_api.all_pages("/api/v1/blocked", 500)}
    assert blocked["mob-dave"]["failed_attempts"] == 5
    limited = server.api().post("/api/v1/mobile/activate", activation(enrolment))
    assert_problem(limited, 429, "rate_limited")
    assert int(limited.headers["retry-after"]) >= 1


def test_activation_attempts_per_source_address_are_limited(server):
    def attempt() -> int:  # from another loopback address, so the other tests keep their budget
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10,
                                                source_address=("127.0.0.77", 0))
        try:
            body = json.dumps({"activation_code": f"NOPE{time.monotonic_ns()}", "otp": "123456",
                               "device_name": "x", "platform": "y"})
            connection.request("POST", "/api/v1/mobile/activate", body=body,
                               headers={"Content-Type": "application/json"})
            return connection.getresponse().status
        finally:
            connection.close()

    statuses = [attempt() for _ in range(ACTIVATIONS_PER_ADDRESS + 1)]  # [api] activation_requests_per_minute
    assert statuses == [403] * ACTIVATIONS_PER_ADDRESS + [429]


def test_resetting_the_enrolment_revokes_the_device_token(server, admin_api):
    _, device = activated_user(admin_api, "mob-erin")
    assert device.get("/api/v1/mobile/config").status == 200
    assert admin_api.delete("/api/v1/softotp/mob-erin").status == 204
    assert_problem(device.get("/api/v1/mobile/config"), 401, "invalid_token")


# -- remote configuration -------------------------------------------------------------------------------

def test_config_sync_sees_each_change_and_acknowledges_only_the_current_version(admin_api):
    _, device = activated_user(admin_api, "mob-frank")
    assert device.get("/api/v1/mobile/config").json() == {
        "version": 1, "pin": {"required": False, "min_length": 4, "max_length": 6, "max_attempts": 3},
        "biometric": {"required": False}}
    changed = admin_api.put("/api/v1/softotp/mob-frank/remote-config",
                            {"pin_required": True, "biometric_required": False})
    assert changed.json()["config_version"] == 2
    config = device.get("/api/v1/mobile/config").json()
    assert config["version"] == 2 and config["pin"]["required"] is True
    assert entry(admin_api, "mob-frank")["applied_version"] is None  # pending on the admin's list
    assert_problem(device.post("/api/v1/mobile/config/ack", {"version": 1}), 409, "conflict")
    acked = device.post("/api/v1/mobile/config/ack", {"version": 2})
    assert acked.status == 200 and acked.json()["applied_version"] == 2
    listed = entry(admin_api, "mob-frank")
    assert (listed["config_version"], listed["applied_version"]) == (2, 2) and listed["last_sync_at"]


def test_bulk_remote_configuration_is_seen_by_every_app(admin_api):
    devices = [activated_user(admin_api, name)[1] for name in ("mob-gina", "mob-hank")]
    reply = admin_api.post("/api/v1/softotp/remote-config",
                           {"usernames": ["mob-gina", "mob-hank"], "biometric_required": True})
    assert reply.status == 200
    for device in devices:
        config = device.get("/api/v1/mobile/config").json()
        assert config["version"] == 2 and config["biometric"]["required"] is True


# -- pushes ---------------------------------------------------------------------------------------------

def test_the_long_poll_answers_as_soon_as_a_push_appears(admin_api, user_app):
    _, device = activated_user(admin_api, "mob-ivan")
    started = time.monotonic()
    empty = device.get("/api/v1/mobile/push", query={"wait": 1})
    assert empty.json() == {"items": []} and 0.9 <= time.monotonic() - started < 2.5
    pool = ThreadPoolExecutor(max_workers=1)
    started = time.monotonic()
    waiting = pool.submit(device.get, "/api/v1/mobile/push", query={"wait": 20})
    time.sleep(0.5)
    created = user_app.post("/api/v1/push", {"username": "mob-ivan", "description": "Intranet sign-in"})
    assert created.status == 201, created.raw
    items = waiting.result(timeout=10).json()["items"]
    assert time.monotonic() - started < 3
    pool.shutdown()
    assert [(item["push_id"], item["number"], item["description"]) for item in items] == \
        [(created.json()["push_id"], created.json()["number"], "Intranet sign-in")]


def test_a_device_cannot_decide_another_users_push_and_a_push_is_decided_once(admin_api, user_app):
    _, jack = activated_user(admin_api, "mob-jack")
    _, kate = activated_user(admin_api, "mob-kate")
    push_id = user_app.post("/api/v1/push", {"username": "mob-jack"}).json()["push_id"]
    assert kate.get("/api/v1/mobile/push").json()["items"] == []
    assert_problem(kate.post(f"/api/v1/mobile/push/{push_id}", {"decision": "approve"}), 404, "not_found")
    assert jack.post(f"/api/v1/mobile/push/{push_id}", {"decision": "approve"}).json()["status"] == "approved"
    assert_problem(jack.post(f"/api/v1/mobile/push/{push_id}", {"decision": "deny"}), 409, "conflict")
    assert_problem(jack.post(f"/api/v1/mobile/push/{push_id}", {"decision": "maybe"}), 422, "invalid")


def test_a_user_client_starts_and_polls_a_push(server, admin_api, user_app):
    _, device = activated_user(admin_api, "mob-lena")
    created = user_app.post("/api/v1/push", {"username": "mob-lena"})
    assert created.status == 201
    location = created.headers["location"]
    assert user_app.get(location).json()["status"] == "pending"
    device.post(f"/api/v1/mobile/push/{created.json()['push_id']}", {"decision": "deny"})
    polled = user_app.get(location).json()
    assert polled["status"] == "denied" and polled["decided_at"]
    other_app = server.client_of_type("user", "other-app")[1]
    assert_problem(other_app.get(location), 404, "not_found")
    assert_problem(admin_api.post("/api/v1/push", {"username": "mob-lena"}), 403, "insufficient_scope")
    assert_problem(user_app.post("/api/v1/push", {"username": "mob-nobody"}), 404, "not_found")
    assert admin_api.post("/api/v1/users", {"username": "mob-noapp"}).status == 201
    assert_problem(user_app.post("/api/v1/push", {"username": "mob-noapp"}), 409, "conflict")


def test_a_new_push_wakes_the_webhook_with_its_id_only(admin_api, user_app, webhook):
    _, received = webhook
    activated_user(admin_api, "mob-mike")
    push_id = user_app.post("/api/v1/push", {"username": "mob-mike"}).json()["push_id"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(item["push_id"] == push_id for item in received):
        time.sleep(0.05)
    [sent] = [item for item in received if item["push_id"] == push_id]
    assert set(sent) == {"type", "push_id", "expires_at"} and sent["type"] == "push.created"


def test_the_cli_remote_config_bumps_the_version_the_app_sees(server, admin_api):
    _, device = activated_user(admin_api, "mob-nina")
    version = device.get("/api/v1/mobile/config").json()["version"]
    admin(server.config_path, "otp", "remote-config", "mob-nina", "--pin")
    config = device.get("/api/v1/mobile/config").json()
    assert config["version"] == version + 1 and config["pin"]["required"] is True
