"""Push requests and the authenticator app's device (SPEC §3.1 push, §5 /mobile/*, §6; issue 8),
in process: activation and device tokens, remote configuration sync, push requests and their
states, and the wake-up webhook. The push plugin's part is tests/plugins/test_push.py.

Time is the world's fake clock, so expiry is tested without sleeping.
"""

from __future__ import annotations

import http.server
import json
import threading
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from radiusd.db.tables import devices, otp_enrolments
from radiusd.plugins.push import PushSection
from radiusd.services import Conflict, NotFound
from radiusd.services.devices import ActivationRefused
from radiusd.services.push import WebhookNotifier

PUSH_TIMEOUT = 2


@pytest.fixture
def world(make_world):
    return make_world(mfa={"push_timeout_seconds": PUSH_TIMEOUT, "required": True})


# -- activation and device tokens ----------------------------------------------------------------

def test_activation_verifies_the_enrolment_and_stores_the_device_token_only_as_a_digest(world):
    services = world.services()
    world.add_user("alice")
    totp, code = world.enrol("alice")
    device = services.devices.activate(code, totp.at(world.clock()), device_name="Pixel", platform="android",
                                       blocks=services.blocks)
    assert set(device) == {"device_id", "device_token", "username"} and device["username"] == "alice"
    assert services.otp.show("alice")["verified"] is True
    with world.database.engine.connect() as conn:
        row = conn.execute(select(devices)).one()
        spent = conn.execute(select(otp_enrolments.c.activation_code_hash)).scalar()
    assert device["device_token"] not in row.token_hash and len(row.token_hash) == 64
    assert spent is None
    principal = services.devices.authenticate(device["device_token"])
    assert (principal.client_id, principal.name, principal.type) == (device["device_id"], "alice", "device")
    assert services.devices.authenticate(device["device_token"] + "x") is None
    assert services.devices.authenticate("not-a-device-token") is None


def test_a_wrong_code_is_refused_and_counts_a_failure_and_a_used_code_cannot_activate_again(world):
    services = world.services()
    world.add_user("bob")
    totp, code = world.enrol("bob")
    with pytest.raises(ActivationRefused, match="one-time code is wrong"):
        services.devices.activate(code, "000000" if totp.at(world.clock()) != "000000" else "111111",
                                  device_name="p", platform="t", blocks=services.blocks)
    assert world.failures("bob") == 1
    services.devices.activate(code, totp.at(world.clock()), device_name="p", platform="t", blocks=services.blocks)
    assert world.failures("bob") == 0  # a success clears the count
    with pytest.raises(ActivationRefused, match="unknown or already used"):
        services.devices.activate(code, totp.at(world.clock() + 30), device_name="p", platform="t",
                                  blocks=services.blocks)


def test_an_expired_activation_code_is_refused(world):
    services = world.services()
    world.add_user("carol")
    totp, code = world.enrol("carol")
    world.clock.advance(world.runtime.config.mfa.enrollment_ttl_seconds + 1)
    with pytest.raises(ActivationRefused, match="expired"):
        services.devices.activate(code, totp.at(world.clock()), device_name="p", platform="t", blocks=services.blocks)
    assert services.otp.show("carol")["verified"] is False


def test_a_blocked_user_cannot_activate(world):
    services = world.services()
    world.add_user("dave")
    totp, code = world.enrol("dave")
    services.blocks.block("dave", permanent=True, reason="test")
    with pytest.raises(ActivationRefused, match="may not activate"):
        services.devices.activate(code, totp.at(world.clock()), device_name="p", platform="t", blocks=services.blocks)


def test_resetting_the_enrolment_revokes_the_device_token(world):
    services = world.services()
    world.add_user("erin")
    _, device = world.activate("erin")
    services.otp.reset("erin")
    assert services.devices.authenticate(device["device_token"]) is None
    with world.database.engine.connect() as conn:
        assert conn.execute(select(devices)).all() == []


def test_config_sync_shows_the_current_version_and_only_it_can_be_acknowledged(world):
    services = world.services()
    world.add_user("frank")
    _, device = world.activate("frank")
    principal = services.devices.authenticate(device["device_token"])
    assert services.devices.config(principal) == {
        "version": 1, "pin": {"required": False, "min_length": 4, "max_length": 6, "max_attempts": 3},
        "biometric": {"required": False}}
    services.otp.set_remote_config_bulk(["frank"], pin_required=True)
    config = services.devices.config(principal)
    assert config["version"] == 2 and config["pin"]["required"] is True
    with pytest.raises(Conflict, match="not the current"):
        services.devices.acknowledge(principal, 1)
    services.devices.acknowledge(principal, 2)
    entry = services.otp.show("frank")
    assert (entry["config_version"], entry["applied_version"]) == (2, 2)
    assert entry["last_sync_at"] == datetime.fromtimestamp(world.clock(), timezone.utc)


# -- push requests -------------------------------------------------------------------------------

def test_a_device_cannot_decide_another_users_push_nor_a_decided_or_expired_one(world):
    alice, bob = world.add_user("alice"), world.add_user("bob")
    pushes = world.services().pushes
    push = pushes.create(alice, "alice", device_row=None, nas="nas1")
    assert len(push["number"]) == 2 and push["status"] == "pending"
    with pytest.raises(NotFound):
        pushes.decide(push["push_id"], user_id=bob, approve=True)
    assert pushes.decide(push["push_id"], user_id=alice, approve=False)["status"] == "denied"
    with pytest.raises(Conflict, match="denied"):
        pushes.decide(push["push_id"], user_id=alice, approve=True)
    late = pushes.create(alice, "alice", device_row=None)
    world.clock.advance(PUSH_TIMEOUT)
    assert pushes.pending_for(alice) == []
    with pytest.raises(Conflict, match="expired"):
        pushes.decide(late["push_id"], user_id=alice, approve=True)
    assert world.sample("radiusd_push_requests_total", event="expired") == 1
    assert world.sample("radiusd_push_requests_total", event="denied") == 1


def test_only_the_requesting_api_client_sees_its_push(world):
    alice = world.add_user("alice")
    pushes = world.services().pushes
    push = pushes.create(alice, "alice", device_row=None, requested_by="rc_one")
    assert pushes.show(push["push_id"], requested_by="rc_one")["status"] == "pending"
    with pytest.raises(NotFound):
        pushes.show(push["push_id"], requested_by="rc_two")


# -- the wake-up webhook ------------------------------------------------------------------------------

@pytest.fixture
def webhook_receiver():
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((self.headers.get("Authorization"),
                             json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/wake", received
    server.shutdown()
    server.server_close()


def test_the_webhook_posts_the_push_id_only_and_failures_are_ignored(webhook_receiver):
    url, received = webhook_receiver
    notifier = WebhookNotifier(PushSection(webhook_url=url, webhook_headers={"Authorization": "Bearer relay"}))
    expires = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert notifier.post(json.dumps({"type": "push.created", "push_id": "abc"}).encode())
    notifier.notify("p-123", expires)
    for _ in range(100):
        if len(received) == 2:
            break
        threading.Event().wait(0.02)
    assert received[1] == ("Bearer relay", {"type": "push.created", "push_id": "p-123",
                                            "expires_at": expires.isoformat()})
    dead = WebhookNotifier(PushSection(webhook_url="http://127.0.0.1:9/nothing-listens",
                                       webhook_timeout_seconds=1))
    assert dead.post(b"{}") is False
    assert not WebhookNotifier(PushSection()).enabled
