"""The HTTP layer: problem+json, body limits, content types, routing errors, metrics, audit,
and that no secret, password, seed, token or hash ever leaves in a response."""

from __future__ import annotations

import json
import re
import urllib.request

from sqlalchemy import create_engine, select

from radiusd.db.tables import api_clients, api_tokens, otp_enrolments, users
from tests.support import PASSWORD, assert_problem, enrolled_user

MIB = 1024 * 1024


def test_body_over_one_mebibyte_is_413(admin_api):
    big = json.dumps({"username": "big", "description": "x" * MIB}).encode()
    reply = admin_api.request("POST", "/api/v1/users", body=big, headers={"Content-Type": "application/json"})
    assert_problem(reply, 413, "payload_too_large")
    assert admin_api.get("/api/v1/users/big").status == 404
    just_under = json.dumps({"username": "big", "description": "x" * 900}).encode()
    assert admin_api.request("POST", "/api/v1/users", body=just_under,
                             headers={"Content-Type": "application/json"}).status == 201


def test_chunked_body_over_the_limit_is_413(api_server, admin_api):
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", api_server.port, timeout=30)
    try:
        connection.putrequest("POST", "/api/v1/users")
        connection.putheader("Authorization", f"Bearer {admin_api.token}")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        chunk = b"x" * 65536
        for _ in range(17):
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
        reply = connection.getresponse()
        assert reply.status == 413 and json.loads(reply.read())["code"] == "payload_too_large"
    finally:
        connection.close()


def test_wrong_content_type_is_415_and_bad_json_is_400(admin_api):
    body = json.dumps({"username": "ct"}).encode()
    assert_problem(admin_api.request("POST", "/api/v1/users", body=body, headers={"Content-Type": "text/plain"}),
                   415, "unsupported_media_type")
    assert_problem(admin_api.request("POST", "/api/v1/users", body=b"{not json",
                                     headers={"Content-Type": "application/json"}), 400, "invalid_json")
    assert_problem(admin_api.request("POST", "/api/v1/users", body=b"[1, 2]",
                                     headers={"Content-Type": "application/json"}), 422, "invalid")
    assert_problem(admin_api.request("POST", "/api/v1/users", body=b"",
                                     headers={"Content-Type": "application/json"}), 422, "invalid")
    assert admin_api.request("POST", "/api/v1/users", body=body,
                             headers={"Content-Type": "application/json; charset=utf-8"}).status == 201


def test_unknown_routes_are_404_and_wrong_methods_405(admin_api):
    assert_problem(admin_api.get("/api/v1/nothing-here"), 404, "not_found")
    root = admin_api.get("/")  # the web console's (SPEC §10)
    assert root.status == 302 and root.headers["location"] == "/console/"
    assert_problem(admin_api.get("/api/v1/users/import"), 404, "not_found")  # a user named "import"
    reply = admin_api.put("/api/v1/users/someone", {})
    assert_problem(reply, 405, "method_not_allowed")
    assert reply.headers["allow"] == "DELETE, GET, PATCH"
    assert_problem(admin_api.request("DELETE", "/api/v1/users"), 405, "method_not_allowed")


def test_usernames_with_slashes_and_unicode_travel_percent_encoded(admin_api):
    for username in ("dept/alice", "jürgen", "a b"):
        assert admin_api.post("/api/v1/users", {"username": username}).status == 201
        encoded = urllib.request.quote(username, safe="")
        shown = admin_api.get(f"/api/v1/users/{encoded}")
        assert shown.status == 200 and shown.json()["username"] == username


def test_openapi_document_is_served_without_a_token(api_server):
    reply = api_server.api().get("/api/v1/openapi.json")
    assert reply.status == 200 and reply.content_type == "application/json"
    document = reply.json()
    assert document["openapi"].startswith("3.1") and "/api/v1/users" in document["paths"]


def test_requests_are_counted_by_route_template(api_server, admin_api):
    admin_api.post("/api/v1/users", {"username": "metered"})
    before = api_server.server.metric("radiusd_admin_http_requests_total", method="GET",
                                      route="/api/v1/users/{username}", status="200")
    missing = api_server.server.metric("radiusd_admin_http_requests_total", method="GET",
                                       route="/api/v1/users/{username}", status="404")
    admin_api.get("/api/v1/users/metered")
    admin_api.get("/api/v1/users/not-there")
    admin_api.get("/api/v1/nowhere")
    assert api_server.server.metric("radiusd_admin_http_requests_total", method="GET",
                                    route="/api/v1/users/{username}", status="200") == before + 1
    assert api_server.server.metric("radiusd_admin_http_requests_total", method="GET",
                                    route="/api/v1/users/{username}", status="404") == missing + 1
    assert api_server.server.metric("radiusd_admin_http_requests_total", method="GET", route="unmatched",
                                    status="404") >= 1
    with urllib.request.urlopen(api_server.server.ops_url + "/metrics") as response:
        assert "metered" not in response.read().decode()  # labels never carry usernames


def test_admin_actions_are_audit_events_naming_the_api_client(api_server, admin_api):
    admin_api.post("/api/v1/users", {"username": "audited"})
    admin_api.post("/api/v1/users/audited/disable")
    events = admin_api.all_pages("/api/v1/audit-events", 2, username="audited")
    assert [event["reason"] for event in events] == ["user.disable", "user.create"]
    actor = f"api:{api_server.admin_client['name']}"
    assert all(event["actor"] == actor and event["type"] == "admin" for event in events)
    since = events[0]["occurred_at"]
    recent = admin_api.all_pages("/api/v1/audit-events", 500, since=since, type="admin")
    assert recent and all(event["occurred_at"] >= since and event["type"] == "admin" for event in recent)
    assert_problem(admin_api.get("/api/v1/audit-events", query={"since": "yesterday"}), 422, "invalid")


def test_no_secret_password_seed_token_or_hash_in_any_response(api_server):
    """Create one of everything with known secrets, read every list and object back, and
    look for the secrets (and their stored forms) in every byte the server sent."""
    api = api_server.admin_api()
    admin_secret = api_server.admin_client["client_secret"]
    enrolled_user(api, "secret-keeper")
    nas_secret = "nas-secret-for-the-leak-test"
    assert api.post("/api/v1/nas", {"name": "leak-nas", "address": "192.0.2.99", "secret": nas_secret}).status == 201
    created = api.post("/api/v1/api-clients", {"type": "agent", "name": "leak-agent"}).json()
    agent_token = api.issue_token(created["client_id"], created["client_secret"])
    rotated = api.post(f"/api/v1/api-clients/{created['client_id']}/rotate-secret").json()
    shown_once = list(api.received)  # the replies that show a secret once, by design

    agent = api_server.api()
    agent.token = agent.issue_token(created["client_id"], rotated["client_secret"])
    agent.received.clear()  # the token response shows the token, once
    agent.post("/api/v1/auth", {"username": "secret-keeper", "password": PASSWORD})
    agent.post("/api/v1/auth", {"username": "secret-keeper", "password": "wrong-password"})
    for path in ("/api/v1/users", "/api/v1/blocked", "/api/v1/softotp", "/api/v1/api-clients", "/api/v1/nas",
                 "/api/v1/audit-events"):
        api.all_pages(path, 500)
    for path in ("/api/v1/users/secret-keeper", "/api/v1/nas/leak-nas", f"/api/v1/api-clients/{created['client_id']}",
                 "/api/v1/settings/lockout"):
        assert api.get(path).status == 200
    api.post("/api/v1/users/secret-keeper/disable")
    api.patch("/api/v1/nas/leak-nas", {"secret": nas_secret + "-2"})

    engine = create_engine(api_server.database_url)
    try:
        with engine.connect() as conn:
            stored = [row.password_hash for row in conn.execute(select(users.c.password_hash)) if row.password_hash]
            stored += [row.secret_hash for row in conn.execute(select(api_clients.c.secret_hash))]
            stored += [row.token_hash for row in conn.execute(select(api_tokens.c.token_hash))]
            stored += [bytes(row.secret_encrypted).hex() for row in conn.execute(select(otp_enrolments.c.secret_encrypted))]
    finally:
        engine.dispose()
    enrolment_seeds = [re.search(rb"secret=([A-Z2-7]+)", raw).group(1).decode() for raw in shown_once
                       if b"otpauth://" in raw]
    assert enrolment_seeds
    forbidden = [admin_secret, created["client_secret"], rotated["client_secret"], agent_token, api.token, agent.token,
                 PASSWORD, nas_secret, nas_secret + "-2", "$argon2", *enrolment_seeds, *stored]
    later = api.received[len(shown_once):] + agent.received
    assert len(later) > 10
    for raw in later:
        for secret in forbidden:
            assert secret.encode() not in raw, f"{secret[:6]}... leaked in {raw[:120]!r}"
    for raw in shown_once:  # even the one-time displays never show a stored hash or a password
        for secret in [PASSWORD, nas_secret, "$argon2", *stored]:
            assert secret.encode() not in raw
    log = api_server.server.log()
    assert "API POST /api/v1/api-clients 201" in log
    for secret in forbidden:
        assert secret not in log, f"{secret[:6]}... leaked into the log"
