"""Users, blocks and lockout settings through the API, and their effect over RADIUS."""

from __future__ import annotations

import pytest
from tests.support import PASSWORD, assert_problem


NEW_PASSWORD = "Battery-Staple-9902"


def create(api, username: str, **fields):
    reply = api.post("/api/v1/users", {"username": username, **fields})
    assert reply.status == 201, reply.raw
    return reply.json()


def radius_code(api_server, username: str, password: str) -> int:
    client = api_server.radius()
    try:
        _, reply = client.send(client.access_request(username, password))
        return reply.code
    finally:
        client.close()


ACCEPT, REJECT = 2, 3


def test_create_show_patch_delete(admin_api):
    profile = {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "05554443322",
               "expires_at": "2031-01-02T03:04:05+03:00", "framed_ip_address": "10.9.8.7", "sponsor_name": "Bob",
               "sponsor_email": "bob@example.com", "description": "analyst", "mfa_exempt": True,
               "reply_attributes": [{"name": "Session-Timeout", "value": 3600}]}
    reply = admin_api.post("/api/v1/users", {"username": "ada", "password": PASSWORD,
                                             "password_confirmation": PASSWORD, **profile})
    assert reply.status == 201
    assert reply.headers["location"] == "/api/v1/users/ada"
    created = reply.json()
    assert created["phone"] == "+905554443322" and created["expires_at"] == "2031-01-02T00:04:05+00:00"
    assert created["status"] == "active" and created["blocked"] is False and created["last_login_at"] is None
    assert not any("password" in key for key in created)
    assert admin_api.get("/api/v1/users/ada").json() == created

    patched = admin_api.patch("/api/v1/users/ada", {"first_name": "Augusta", "expires_at": None})
    assert patched.status == 200
    assert patched.json()["first_name"] == "Augusta" and patched.json()["expires_at"] is None
    assert patched.json()["last_name"] == "Lovelace"  # untouched by PATCH

    assert admin_api.delete("/api/v1/users/ada").status == 204
    assert_problem(admin_api.get("/api/v1/users/ada"), 404, "not_found")
    assert_problem(admin_api.delete("/api/v1/users/ada"), 404, "not_found")
    assert_problem(admin_api.patch("/api/v1/users/ada", {"first_name": "x"}), 404, "not_found")


def test_duplicate_username_is_409(admin_api):
    create(admin_api, "dup")
    assert_problem(admin_api.post("/api/v1/users", {"username": "dup"}), 409, "conflict")


def test_a_framed_ip_address_of_another_user_is_409_naming_that_user(admin_api):
    assert admin_api.post("/api/v1/users", {"username": "ip-holder", "framed_ip_address": "10.77.0.1"}).status == 201
    problem = assert_problem(admin_api.post("/api/v1/users", {"username": "ip-taker", "framed_ip_address": "10.77.0.1"}),
                             409, "conflict")
    assert "ip-holder" in problem["detail"]
    assert admin_api.post("/api/v1/users", {"username": "ip-taker", "framed_ip_address": "nas-assigns"}).status == 201
    assert_problem(admin_api.patch("/api/v1/users/ip-taker", {"framed_ip_address": "10.77.0.1"}), 409, "conflict")


@pytest.mark.parametrize("body, field", [
    ({"username": "v1", "password": PASSWORD, "password_confirmation": PASSWORD + "x"}, "password_confirmation"),
    ({"username": "v2", "password": PASSWORD}, "password_confirmation"),
    ({"username": "v3", "password": "short", "password_confirmation": "short"}, "password"),
    ({"username": "v4", "email": "not-an-email"}, "email"),
    ({"username": "v5", "phone": "12345"}, "phone"),
    ({"username": "v6", "framed_ip_address": "10.0.0.300"}, "framed_ip_address"),
    ({"username": "v7", "expires_at": "next tuesday"}, "expires_at"),
    ({"username": "v8", "reply_attributes": [{"name": "No-Such-Attribute", "value": "1"}]}, "reply_attributes"),
    ({"username": ""}, "username"),
    ({"username": "bad\x01name"}, "username"),
    ({"username": "v9", "mfa_exempt": "yes"}, "mfa_exempt"),
])
def test_invalid_user_input_is_422_problem(admin_api, body, field):
    document = assert_problem(admin_api.post("/api/v1/users", body), 422, "invalid")
    assert document["field"].split(".")[0] == field


@pytest.mark.parametrize("field", ["blocked", "failed_attempts", "status", "password_hash", "created_at",
                                   "block_permanent", "secret_encrypted"])
def test_mass_assignment_is_refused(admin_api, field):
    create(admin_api, f"mass-{field}")
    for reply in (admin_api.patch(f"/api/v1/users/mass-{field}", {field: 0}),
                  admin_api.post("/api/v1/users", {"username": f"mass2-{field}", field: False})):
        assert assert_problem(reply, 422, "unknown_field")["field"] == field
    assert admin_api.get(f"/api/v1/users/mass2-{field}").status == 404


def test_patch_cannot_set_the_password_or_rename(admin_api):
    create(admin_api, "patchy")
    assert_problem(admin_api.patch("/api/v1/users/patchy", {"password": NEW_PASSWORD}), 422, "unknown_field")
    assert_problem(admin_api.patch("/api/v1/users/patchy", {"username": "other"}), 422, "unknown_field")
    assert_problem(admin_api.patch("/api/v1/users/patchy", {"first_name": None}), 422, "invalid")


def test_password_changed_through_the_api_works_over_radius(api_server, admin_api):
    create(admin_api, "carol", password=PASSWORD, password_confirmation=PASSWORD)
    assert radius_code(api_server, "carol", PASSWORD) == ACCEPT
    assert_problem(admin_api.post("/api/v1/users/carol/password",
                                  {"password": NEW_PASSWORD, "password_confirmation": "different-1234"}),
                   422, "invalid")
    assert_problem(admin_api.post("/api/v1/users/carol/password", {"password": NEW_PASSWORD}), 422, "invalid")
    reply = admin_api.post("/api/v1/users/carol/password",
                           {"password": NEW_PASSWORD, "password_confirmation": NEW_PASSWORD})
    assert reply.status == 204 and reply.raw == b""
    assert radius_code(api_server, "carol", NEW_PASSWORD) == ACCEPT
    assert radius_code(api_server, "carol", PASSWORD) == REJECT
    assert_problem(admin_api.post("/api/v1/users/ghost/password",
                                  {"password": NEW_PASSWORD, "password_confirmation": NEW_PASSWORD}), 404, "not_found")


def test_disable_and_enable_take_effect_over_radius(api_server, admin_api):
    create(admin_api, "dave", password=PASSWORD, password_confirmation=PASSWORD)
    disabled = admin_api.post("/api/v1/users/dave/disable")
    assert disabled.status == 200 and disabled.json()["status"] == "disabled"
    assert radius_code(api_server, "dave", PASSWORD) == REJECT
    assert admin_api.post("/api/v1/users/dave/enable").json()["status"] == "active"
    assert radius_code(api_server, "dave", PASSWORD) == ACCEPT
    assert_problem(admin_api.post("/api/v1/users/ghost/disable"), 404, "not_found")


def test_block_and_unblock_take_effect_over_radius(api_server, admin_api):
    create(admin_api, "erin", password=PASSWORD, password_confirmation=PASSWORD)
    reply = admin_api.post("/api/v1/users/erin/block", {"duration_seconds": 3600, "reason": "lost laptop"})
    assert reply.status == 200
    entry = reply.json()
    assert entry["reason"] == "lost laptop" and entry["permanent"] is False
    assert 3590 <= entry["remaining_seconds"] <= 3600
    assert admin_api.get("/api/v1/users/erin").json()["status"] == "blocked"
    assert radius_code(api_server, "erin", PASSWORD) == REJECT
    assert "erin" in [item["username"] for item in admin_api.all_pages("/api/v1/blocked", 500)]
    assert admin_api.delete("/api/v1/users/erin/block").status == 204
    assert radius_code(api_server, "erin", PASSWORD) == ACCEPT
    assert_problem(admin_api.delete("/api/v1/users/erin/block"), 404, "not_found")

    permanent = admin_api.post("/api/v1/users/erin/block", {"permanent": True, "reason": "left the company"})
    assert permanent.json()["blocked_until"] is None and permanent.json()["remaining_seconds"] is None
    assert radius_code(api_server, "erin", PASSWORD) == REJECT
    assert admin_api.delete("/api/v1/blocked/erin").status == 204
    assert radius_code(api_server, "erin", PASSWORD) == ACCEPT
    assert_problem(admin_api.delete("/api/v1/blocked/erin"), 404, "not_found")


@pytest.mark.parametrize("body", [
    {"reason": "no duration"},
    {"duration_seconds": 60, "permanent": True, "reason": "both"},
    {"duration_seconds": 0, "reason": "zero"},
    {"duration_seconds": 60, "reason": ""},
    {"duration_seconds": 60},
])
def test_invalid_block_requests_are_422(admin_api, body):
    if admin_api.get("/api/v1/users/frank").status == 404:
        create(admin_api, "frank")
    assert_problem(admin_api.post("/api/v1/users/frank/block", body), 422, "invalid")


def test_automatic_block_shows_in_blocked_list_with_failed_attempts(api_server, admin_api):
    create(admin_api, "gina", password=PASSWORD, password_confirmation=PASSWORD)
    for _ in range(5):
        assert radius_code(api_server, "gina", "wrong-password-1") == REJECT
    listed = {item["username"]: item for item in admin_api.all_pages("/api/v1/blocked", 500)}
    assert listed["gina"]["failed_attempts"] == 5 and listed["gina"]["reason"] == "too many failed attempts"
    assert admin_api.delete("/api/v1/blocked/gina").status == 204
    assert radius_code(api_server, "gina", PASSWORD) == ACCEPT


def test_lockout_settings_get_and_put(admin_api):
    current = admin_api.get("/api/v1/settings/lockout")
    assert current.json() == {"max_failures": 5, "window_seconds": 600, "block_seconds": 1800, "permanent": False}
    assert_problem(admin_api.put("/api/v1/settings/lockout", {"max_failures": 3}), 422, "invalid")
    assert_problem(admin_api.put("/api/v1/settings/lockout", {"max_failures": 0, "window_seconds": 60,
                                                              "block_seconds": 60, "permanent": False}), 422, "invalid")
    assert_problem(admin_api.put("/api/v1/settings/lockout", {"max_failures": 3, "window_seconds": 60,
                                                              "block_seconds": 60, "permanent": False,
                                                              "enabled": True}), 422, "unknown_field")
    new = {"max_failures": 7, "window_seconds": 300, "block_seconds": 900, "permanent": True}
    assert admin_api.put("/api/v1/settings/lockout", new).json() == new
    assert admin_api.get("/api/v1/settings/lockout").json() == new
    restored = {"max_failures": 5, "window_seconds": 600, "block_seconds": 1800, "permanent": False}
    assert admin_api.put("/api/v1/settings/lockout", restored).json() == restored


def test_pagination_over_many_users_returns_each_exactly_once(admin_api):
    names = [f"page-{index:03d}" for index in range(130)]
    for name in names:
        create(admin_api, name)
    seen = admin_api.all_pages("/api/v1/users", 17, q="page-")
    assert [item["username"] for item in seen] == names
    first = admin_api.get("/api/v1/users", query={"q": "page-", "limit": 500}).json()
    assert len(first["items"]) == 130 and first["next_cursor"] is None
    assert_problem(admin_api.get("/api/v1/users", query={"limit": 501}), 422, "invalid")
    assert_problem(admin_api.get("/api/v1/users", query={"limit": 0}), 422, "invalid")
    assert_problem(admin_api.get("/api/v1/users", query={"cursor": "garbage!"}), 422, "invalid")
    assert_problem(admin_api.get("/api/v1/users", query={"stauts": "active"}), 422, "unknown_field")


def test_list_filters(admin_api):
    create(admin_api, "filter-active", email="fa@corp.example")
    create(admin_api, "filter-expired", expires_at="2020-01-01T00:00:00Z")
    create(admin_api, "filter-disabled")
    admin_api.post("/api/v1/users/filter-disabled/disable")

    def names(**query):
        return [item["username"] for item in admin_api.all_pages("/api/v1/users", 500, q="filter-", **query)]

    assert names() == ["filter-active", "filter-disabled", "filter-expired"]
    assert names(status="expired") == ["filter-expired"]
    assert names(status="disabled") == ["filter-disabled"]
    assert names(status="active") == ["filter-active"]
    assert names(expires_before="2021-01-01T00:00:00Z") == ["filter-expired"]
    assert [item["username"] for item in admin_api.all_pages("/api/v1/users", 500, q="CORP.EXAMPLE")] == \
        ["filter-active"]
    assert_problem(admin_api.get("/api/v1/users", query={"status": "sleeping"}), 422, "invalid")
