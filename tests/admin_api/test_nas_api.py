"""NAS devices through the API: CRUD, write-only secrets, static entries, effect over RADIUS."""

from __future__ import annotations

import socket
import time

from radiusd.service import NAS_POLL_SECONDS
from tests.support import PASSWORD, RadiusClient, admin, assert_problem

NAS_SECRET = "api-nas-secret-0123456789"
ROTATED = "api-nas-rotated-0123456789"


def eventually_accepted(api_server, source: str, secret: str, username: str) -> bool:
    """The NAS list reloads in the background after an API change: retry for a few seconds."""
    client = RadiusClient(api_server.server.auth_port, secret=secret.encode(), timeout=1.0, source=source)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                _, reply = client.send(client.access_request(username, PASSWORD))
                return reply.code == 2
            except (socket.timeout, AssertionError):
                time.sleep(0.2)
        return False
    finally:
        client.close()


def test_nas_crud_with_write_only_secret(admin_api):
    reply = admin_api.post("/api/v1/nas", {"name": "vpn-a", "address": "192.0.2.7/24", "secret": NAS_SECRET,
                                           "mfa_mode": "append", "coa_port": 1700})
    assert reply.status == 201 and reply.headers["location"] == "/api/v1/nas/vpn-a"
    assert reply.json() == {"name": "vpn-a", "address": "192.0.2.0/24", "require_message_authenticator": None,
                            "mfa_mode": "append", "coa_port": 1700, "origin": "database"}
    shown = admin_api.get("/api/v1/nas/vpn-a")
    listed = admin_api.get("/api/v1/nas", query={"limit": 500})
    static = admin_api.get("/api/v1/nas/test")
    assert static.json()["origin"] == "config"
    assert [item["name"] for item in listed.json()["items"]][:1] == ["test"]  # configuration entries first
    for raw in (reply.raw, shown.raw, listed.raw, static.raw):
        assert NAS_SECRET.encode() not in raw and b"secret" not in raw

    patched = admin_api.patch("/api/v1/nas/vpn-a", {"coa_port": 3799, "mfa_mode": None, "secret": ROTATED})
    assert patched.status == 200
    assert patched.json()["coa_port"] == 3799 and patched.json()["mfa_mode"] is None
    assert ROTATED.encode() not in patched.raw
    assert_problem(admin_api.patch("/api/v1/nas/vpn-a", {"address": None}), 422, "invalid")
    assert_problem(admin_api.patch("/api/v1/nas/vpn-a", {"address": "not-an-ip"}), 422, "invalid")
    assert_problem(admin_api.patch("/api/v1/nas/vpn-a", {"name": "renamed"}), 422, "unknown_field")
    assert_problem(admin_api.patch("/api/v1/nas/vpn-a", {"secret_encrypted": "x"}), 422, "unknown_field")
    assert_problem(admin_api.patch("/api/v1/nas/vpn-a", {"coa_port": 70000}), 422, "invalid")

    assert admin_api.delete("/api/v1/nas/vpn-a").status == 204
    assert_problem(admin_api.get("/api/v1/nas/vpn-a"), 404, "not_found")
    assert_problem(admin_api.delete("/api/v1/nas/vpn-a"), 404, "not_found")


def test_nas_conflicts_and_validation(admin_api):
    body = {"name": "vpn-b", "address": "198.51.100.1", "secret": NAS_SECRET}
    assert admin_api.post("/api/v1/nas", body).status == 201
    assert_problem(admin_api.post("/api/v1/nas", body), 409, "conflict")
    assert_problem(admin_api.post("/api/v1/nas", {**body, "name": "test"}), 409, "conflict")  # in the config file
    assert_problem(admin_api.patch("/api/v1/nas/test", {"coa_port": 1}), 409, "conflict")
    assert_problem(admin_api.delete("/api/v1/nas/test"), 409, "conflict")
    assert_problem(admin_api.post("/api/v1/nas", {**body, "name": "vpn-c", "address": "300.1.1.1"}), 422, "invalid")
    assert_problem(admin_api.post("/api/v1/nas", {**body, "name": "vpn-c", "mfa_mode": "sometimes"}), 422, "invalid")
    assert_problem(admin_api.post("/api/v1/nas", {**body, "name": "vpn-c", "secret": ""}), 422, "invalid")
    assert_problem(admin_api.post("/api/v1/nas", {"name": "vpn-c", "address": "198.51.100.2"}), 422, "invalid")


def test_nas_added_through_the_api_answers_over_radius(api_server, admin_api):
    assert admin_api.post("/api/v1/users", {"username": "nas-user", "password": PASSWORD,
                                            "password_confirmation": PASSWORD}).status == 201
    reloads = api_server.server.log().count("reloaded ")
    assert admin_api.post("/api/v1/nas", {"name": "loopback-2", "address": "127.0.0.2/32",
                                          "secret": NAS_SECRET}).status == 201
    assert eventually_accepted(api_server, "127.0.0.2", NAS_SECRET, "nas-user")
    time.sleep(NAS_POLL_SECONDS + 1)  # the NAS table poll ran since: it knows the reload's version
    assert api_server.server.log().count("reloaded ") == reloads + 1  # one reload per change, not two
    assert admin_api.patch("/api/v1/nas/loopback-2", {"secret": ROTATED}).status == 200
    assert eventually_accepted(api_server, "127.0.0.2", ROTATED, "nas-user")


def test_nas_list_paginates_config_entries_first(admin_api):
    for index in range(5):
        admin_api.post("/api/v1/nas", {"name": f"pg-{index}", "address": f"203.0.113.{index + 1}",
                                       "secret": NAS_SECRET})
    names = [item["name"] for item in admin_api.all_pages("/api/v1/nas", 2)]
    assert names[0] == "test"
    assert names[1:] == sorted(names[1:]) and len(names) == len(set(names))
    assert {f"pg-{index}" for index in range(5)} <= set(names)


def test_overlapping_addresses_are_refused_naming_the_other_entry(admin_api):
    body = {"name": "overlap-a", "address": "198.18.0.0/24", "secret": NAS_SECRET}
    assert admin_api.post("/api/v1/nas", body).status == 201
    problem = assert_problem(admin_api.post("/api/v1/nas", {**body, "name": "overlap-b", "address": "198.18.0.9"}),
                             409, "conflict")
    assert "overlap-a" in problem["detail"] and "198.18.0.0/24" in problem["detail"]
    problem = assert_problem(admin_api.post("/api/v1/nas", {**body, "name": "overlap-c", "address": "127.0.0.1/32"}),
                             409, "conflict")
    assert "NAS test" in problem["detail"] and "configuration file" in problem["detail"]
    assert admin_api.post("/api/v1/nas", {**body, "name": "overlap-d", "address": "198.18.1.0/24"}).status == 201
    assert_problem(admin_api.patch("/api/v1/nas/overlap-d", {"address": "198.18.0.0/16"}), 409, "conflict")
    assert admin_api.patch("/api/v1/nas/overlap-a", {"address": "198.18.0.0/25"}).status == 200  # itself: fine


def test_a_nas_added_with_the_cli_answers_without_a_sighup(api_server, admin_api):
    assert admin_api.post("/api/v1/users", {"username": "cli-nas-user", "password": PASSWORD,
                                            "password_confirmation": PASSWORD}).status == 201
    overlap = admin(api_server.config_path, "nas", "add", "lab2", "--address", "127.0.0.1/32", "--secret-stdin",
                    stdin=NAS_SECRET + "\n", check=False)
    assert overlap.returncode == 1 and "NAS test" in overlap.stderr and "Traceback" not in overlap.stderr
    admin(api_server.config_path, "nas", "add", "loopback-3", "--address", "127.0.0.3", "--secret-stdin",
          stdin=NAS_SECRET + "\n")
    assert eventually_accepted(api_server, "127.0.0.3", NAS_SECRET, "cli-nas-user")
