"""POST /auth (agent clients: the RADIUS pipeline) and POST /otp/verify (user clients)."""

from __future__ import annotations

import base64

import pytest
from tests.support import PASSWORD, assert_problem, enrolled_user



@pytest.fixture(scope="module")
def agent(api_server):
    return api_server.client_of_type("agent", "vpn-portal")[1]


@pytest.fixture(scope="module")
def app(api_server):
    return api_server.client_of_type("user", "web-shop")[1]


def audit(admin_api, username):
    return admin_api.all_pages("/api/v1/audit-events", 500, username=username)


def test_auth_accepts_a_password_user_with_reply_attributes(admin_api, agent):
    assert admin_api.post("/api/v1/users", {"username": "pam-user", "password": PASSWORD,
                                            "password_confirmation": PASSWORD, "framed_ip_address": "10.1.2.3",
                                            "reply_attributes": [{"name": "Class", "value": "staff"}]}).status == 201
    reply = agent.post("/api/v1/auth", {"username": "pam-user", "password": PASSWORD})
    assert reply.status == 200
    assert reply.json() == {"result": "accept", "attributes": [{"name": "Framed-IP-Address", "value": "10.1.2.3"},
                                                                {"name": "Class", "value": "staff"}]}
    assert agent.post("/api/v1/auth", {"username": "pam-user", "password": "wrong-password"}).json() == \
        {"result": "reject", "attributes": []}
    assert agent.post("/api/v1/auth", {"username": "no-such-user", "password": PASSWORD}).json() == \
        {"result": "reject", "attributes": []}
    events = audit(admin_api, "pam-user")
    auth_events = [event for event in events if event["type"] == "auth"]
    assert [event["result"] for event in auth_events][:2] == ["reject", "accept"]  # newest first
    assert all(event["client"] == "api:vpn-portal" for event in auth_events)
    assert PASSWORD not in str(events)


def test_auth_runs_a_totp_challenge_round(admin_api, agent):
    totp, now = enrolled_user(admin_api, "mfa-user")
    first = agent.post("/api/v1/auth", {"username": "mfa-user", "password": PASSWORD})
    challenge = first.json()
    assert challenge["result"] == "challenge" and challenge["attributes"] == []
    assert "code" in challenge["message"]
    assert len(base64.b64decode(challenge["state"])) >= 16
    answer = agent.post("/api/v1/auth", {"username": "mfa-user", "password": totp.at(now),
                                         "state": challenge["state"]})
    assert answer.json()["result"] == "accept"
    reused = agent.post("/api/v1/auth", {"username": "mfa-user", "password": totp.at(now + 30),
                                         "state": challenge["state"]})
    assert reused.json()["result"] == "reject"  # a State is single-use


def test_auth_challenge_with_a_replayed_or_wrong_code_is_rejected(admin_api, agent):
    totp, now = enrolled_user(admin_api, "mfa-replay")
    state = agent.post("/api/v1/auth", {"username": "mfa-replay", "password": PASSWORD}).json()["state"]
    replay = agent.post("/api/v1/auth", {"username": "mfa-replay", "password": totp.at(now - 30), "state": state})
    assert replay.json() == {"result": "reject", "attributes": []}
    state = agent.post("/api/v1/auth", {"username": "mfa-replay", "password": PASSWORD}).json()["state"]
    forged = base64.b64encode(b"x" * 20).decode()
    assert agent.post("/api/v1/auth", {"username": "mfa-replay", "password": totp.at(now),
                                       "state": forged}).json()["result"] == "reject"
    assert_problem(agent.post("/api/v1/auth", {"username": "mfa-replay", "password": "1", "state": "not base64!"}),
                   422, "invalid")


def test_auth_state_is_bound_to_the_agent(api_server, admin_api, agent):
    totp, now = enrolled_user(admin_api, "mfa-bound")
    other = api_server.client_of_type("agent", "other-portal")[1]
    state = agent.post("/api/v1/auth", {"username": "mfa-bound", "password": PASSWORD}).json()["state"]
    stolen = other.post("/api/v1/auth", {"username": "mfa-bound", "password": totp.at(now), "state": state})
    assert stolen.json()["result"] == "reject"


def test_auth_input_validation(agent):
    assert_problem(agent.post("/api/v1/auth", {"username": "x"}), 422, "invalid")
    assert_problem(agent.post("/api/v1/auth", {"username": "x", "password": "y", "nas": "vpn1"}), 422,
                   "unknown_field")
    assert_problem(agent.post("/api/v1/auth", {"username": "", "password": "y"}), 422, "invalid")


def test_otp_verify_is_replay_protected(admin_api, app):
    totp, now = enrolled_user(admin_api, "app-user", password=None)
    code = totp.at(now)
    assert app.post("/api/v1/otp/verify", {"username": "app-user", "otp": code}).json() == {"valid": True}
    replay = app.post("/api/v1/otp/verify", {"username": "app-user", "otp": code})
    assert replay.status == 200 and replay.json() == {"valid": False}
    events = [event for event in audit(admin_api, "app-user") if event["type"] == "auth"]
    assert [(event["result"], event["reason"]) for event in events[:2]] == [("reject", "otp_replay"), ("accept", "ok")]
    assert events[0]["client"] == "api:web-shop"


@pytest.mark.parametrize("otp", ["", "12345", "1234567", "abcdef", "١٢٣٤٥٦", "123 456", "x" * 500])
def test_otp_verify_answers_false_for_malformed_codes(admin_api, app, otp):
    if admin_api.get("/api/v1/users/app-malformed").status == 404:
        enrolled_user(admin_api, "app-malformed", password=None)
    reply = app.post("/api/v1/otp/verify", {"username": "app-malformed", "otp": otp})
    assert reply.status == 200 and reply.json() == {"valid": False}


def test_otp_verify_counts_failures_until_the_user_is_blocked(admin_api, app):
    totp, now = enrolled_user(admin_api, "app-guesser", password=None)
    wrong = "000000" if totp.at(now) != "000000" else "999999"
    for _ in range(5):
        assert app.post("/api/v1/otp/verify", {"username": "app-guesser", "otp": wrong}).json() == {"valid": False}
    shown = admin_api.get("/api/v1/users/app-guesser").json()
    assert shown["status"] == "blocked" and shown["blocked"] is True
    blocked = app.post("/api/v1/otp/verify", {"username": "app-guesser", "otp": totp.at(now)})
    assert blocked.json() == {"valid": False}  # a blocked user's right code is refused too
    assert admin_api.delete("/api/v1/blocked/app-guesser").status == 204
    assert app.post("/api/v1/otp/verify", {"username": "app-guesser", "otp": totp.at(now)}).json() == {"valid": True}


def test_otp_verify_refuses_disabled_unknown_and_unenrolled_users(admin_api, app):
    totp, now = enrolled_user(admin_api, "app-disabled", password=None)
    admin_api.post("/api/v1/users/app-disabled/disable")
    assert app.post("/api/v1/otp/verify", {"username": "app-disabled", "otp": totp.at(now)}).json() == {"valid": False}
    assert app.post("/api/v1/otp/verify", {"username": "nobody-here", "otp": "123456"}).json() == {"valid": False}
    admin_api.post("/api/v1/users", {"username": "app-plain"})
    assert app.post("/api/v1/otp/verify", {"username": "app-plain", "otp": "123456"}).json() == {"valid": False}
    assert_problem(app.post("/api/v1/otp/verify", {"username": "x"}), 422, "invalid")
