"""Sessions through the API: ``GET/DELETE /users/{username}/sessions``, and disabling or blocking a
user through the API terminating their sessions, against the fake NAS of test_disconnect (a NAS
added through the API on 127.0.0.3, its ``coa_port`` the fake's)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support import (PASSWORD, SECRET, AcctClient, FakeNas, admin, assert_problem, free_port, session_id,
                           start_api_server, wait_for)

SOURCE = "127.0.0.3"
SPEC_FIELDS = {"session_id", "nas", "framed_ip_address", "calling_station_id", "nas_port", "started_at",
               "updated_at", "stopped_at", "input_octets", "output_octets", "status", "stop_cause"}


@pytest.fixture(scope="module")
def fake_nas():
    nas = FakeNas(SOURCE)
    yield nas
    nas.close()
    assert nas.problems == []


@pytest.fixture(scope="module")
def sessions_server(tmp_path_factory, fake_nas):
    started = start_api_server(tmp_path_factory.mktemp("sessions"), sections={
        "server": {"acct_port": free_port()},
        "accounting": {"disconnect_timeout_seconds": 0.2, "disconnect_attempts": 2}})
    api = started.admin_api()
    reply = api.post("/api/v1/nas", {"name": "vpn-s", "address": SOURCE, "secret": SECRET.decode(),
                                     "coa_port": fake_nas.port})
    assert reply.status == 201, reply.raw
    started.api_client = api
    started.acct = AcctClient(started.server.settings["server"]["acct_port"], source=SOURCE)
    started.acct.sock.settimeout(0.5)
    assert wait_for(lambda: _answered(started.acct), timeout=10), "the new NAS was not loaded"
    started.acct.sock.settimeout(5)
    yield started
    started.acct.close()
    started.server.stop()


def _answered(acct: AcctClient) -> bool:
    try:
        acct.account("Accounting-On")
        return True
    except socket.timeout:
        return False


def start(server, username: str, *sids: str, **attributes) -> None:
    for sid in sids:
        server.acct.account("Start", sid, User_Name=username, Framed_IP_Address="10.40.0.2",
                            Calling_Station_Id="02-00-00-00-00-09", NAS_Port=3, **attributes)


def test_open_sessions_are_listed_with_the_spec_fields_and_paged(sessions_server):
    api = sessions_server.api_client
    first, second, closed = session_id("ACK"), session_id("ACK"), session_id("ACK")
    start(sessions_server, "lister", first, second, closed)
    sessions_server.acct.account("Stop", closed, User_Name="lister", Acct_Input_Octets=10)

    page = api.get("/api/v1/users/lister/sessions", query={"limit": 1})
    assert page.status == 200, page.raw
    document = page.json()
    [item] = document["items"]
    assert SPEC_FIELDS <= set(item)
    assert (item["session_id"], item["nas"], item["status"], item["framed_ip_address"], item["nas_port"]) == \
        (first, "vpn-s", "active", "10.40.0.2", 3)
    assert item["calling_station_id"] == "02-00-00-00-00-09" and item["stopped_at"] is None
    rest = api.get("/api/v1/users/lister/sessions", query={"limit": 1, "cursor": document["next_cursor"]}).json()
    assert [i["session_id"] for i in rest["items"]] == [second] and rest["next_cursor"] is None

    assert api.get("/api/v1/users/nobody-here/sessions").json() == {"items": [], "next_cursor": None}
    assert_problem(api.get("/api/v1/users/lister/sessions", query={"cursor": "bogus"}), 422, "invalid")
    assert_problem(api.get("/api/v1/users/" + "x" * 65 + "/sessions"), 422, "invalid")
    assert_problem(api.delete("/api/v1/users/" + "x" * 65 + "/sessions"), 422, "invalid")


def test_closed_sessions_are_listed_on_request_by_the_api_and_the_cli(sessions_server):
    api = sessions_server.api_client
    open_one, closed = session_id("ACK"), session_id("ACK")
    start(sessions_server, "historian", open_one, closed)
    sessions_server.acct.account("Stop", closed, User_Name="historian", Acct_Input_Octets=10)

    def listed(**query):
        reply = api.get("/api/v1/users/historian/sessions", query=query)
        assert reply.status == 200, reply.raw
        return [(item["session_id"], item["status"]) for item in reply.json()["items"]]

    assert listed() == [(open_one, "active")]
    assert listed(status="stopped") == [(closed, "stopped")]
    assert listed(status="all") == [(open_one, "active"), (closed, "stopped")]
    assert_problem(api.get("/api/v1/users/historian/sessions", query={"status": "closed"}), 422, "invalid")
    everything = json.loads(admin(sessions_server.config_path, "user", "sessions", "historian", "--all").stdout)
    assert [(item["session_id"], item["status"]) for item in everything] == listed(status="all")
    assert len(json.loads(admin(sessions_server.config_path, "user", "sessions", "historian").stdout)) == 1


def test_delete_terminates_every_session_and_reports_each_result(sessions_server, fake_nas):
    api, server = sessions_server.api_client, sessions_server.server
    ack, nak, silent = session_id("ACK"), session_id("NAK"), session_id("SIL")
    start(sessions_server, "terminated", ack, nak, silent)
    before = {result: server.metric("radiusd_disconnect_requests_total", result=result)
              for result in ("ack", "nak", "timeout")}

    reply = api.delete("/api/v1/users/terminated/sessions")
    assert reply.status == 200, reply.raw
    results = {item["session_id"]: (item["result"], item["error_cause"], item["status"])
               for item in reply.json()["items"]}
    assert results == {ack: ("ack", None, "terminated"), nak: ("nak", "Session-Context-Not-Found", "active"),
                       silent: ("timeout", None, "active")}
    assert len(fake_nas.requests_for(silent)) == 2  # disconnect_attempts = 2
    for result in ("ack", "nak", "timeout"):
        assert server.metric("radiusd_disconnect_requests_total", result=result) == before[result] + 1
    remaining = api.get("/api/v1/users/terminated/sessions").json()["items"]
    assert {item["session_id"]: item["disconnect_result"] for item in remaining} == {nak: "nak", silent: "timeout"}
    events = api.get("/api/v1/audit-events", query={"username": "terminated", "type": "session"}).json()["items"]
    assert sorted(event["result"] for event in events) == ["ack", "nak", "timeout"]
    assert all(event["actor"].startswith("api:") and event["client"] == "vpn-s" for event in events)

    assert api.delete("/api/v1/users/nobody-here/sessions").json() == {"items": []}


@pytest.mark.parametrize("action", ["disable", "block"])
def test_disabling_or_blocking_through_the_api_disconnects(sessions_server, fake_nas, action):
    api = sessions_server.api_client
    username = f"api-{action}"
    assert api.post("/api/v1/users", {"username": username, "password": PASSWORD,
                                      "password_confirmation": PASSWORD}).status == 201
    sid = session_id("ACK")
    start(sessions_server, username, sid)
    began = time.monotonic()
    if action == "disable":
        reply = api.post(f"/api/v1/users/{username}/disable")
    else:
        reply = api.post(f"/api/v1/users/{username}/block", {"permanent": True, "reason": "left the company"})
    assert reply.status == 200, reply.raw
    assert fake_nas.wait_for(sid)
    assert wait_for(lambda: api.get(f"/api/v1/users/{username}/sessions").json()["items"] == [])
    assert time.monotonic() - began < 5
    [event] = api.get("/api/v1/audit-events", query={"username": username, "type": "session"}).json()["items"]
    assert (event["result"], event["reason"]) == ("ack", "disabled" if action == "disable" else "blocked")
