"""The API end to end on PostgreSQL: token, users, pagination, TOTP challenge, revocation."""

from __future__ import annotations

import base64
from tests.support import PASSWORD, assert_problem, enrolled_user, start_api_server



def test_api_round_trip_on_postgresql(postgres_url, tmp_path):
    started = start_api_server(tmp_path, postgres_url)
    try:
        api = started.admin_api()
        for index in range(12):
            assert api.post("/api/v1/users", {"username": f"pg-{index:02d}"}).status == 201
        assert_problem(api.post("/api/v1/users", {"username": "pg-00"}), 409, "conflict")
        names = [item["username"] for item in api.all_pages("/api/v1/users", 5, q="pg-")]
        assert names == [f"pg-{index:02d}" for index in range(12)]

        totp, now = enrolled_user(api, "pg-mfa")
        client, agent = started.client_of_type("agent", "pg-agent")
        challenge = agent.post("/api/v1/auth", {"username": "pg-mfa", "password": PASSWORD}).json()
        assert challenge["result"] == "challenge" and base64.b64decode(challenge["state"])
        answer = agent.post("/api/v1/auth", {"username": "pg-mfa", "password": totp.at(now),
                                             "state": challenge["state"]})
        assert answer.json()["result"] == "accept"
        updated = api.post("/api/v1/softotp/remote-config", {"usernames": ["pg-mfa"], "pin_required": True})
        assert updated.json()["items"][0]["config_version"] == 2

        assert api.delete(f"/api/v1/api-clients/{client['client_id']}").status == 204
        assert_problem(agent.post("/api/v1/auth", {"username": "pg-mfa", "password": PASSWORD}), 401,
                       "invalid_token")
        events = api.all_pages("/api/v1/audit-events", 3, username="pg-mfa", type="auth")
        assert [event["result"] for event in events][:2] == ["accept", "challenge"]
    finally:
        started.server.stop()
