"""Push approval and the authenticator app's device, in process (SPEC §3.1 push, §5 /mobile/*,
§6; issue 8): activation and device tokens, remote configuration sync, push requests and
their states, the pipeline's held decision and its resumption, the protocol holding a reply
without a thread, the reactor-timer poll helper and the wake-up webhook.

Time is a fake clock given to the runtime (``radiusd.service.time`` is patched while it is
built), so expiry is tested without sleeping.
"""

from __future__ import annotations

import http.server
import json
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from types import SimpleNamespace

import pyotp
import pytest
from sqlalchemy import select

import radiusd.service as service_module
from radiusd.config import Config
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, devices, otp_enrolments, push_requests, users
from radiusd.decisions import Accept, Challenge, PushPending, Reason, Reject
from radiusd.admission import WorkQueue
from radiusd.authentication import Authentication
from radiusd.model import AuthRequest
from radiusd.polling import poll
from radiusd.plugins.push import PushSection
from radiusd.services import Conflict, NotFound
from radiusd.services.blocks import BlockService
from radiusd.services.devices import ActivationRefused, DeviceService
from radiusd.services.factory import Services
from radiusd.services.otp import OtpService
from radiusd.services.push import PushService, WebhookNotifier
from tests.support import write_seed_key
from tests.unit.test_blocks import Clock as FakeClock
from tests.fakes import NAS1, Harness, InlinePool, InlineReactor, access_request, status_server, verified

T0 = 1_800_000_015.0  # 15 s into a TOTP step
PASSWORD = "correct-horse-battery"
PUSH_TIMEOUT = 2


@dataclass
class World:
    runtime: object
    clock: FakeClock

    @property
    def database(self) -> Database:
        return self.runtime.database

    def services(self) -> Services:
        """The runtime's services (on the world's clock), acting as "test"."""
        return self.runtime.services.as_actor("test")

    def devices(self) -> DeviceService:
        return self.services().devices

    def pushes(self) -> PushService:
        return self.services().pushes

    def blocks(self) -> BlockService:
        return self.services().blocks

    def otp(self) -> OtpService:
        return self.services().otp

    def add_user(self, name: str, **fields) -> int:
        self.services().users.create(name, fields, password=PASSWORD, confirmation=PASSWORD)
        with self.database.engine.connect() as conn:
            return conn.execute(select(users.c.id).where(users.c.username == name)).scalar()

    def enrol(self, name: str) -> tuple[pyotp.TOTP, str]:
        enrolment = self.otp().enroll(name)
        return pyotp.parse_uri(enrolment["otpauth_uri"]), enrolment["activation_code"]

    def activate(self, name: str) -> tuple[pyotp.TOTP, dict]:
        """An enrolled, activated user; the clock moves on a step so the next code is fresh."""
        totp, code = self.enrol(name)
        device = self.devices().activate(code, totp.at(self.clock()), device_name="phone", platform="test",
                                         blocks=self.blocks())
        self.clock.advance(30)
        return totp, device

    def failures(self, name: str) -> int:
        with self.database.engine.connect() as conn:
            return conn.execute(select(users.c.failed_attempts).where(users.c.username == name)).scalar()

    def sample(self, name: str, **labels) -> float:
        return self.runtime.metrics.registry.get_sample_value(name, labels) or 0.0

    def auth_events(self, name: str) -> list[str]:
        with self.database.engine.connect() as conn:
            return [row.reason for row in conn.execute(
                select(audit_events).where(audit_events.c.username == name, audit_events.c.type == "auth"))]


@pytest.fixture
def world(tmp_path, monkeypatch):
    clock = FakeClock(T0)
    url = f"sqlite:///{tmp_path / 'radiusd.db'}"
    database = Database(url)
    migrate.upgrade(database)
    database.dispose()
    config = Config.model_validate({
        "security": {"seed_key": {"file": str(write_seed_key(tmp_path / 'seed.key'))}},
        "database": {"url": url}, "server": {"auth_threads": 2},
        "mfa": {"push_timeout_seconds": PUSH_TIMEOUT, "required": True}})
    monkeypatch.setattr(service_module, "time", SimpleNamespace(time=clock))
    runtime = service_module.build_runtime(config)
    yield World(runtime, clock)
    runtime.database.dispose()


def request(name: str, password: bytes | str = PASSWORD, *, mode: str = "append", state: bytes | None = None,
            nas: str = "nas1") -> AuthRequest:
    return AuthRequest(nas=nas, mfa_mode=mode, user_name=name,
                       password=password.encode() if isinstance(password, str) else password, state=state,
                       auth_type="pap", calling_station_id="02-00-00-00-00-01", received_at=T0)


# -- activation and device tokens ----------------------------------------------------------------

def test_activation_verifies_the_enrolment_and_stores_the_device_token_only_as_a_digest(world):
    world.add_user("alice")
    totp, code = world.enrol("alice")
    device = world.devices().activate(code, totp.at(world.clock()), device_name="Pixel", platform="android",
                                      blocks=world.blocks())
    assert set(device) == {"device_id", "device_token", "username"} and device["username"] == "alice"
    assert world.otp().show("alice")["verified"] is True
    with world.database.engine.connect() as conn:
        row = conn.execute(select(devices)).one()
        spent = conn.execute(select(otp_enrolments.c.activation_code_hash)).scalar()
    assert device["device_token"] not in row.token_hash and len(row.token_hash) == 64
    assert spent is None
    principal = world.devices().authenticate(device["device_token"])
    assert (principal.client_id, principal.name, principal.type) == (device["device_id"], "alice", "device")
    assert world.devices().authenticate(device["device_token"] + "x") is None
    assert world.devices().authenticate("not-a-device-token") is None


def test_a_wrong_code_is_refused_and_counts_a_failure_and_a_used_code_cannot_activate_again(world):
    world.add_user("bob")
    totp, code = world.enrol("bob")
    with pytest.raises(ActivationRefused, match="one-time code is wrong"):
        world.devices().activate(code, "000000" if totp.at(world.clock()) != "000000" else "111111",
                                 device_name="p", platform="t", blocks=world.blocks())
    assert world.failures("bob") == 1
    world.devices().activate(code, totp.at(world.clock()), device_name="p", platform="t", blocks=world.blocks())
    assert world.failures("bob") == 0  # a success clears the count
    with pytest.raises(ActivationRefused, match="unknown or already used"):
        world.devices().activate(code, totp.at(world.clock() + 30), device_name="p", platform="t",
                                 blocks=world.blocks())


def test_an_expired_activation_code_is_refused(world):
    world.add_user("carol")
    totp, code = world.enrol("carol")
    world.clock.advance(world.runtime.config.mfa.enrollment_ttl_seconds + 1)
    with pytest.raises(ActivationRefused, match="expired"):
        world.devices().activate(code, totp.at(world.clock()), device_name="p", platform="t", blocks=world.blocks())
    assert world.otp().show("carol")["verified"] is False


def test_a_blocked_user_cannot_activate(world):
    world.add_user("dave")
    totp, code = world.enrol("dave")
    world.blocks().block("dave", permanent=True, reason="test")
    with pytest.raises(ActivationRefused, match="may not activate"):
        world.devices().activate(code, totp.at(world.clock()), device_name="p", platform="t", blocks=world.blocks())


def test_resetting_the_enrolment_revokes_the_device_token(world):
    world.add_user("erin")
    _, device = world.activate("erin")
    world.otp().reset("erin")
    assert world.devices().authenticate(device["device_token"]) is None
    with world.database.engine.connect() as conn:
        assert conn.execute(select(devices)).all() == []


def test_config_sync_shows_the_current_version_and_only_it_can_be_acknowledged(world):
    world.add_user("frank")
    _, device = world.activate("frank")
    principal = world.devices().authenticate(device["device_token"])
    assert world.devices().config(principal) == {
        "version": 1, "pin": {"required": False, "min_length": 4, "max_length": 6, "max_attempts": 3},
        "biometric": {"required": False}}
    world.otp().set_remote_config_bulk(["frank"], pin_required=True)
    config = world.devices().config(principal)
    assert config["version"] == 2 and config["pin"]["required"] is True
    with pytest.raises(Conflict, match="not the current"):
        world.devices().acknowledge(principal, 1)
    world.devices().acknowledge(principal, 2)
    entry = world.otp().show("frank")
    assert (entry["config_version"], entry["applied_version"]) == (2, 2)
    assert entry["last_sync_at"] == datetime.fromtimestamp(world.clock(), timezone.utc)


# -- push requests -------------------------------------------------------------------------------

def test_a_device_cannot_decide_another_users_push_nor_a_decided_or_expired_one(world):
    alice, bob = world.add_user("alice"), world.add_user("bob")
    pushes = world.pushes()
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
    push = world.pushes().create(alice, "alice", device_row=None, requested_by="rc_one")
    assert world.pushes().show(push["push_id"], requested_by="rc_one")["status"] == "pending"
    with pytest.raises(NotFound):
        world.pushes().show(push["push_id"], requested_by="rc_two")


# -- the pipeline ------------------------------------------------------------------------------------

def held(world, name: str, **kwargs) -> tuple[AuthRequest, PushPending]:
    sent = request(name, **kwargs)
    decision = world.runtime.pipeline.run(sent)
    assert isinstance(decision, PushPending), decision
    return sent, decision


def test_append_mode_push_is_held_until_approved_then_accepted_with_reply_attributes(world):
    user_id = world.add_user("alice", framed_ip_address="10.0.0.7")
    world.activate("alice")
    sent, pending = held(world, "alice")
    assert world.auth_events("alice") == []  # post_auth waits for the final decision
    assert world.runtime.pipeline.resume(sent, pending) is None
    [push] = world.pushes().pending_for(user_id)
    assert push["calling_station_id"] == "02-00-00-00-00-01" and push["nas"] == "nas1"
    world.pushes().decide(push["push_id"], user_id=user_id, approve=True)
    decision = world.runtime.pipeline.resume(sent, pending)
    assert isinstance(decision, Accept) and decision.decided_by == "push"
    assert ("Framed-IP-Address", "10.0.0.7") in decision.attributes
    assert world.auth_events("alice") == ["ok"]


def test_an_approved_push_is_refused_when_the_user_was_blocked_meanwhile(world):
    user_id = world.add_user("carol")
    world.activate("carol")
    sent, pending = held(world, "carol")
    [push] = world.pushes().pending_for(user_id)
    world.blocks().block("carol", permanent=True, reason="lost laptop")
    world.pushes().decide(push["push_id"], user_id=user_id, approve=True)
    assert world.runtime.pipeline.resume(sent, pending).reason == Reason.BLOCKED
    assert world.auth_events("carol") == ["blocked"]


def test_a_denied_push_is_rejected_as_push_denied_and_counts_a_failure(world):
    user_id = world.add_user("bob")
    world.activate("bob")
    sent, pending = held(world, "bob")
    [push] = world.pushes().pending_for(user_id)
    world.pushes().decide(push["push_id"], user_id=user_id, approve=False)
    assert world.runtime.pipeline.resume(sent, pending) == Reject(Reason.PUSH_DENIED, "push")
    assert world.failures("bob") == 1
    assert world.auth_events("bob") == ["push_denied"]


def test_an_unanswered_push_expires_into_push_timeout_without_counting_a_failure(world):
    user_id = world.add_user("carol")
    world.activate("carol")
    sent, pending = held(world, "carol")
    assert pending.deadline == world.clock() + PUSH_TIMEOUT
    world.clock.advance(PUSH_TIMEOUT)
    assert world.runtime.pipeline.resume(sent, pending) == Reject(Reason.PUSH_TIMEOUT, "push")
    with world.database.engine.connect() as conn:
        assert conn.execute(select(push_requests.c.state).where(push_requests.c.user_id == user_id)).scalar() \
            == "expired"
    assert world.failures("carol") == 0


def test_append_mode_password_ending_in_six_digits_is_checked_as_totp_without_a_push(world):
    world.add_user("dave")
    totp, _ = world.activate("dave")
    decision = world.runtime.pipeline.run(request("dave", PASSWORD + totp.at(world.clock())))
    assert isinstance(decision, Accept) and decision.decided_by == "totp"
    assert world.runtime.pipeline.run(request("dave", PASSWORD + "000000")).reason == Reason.BAD_OTP
    with world.database.engine.connect() as conn:
        assert conn.execute(select(push_requests)).all() == []


def test_a_wrong_password_sends_no_push(world):
    world.add_user("erin")
    world.activate("erin")
    assert world.runtime.pipeline.run(request("erin", "wrong-password")).reason == Reason.BAD_PASSWORD
    with world.database.engine.connect() as conn:
        assert conn.execute(select(push_requests)).all() == []


def test_a_user_without_an_activated_app_keeps_plain_totp(world):
    world.add_user("frank")
    totp, code = world.enrol("frank")
    world.otp().verify("frank", totp.at(world.clock()))
    decision = world.runtime.pipeline.run(request("frank", mode="challenge"))
    assert isinstance(decision, Challenge) and decision.factor == "totp"


def test_challenge_mode_sends_a_push_with_a_challenge_and_waits_for_it_on_an_empty_answer(world):
    user_id = world.add_user("gina")
    world.activate("gina")
    challenge = world.runtime.pipeline.run(request("gina", mode="challenge"))
    assert isinstance(challenge, Challenge) and challenge.factor == "push"
    [push] = world.pushes().pending_for(user_id)
    assert f"request {push['number']}" in challenge.prompt and "code" in challenge.prompt
    assert world.sample("radiusd_challenges_total", factor="push") == 1
    answer = request("gina", b"", mode="challenge", state=challenge.state)
    pending = world.runtime.pipeline.run(answer)
    assert isinstance(pending, PushPending) and pending.push_id == push["push_id"]
    assert pending.deadline == world.clock() + PUSH_TIMEOUT
    world.pushes().decide(push["push_id"], user_id=user_id, approve=True)
    assert isinstance(world.runtime.pipeline.resume(answer, pending), Accept)


def test_challenge_mode_answered_with_a_code_checks_it_as_totp(world):
    world.add_user("hank")
    totp, _ = world.activate("hank")
    challenge = world.runtime.pipeline.run(request("hank", mode="challenge"))
    decision = world.runtime.pipeline.run(request("hank", totp.at(world.clock()), mode="challenge",
                                                  state=challenge.state))
    assert isinstance(decision, Accept) and decision.decided_by == "totp"
    challenge = world.runtime.pipeline.run(request("hank", mode="challenge"))
    wrong = world.runtime.pipeline.run(request("hank", "123", mode="challenge", state=challenge.state))
    assert wrong.reason == Reason.BAD_OTP  # numeric: a code, not a push wait


def test_a_held_decision_no_plugin_resolves_is_rejected_after_the_grace(world):
    world.add_user("ivan")
    user = world.runtime.pipeline.hook.radiusd_find_user(request=request("ivan"))
    foreign = PushPending("elsewhere", world.clock() + 1, user, decided_by="another_plugin")
    assert world.runtime.pipeline.resume(request("ivan"), foreign) is None
    world.clock.advance(5)
    assert world.runtime.pipeline.resume(request("ivan"), foreign).reason == Reason.PUSH_TIMEOUT


# -- waiting without a thread -----------------------------------------------------------------------

def test_poll_asks_at_once_then_on_timers_until_an_answer():
    reactor, answers = InlineReactor(), iter([None, None, "done"])
    calls = []
    result = poll(reactor, InlinePool(), lambda: calls.append(1) or next(answers), 0.25)
    assert len(calls) == 1 and not result.called
    reactor.advance(0.25)
    assert len(calls) == 2 and not result.called
    reactor.advance(0.25)
    assert result.result == "done" and reactor.getDelayedCalls() == []


def test_poll_answers_expired_at_the_deadline_and_cancelling_stops_it():
    reactor = InlineReactor()
    result = poll(reactor, InlinePool(), lambda: None, 0.5, deadline=1.2, expired=lambda: "empty")
    reactor.pump([0.5, 0.5, 0.2])
    assert result.result == "empty"
    stopped = poll(reactor, InlinePool(), lambda: None, 0.5)
    stopped.cancel()
    stopped.addErrback(lambda failure: None)
    assert reactor.getDelayedCalls() == []


def test_authentication_holds_a_push_until_the_phone_decides_and_counts_the_final_decision_once(world):
    user_id = world.add_user("judy")
    world.activate("judy")
    reactor = InlineReactor()
    queue = WorkQueue(reactor, InlinePool(), threads=1, limit=10, target_seconds=2, clock=world.clock)
    authentication = Authentication(reactor, queue, world.runtime.pipeline, world.runtime.metrics)
    decided = []
    authentication.decide(request("judy")).addCallback(decided.append)
    reactor.advance(0.25)
    assert decided == []  # held: no thread waits, a timer asks again
    [push] = world.pushes().pending_for(user_id)
    world.pushes().decide(push["push_id"], user_id=user_id, approve=True)
    reactor.advance(0.25)
    assert isinstance(decided[0], Accept)
    counted = world.runtime.metrics.registry.get_sample_value
    assert counted("radiusd_auth_decisions_total", {"reason": "ok"}) == 1
    assert counted("radiusd_auth_decisions_total", {"reason": "push_pending"}) is None


def test_the_protocol_holds_a_push_and_answers_status_server_meanwhile():
    harness = Harness(reject_delay_seconds=0)
    phone = SimpleNamespace(decision=None)
    harness.authentication.pipeline = SimpleNamespace(run=None, resume=lambda request, pending: phone.decision)
    login = access_request()
    harness.receive(login.wire, NAS1)
    harness.answer(0, PushPending("p1", 0.0, None))
    harness.clock.advance(10)  # far past the request budget: still held, no reply
    assert harness.transport.written == []
    probe = status_server()
    harness.receive(probe.wire, NAS1)  # answered at once while the push is held
    assert verified(probe, harness.transport.written[0][0]).code == 2
    harness.receive(login.wire, NAS1)  # the NAS retransmits: a duplicate in progress, no second dispatch
    assert harness.dropped("duplicate_in_progress") == 1 and len(harness.dispatcher.requests) == 1
    phone.decision = Accept()
    harness.clock.advance(0.25)
    assert len(harness.transport.written) == 2
    assert verified(login, harness.transport.written[1][0]).code == 2  # Access-Accept
    assert harness.decisions("ok") == 1 and harness.sample("radiusd_requests_in_progress") == 0


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
