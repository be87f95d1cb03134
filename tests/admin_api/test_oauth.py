"""POST /oauth/token (RFC 6749 §4.4) and Bearer token checks (RFC 6750), over real HTTP."""

from __future__ import annotations

import time

import base64
import json
from datetime import datetime, timedelta, timezone

from sqlalchemy import create_engine, select, update

from radiusd.db.tables import api_clients, api_tokens
from tests.support import Api, admin, assert_problem

GRANT = {"grant_type": "client_credentials"}


def new_client(api_server, client_type="admin", name=None):
    name = name or f"{client_type}-{datetime.now().timestamp()}"
    reply = api_server.admin_api().post("/api/v1/api-clients", {"type": client_type, "name": name})
    assert reply.status == 201, reply.raw
    return reply.json()


def test_cli_created_client_gets_a_token(api_server):
    created = json.loads(admin(api_server.config_path, "api-client", "create", "--type", "user", "--name",
                               "cli-made").stdout)
    assert api_server.api().issue_token(created["client_id"], created["client_secret"])
    listed = admin(api_server.config_path, "api-client", "list", fmt="table").stdout
    assert "cli-made" in listed and created["client_secret"] not in listed


def test_basic_authentication_issues_a_bearer_token(api_server):
    client = new_client(api_server, "agent")
    reply = api_server.api().token_request(GRANT, basic=(client["client_id"], client["client_secret"]))
    assert reply.status == 200
    assert reply.content_type == "application/json"
    assert reply.headers["cache-control"] == "no-store"
    token = reply.json()
    assert set(token) == {"access_token", "token_type", "expires_in", "scope"}  # no refresh_token
    assert token["token_type"] == "Bearer" and token["scope"] == "agent" and token["expires_in"] == 3600
    assert len(token["access_token"]) >= 40


def test_form_fields_authenticate_the_client_too(api_server):
    client = new_client(api_server, "user")
    reply = api_server.api().token_request({**GRANT, "client_id": client["client_id"],
                                            "client_secret": client["client_secret"]})
    assert reply.status == 200 and reply.json()["scope"] == "user"


def test_requested_scope_must_be_the_clients_type(api_server):
    client = new_client(api_server, "agent")
    api = api_server.api()
    assert api.token_request({**GRANT, "scope": "agent"}, basic=(client["client_id"], client["client_secret"])).status == 200
    reply = api.token_request({**GRANT, "scope": "admin"}, basic=(client["client_id"], client["client_secret"]))
    assert assert_problem(reply, 400, "invalid_scope")["error"] == "invalid_scope"


def test_unknown_client_and_wrong_secret_get_the_identical_401(api_server):
    client = new_client(api_server)
    api = api_server.api()
    wrong_secret = api.token_request(GRANT, basic=(client["client_id"], "not-the-secret"))
    unknown = api.token_request(GRANT, basic=("rc_00000000000000000000", "not-the-secret"))
    form_unknown = api.token_request({**GRANT, "client_id": "nobody", "client_secret": "x"})
    missing = api.token_request(GRANT)
    for reply in (wrong_secret, unknown, form_unknown, missing):
        document = assert_problem(reply, 401, "invalid_client")
        assert document["error"] == "invalid_client"
        assert reply.headers["www-authenticate"] == 'Basic realm="radiusd"'
    assert wrong_secret.raw == unknown.raw == form_unknown.raw == missing.raw


def test_unsupported_grant_and_malformed_requests_are_400(api_server):
    client = new_client(api_server)
    basic = (client["client_id"], client["client_secret"])
    api = api_server.api()
    assert_problem(api.token_request({"grant_type": "password"}, basic=basic), 400, "unsupported_grant_type")
    assert_problem(api.token_request({"grant_type": "authorization_code"}, basic=basic), 400, "unsupported_grant_type")
    assert_problem(api.token_request({}, basic=basic), 400, "invalid_request")
    assert_problem(api.token_request(raw=b"grant_type=client_credentials&grant_type=client_credentials", basic=basic),
                   400, "invalid_request")
    assert_problem(api.token_request(GRANT, basic=basic, content_type="application/json"), 400, "invalid_request")
    both = api.token_request({**GRANT, "client_id": basic[0], "client_secret": basic[1]}, basic=basic)
    assert_problem(both, 400, "invalid_request")
    in_url = api.request("POST", f"/oauth/token?client_id={basic[0]}&client_secret={basic[1]}",
                         body=b"grant_type=client_credentials",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_problem(in_url, 400, "invalid_request")


def test_failed_token_requests_are_limited_per_address_and_never_lock_out_the_right_secret(api_server):
    victim = new_client(api_server, "user")
    api = Api(api_server.port, source="127.0.0.7")  # an address of its own: the other tests' stay clear
    statuses = [api.token_request(GRANT, basic=(victim["client_id"], "wrong")).status for _ in range(30)]
    assert statuses == [401] * 30  # the default buckets: 30 failures a minute, refilled at 0.5 a second
    started = time.monotonic()
    statuses = [api.token_request(GRANT, basic=(victim["client_id"], "wrong")).status for _ in range(4)]
    assert statuses.count(429) >= 2
    assert time.monotonic() - started >= 3, "failures past the client id's budget are answered slowly"
    reply = api.token_request(GRANT, basic=(victim["client_id"], "wrong"))
    assert_problem(reply, 429, "rate_limited")
    assert 1 <= int(reply.headers["retry-after"]) <= 2
    # the client id failed against 36 times, from another address and from that one: the right secret works
    for source in (api_server.api(), api):
        granted = time.monotonic()
        assert source.token_request(GRANT, basic=(victim["client_id"], victim["client_secret"])).status == 200
        assert time.monotonic() - granted < 1


def test_unknown_parameters_are_ignored(api_server):
    client = new_client(api_server)
    basic = (client["client_id"], client["client_secret"])
    api = api_server.api()
    assert api.token_request({**GRANT, "audience": "x", "resource": "y"}, basic=basic).status == 200
    reply = api.token_request({"grant_type": "password", "username": "x"}, basic=basic)
    assert_problem(reply, 400, "unsupported_grant_type")


def test_bearer_token_errors(api_server):
    api = api_server.api()
    missing = api.get("/api/v1/users")
    assert_problem(missing, 401, "missing_token")
    assert missing.headers["www-authenticate"] == 'Bearer realm="radiusd"'
    for header in ("Bearer not-a-token", "Bearer", "Basic dXNlcjpwYXNz", "Bearer a b", "bearer " + "x" * 300):
        reply = api.get("/api/v1/users", headers={"Authorization": header})
        assert_problem(reply, 401, "invalid_token")
        assert reply.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_token_in_the_query_string_is_refused(api_server, admin_api):
    reply = api_server.api().get("/api/v1/users", query={"access_token": admin_api.token})
    assert_problem(reply, 400, "invalid_request")


def test_expired_token_is_refused(api_server):
    client = new_client(api_server)
    api = api_server.api()
    api.token = api.issue_token(client["client_id"], client["client_secret"])
    assert api.get("/api/v1/users").status == 200
    engine = create_engine(api_server.database_url)
    try:
        with engine.begin() as conn:
            row_id = conn.execute(select(api_clients.c.id).where(api_clients.c.client_id == client["client_id"])).scalar()
            conn.execute(update(api_tokens).where(api_tokens.c.client_id == row_id)
                         .values(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
    finally:
        engine.dispose()
    reply = api.get("/api/v1/users")
    assert_problem(reply, 401, "invalid_token")
    assert reply.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_revoked_clients_tokens_die_at_once(api_server, admin_api):
    client = new_client(api_server)
    api = api_server.api()
    api.token = api.issue_token(client["client_id"], client["client_secret"])
    assert api.get("/api/v1/api-clients").status == 200
    assert admin_api.delete(f"/api/v1/api-clients/{client['client_id']}").status == 204
    assert_problem(api.get("/api/v1/api-clients"), 401, "invalid_token")
    reply = api.token_request(GRANT, basic=(client["client_id"], client["client_secret"]))
    assert_problem(reply, 401, "invalid_client")
    assert_problem(admin_api.get(f"/api/v1/api-clients/{client['client_id']}"), 404, "not_found")
    assert_problem(admin_api.delete(f"/api/v1/api-clients/{client['client_id']}"), 404, "not_found")


def test_cli_revoke_kills_tokens(api_server):
    client, api = api_server.client_of_type("admin", "cli-revoked")
    assert api.get("/api/v1/blocked").status == 200
    admin(api_server.config_path, "api-client", "revoke", client["client_id"])
    assert_problem(api.get("/api/v1/blocked"), 401, "invalid_token")


def test_rotate_secret_invalidates_the_old_secret_and_tokens(api_server, admin_api):
    client = new_client(api_server, "agent")
    api = api_server.api()
    old_token = api.issue_token(client["client_id"], client["client_secret"])
    reply = admin_api.post(f"/api/v1/api-clients/{client['client_id']}/rotate-secret")
    assert reply.status == 200
    rotated = reply.json()
    assert set(rotated) == {"client_id", "client_secret"} and rotated["client_secret"] != client["client_secret"]
    assert_problem(api.token_request(GRANT, basic=(client["client_id"], client["client_secret"])), 401,
                   "invalid_client")
    assert_problem(api.post("/api/v1/auth", {"username": "x", "password": "y"}, token=old_token), 401, "invalid_token")
    new_token = api.issue_token(client["client_id"], rotated["client_secret"])
    assert api.post("/api/v1/auth", {"username": "nobody", "password": "y"}, token=new_token).json()["result"] == "reject"


def test_each_client_type_is_allowed_only_its_routes(api_server, admin_api):
    _, agent = api_server.client_of_type("agent", "scope-agent")
    _, user = api_server.client_of_type("user", "scope-user")
    auth_body = {"username": "nobody", "password": "whatever"}
    otp_body = {"username": "nobody", "otp": "123456"}
    assert agent.post("/api/v1/auth", auth_body).status == 200
    assert user.post("/api/v1/otp/verify", otp_body).status == 200
    refused = [
        agent.get("/api/v1/users"), agent.post("/api/v1/otp/verify", otp_body), agent.get("/api/v1/api-clients"),
        user.get("/api/v1/users"), user.post("/api/v1/auth", auth_body), user.get("/api/v1/settings/lockout"),
        admin_api.post("/api/v1/auth", auth_body), admin_api.post("/api/v1/otp/verify", otp_body),
    ]
    for reply in refused:
        assert_problem(reply, 403, "insufficient_scope")
        assert reply.headers["www-authenticate"].startswith('Bearer error="insufficient_scope"')
    assert admin_api.get("/api/v1/users").status == 200


def test_api_clients_crud_never_shows_a_secret_after_creation(api_server, admin_api):
    reply = admin_api.post("/api/v1/api-clients", {"type": "agent", "name": "pam-gateway"})
    assert reply.status == 201
    created = reply.json()
    assert set(created) == {"client_id", "client_secret", "name", "type", "created_at"}
    assert reply.headers["location"] == f"/api/v1/api-clients/{created['client_id']}"
    secret = created["client_secret"]
    assert_problem(admin_api.post("/api/v1/api-clients", {"type": "user", "name": "pam-gateway"}), 409, "conflict")
    assert_problem(admin_api.post("/api/v1/api-clients", {"type": "root", "name": "x"}), 422, "invalid")
    assert_problem(admin_api.post("/api/v1/api-clients", {"type": "user", "name": "x", "client_secret": "mine"}),
                   422, "unknown_field")
    shown = admin_api.get(f"/api/v1/api-clients/{created['client_id']}")
    listed = admin_api.get("/api/v1/api-clients", query={"limit": 500})
    assert shown.json()["type"] == "agent" and shown.json()["last_token_at"] is None
    assert created["client_id"] in [item["client_id"] for item in listed.json()["items"]]
    for raw in (shown.raw, listed.raw):
        assert secret.encode() not in raw and b"secret_hash" not in raw and b"client_secret" not in raw


def test_client_secret_and_tokens_are_stored_only_as_digests(api_server):
    client = new_client(api_server)
    token = api_server.api().issue_token(client["client_id"], client["client_secret"])
    engine = create_engine(api_server.database_url)
    try:
        with engine.connect() as conn:
            stored = [tuple(row) for row in conn.execute(select(api_clients))]
            stored += [tuple(row) for row in conn.execute(select(api_tokens))]
    finally:
        engine.dispose()
    text = repr(stored)
    assert client["client_secret"] not in text and token not in text
    assert base64.b64encode(client["client_secret"].encode()).decode() not in text
