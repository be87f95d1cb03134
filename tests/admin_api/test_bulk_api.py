"""The bulk user routes over HTTP (issue 6): CSV import (dry run, apply, 422 report, jobs for
large files), streamed CSV export with formula escaping, bulk password reset and bulk
expiration, their effect over RADIUS, and one audit event per operation."""

from __future__ import annotations

import csv
import io
import time

import pytest

from radiusd.admin_api.bulk_handlers import MAX_IMPORT_BYTES
from radiusd.admin_api.import_jobs import SYNC_MAX_HASHES, SYNC_MAX_ROWS
from radiusd.admin_api.request import MAX_BODY_BYTES
from radiusd.config import SecuritySection
from radiusd.crypto import PasswordHasher
from tests.support import PASSWORD, assert_problem

IMPORT = "/api/v1/users/import"
ACCEPT, REJECT = 2, 3


def csv_body(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()


def post_csv(api, body: bytes, content_type: str = "text/csv", **query):
    return api.request("POST", IMPORT, body=body, headers={"Content-Type": content_type},
                       query={key: str(value).lower() for key, value in query.items()} or None)


def radius_code(api_server, username: str, password: str) -> int:
    client = api_server.radius()
    try:
        return client.send(client.access_request(username, password))[1].code
    finally:
        client.close()


def finished(api, location: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = api.get(location)
        assert reply.status == 200, reply.raw
        job = reply.json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"import job {location} did not finish")


def test_dry_run_then_apply_creates_users_who_log_in(admin_api, api_server):
    body = csv_body([["username", "password", "framed_ip_address", "mfa_exempt"],
                     ["api-imp-1", PASSWORD, "10.50.0.1", "true"], ["api-imp-2", PASSWORD, "10.50.0.2", "true"]])
    dry = post_csv(admin_api, body)
    assert dry.status == 200 and dry.json()["dry_run"] is True and dry.json()["created"] == 2
    assert_problem(admin_api.get("/api/v1/users/api-imp-1"), 404, "not_found")
    applied = post_csv(admin_api, body, dry_run=False)
    assert applied.status == 200, applied.raw
    assert applied.json()["applied"] is True and applied.json()["created"] == 2
    assert PASSWORD.encode() not in applied.raw
    assert radius_code(api_server, "api-imp-2", PASSWORD) == ACCEPT


def test_an_apply_with_errors_is_422_with_the_report_and_writes_nothing(admin_api):
    body = csv_body([["username", "password", "email"], ["api-bad-1", PASSWORD, "ok@example.com"],
                     ["api-bad-2", PASSWORD, "not-an-email"], ["api-bad-3", "short", ""]])
    document = assert_problem(post_csv(admin_api, body, dry_run=False), 422, "invalid")
    report = document["report"]
    assert report["applied"] is False and report["error_count"] == 2
    assert [(error["line"], error["column"]) for error in report["errors"]] == [(3, "email"), (4, "password")]
    assert_problem(admin_api.get("/api/v1/users/api-bad-1"), 404, "not_found")


def test_an_existing_username_is_reported_without_naming_a_cli_flag(admin_api):
    body = csv_body([["username", "password"], ["api-exists", PASSWORD]])
    assert post_csv(admin_api, body, dry_run=False).status == 200
    [error] = post_csv(admin_api, body).json()["errors"]
    assert "exists already" in error["message"] and "--" not in error["message"]


def test_the_import_takes_csv_only_and_checks_its_query(admin_api):
    body = csv_body([["username"], ["api-media"]])
    assert_problem(post_csv(admin_api, body, content_type="application/json"), 415, "unsupported_media_type")
    assert post_csv(admin_api, body, content_type="application/csv").status == 200
    assert_problem(post_csv(admin_api, b""), 422, "invalid")
    assert_problem(post_csv(admin_api, body, on_conflict="merge"), 422, "invalid")
    assert_problem(post_csv(admin_api, body, colour="blue"), 422, "unknown_field")


def test_a_large_file_is_a_job_polled_until_done(admin_api, api_server):
    stored = PasswordHasher(SecuritySection()).hash(PASSWORD)
    rows = [["username", "password_hash", "framed_ip_address"]]
    rows += [[f"api-job-{i:03d}", stored, f"10.51.{i // 250}.{i % 250 + 1}"] for i in range(SYNC_MAX_ROWS + 50)]
    reply = post_csv(admin_api, csv_body(rows), dry_run=False)
    assert reply.status == 202, reply.raw
    job = reply.json()
    assert reply.headers["location"] == f"{IMPORT}/{job['job_id']}"
    assert job["rows"] == SYNC_MAX_ROWS + 50 and job["status"] in ("queued", "running", "done")
    done = finished(admin_api, reply.headers["location"])
    assert done["status"] == "done" and done["error"] is None and done["finished_at"] is not None
    assert done["report"]["applied"] is True and done["report"]["created"] == SYNC_MAX_ROWS + 50
    assert radius_code(api_server, "api-job-249", PASSWORD) == ACCEPT


def test_plaintext_passwords_beyond_the_threshold_are_hashed_in_a_job(admin_api):
    count = SYNC_MAX_HASHES + 2
    rows = [["username", "password"]] + [[f"api-hash-{i}", f"{PASSWORD}-{i}"] for i in range(count)]
    reply = post_csv(admin_api, csv_body(rows), dry_run=False)
    assert reply.status == 202, reply.raw
    done = finished(admin_api, reply.headers["location"])
    assert done["progress"] == {"hashed": count, "to_hash": count}
    assert done["report"]["created"] == count
    assert post_csv(admin_api, csv_body(rows)).status == 200  # a dry run of it is answered at once
    assert_problem(admin_api.get(f"{IMPORT}/no-such-job"), 404, "not_found")


def test_a_job_reports_errors_without_writing(admin_api):
    rows = [["username", "framed_ip_address"]] + [[f"api-jerr-{i}", "10.52.0.1"] for i in range(SYNC_MAX_ROWS + 1)]
    reply = post_csv(admin_api, csv_body(rows), dry_run=False)
    done = finished(admin_api, reply.headers["location"])
    assert done["status"] == "done" and done["report"]["applied"] is False
    assert done["report"]["error_count"] == SYNC_MAX_ROWS  # every line after the first has its address
    assert_problem(admin_api.get("/api/v1/users/api-jerr-0"), 404, "not_found")


def test_import_bodies_may_exceed_the_json_limit():
    from radiusd.admin_api import api_resource
    from types import SimpleNamespace
    from radiusd.config import Config

    runtime = SimpleNamespace(config=Config(), metrics=None, context=SimpleNamespace(clock=time.time))
    router = api_resource(runtime, reactor=None, pools={}).router
    assert router.body_limit(b"/api/v1/users/import") == MAX_IMPORT_BYTES
    assert router.body_limit(b"/api/v1/users/import?dry_run=false") == MAX_IMPORT_BYTES
    assert router.body_limit(b"/api/v1/users") == MAX_BODY_BYTES
    assert router.body_limit(b"/api/v1/users/bulk/expiration") == MAX_BODY_BYTES
    assert router.body_limit(b"/\xff") == MAX_BODY_BYTES


def test_a_csv_over_one_mib_is_accepted(admin_api):
    description = "x" * 990
    rows = [["username", "description"]] + [[f"api-big-{i}", description] for i in range(1100)]
    body = csv_body(rows)
    assert len(body) > MAX_BODY_BYTES
    reply = post_csv(admin_api, body)
    assert reply.status == 202, reply.raw[:300]
    assert finished(admin_api, reply.headers["location"])["report"]["valid"] == 1100
    assert_problem(admin_api.post("/api/v1/users", {"username": "x" * (MAX_BODY_BYTES + 1)}), 413,
                   "payload_too_large")


def test_export_streams_every_user_as_csv_with_formulas_escaped(admin_api):
    created = admin_api.post("/api/v1/users", {"username": "api-exp", "password": PASSWORD,
                                               "password_confirmation": PASSWORD, "phone": "+905554443322",
                                               "description": "=HYPERLINK(\"http://evil\"), \"x\"\n-2"})
    assert created.status == 201
    reply = admin_api.get("/api/v1/users/export")
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    assert reply.headers.get("transfer-encoding") == "chunked" and "content-length" not in reply.headers
    assert reply.headers["content-disposition"] == 'attachment; filename="users.csv"'
    rows = list(csv.DictReader(io.StringIO(reply.raw.decode(), newline="")))
    exported = next(row for row in rows if row["username"] == "api-exp")
    assert exported["description"] == "'=HYPERLINK(\"http://evil\"), \"x\"\n-2"
    assert exported["phone"] == "'+905554443322"
    assert "password" not in rows[0] and b"$argon2" not in reply.raw
    assert [row["username"] for row in rows] == sorted(row["username"] for row in rows)

    again = post_csv(admin_api, reply.raw, on_conflict="update")  # the export imports as it is
    assert again.status in (200, 202), again.raw
    report = again.json() if again.status == 200 else finished(admin_api, again.headers["location"])["report"]
    assert report["error_count"] == 0 and report["updated"] == len(rows), report["errors"][:3]


def test_bulk_password_reset_returns_passwords_once_and_old_ones_stop_working(admin_api, api_server):
    for name in ("api-br-1", "api-br-2"):
        assert admin_api.post("/api/v1/users", {"username": name, "password": PASSWORD,
                                                "password_confirmation": PASSWORD, "mfa_exempt": True}).status == 201
    reply = admin_api.post("/api/v1/users/bulk/password-reset", {"usernames": ["api-br-1", "api-br-2"]})
    assert reply.status == 200 and reply.headers["cache-control"] == "no-store"
    result = reply.json()
    assert result["count"] == 2
    new = {item["username"]: item["password"] for item in result["items"]}
    assert radius_code(api_server, "api-br-1", PASSWORD) == REJECT
    assert radius_code(api_server, "api-br-1", new["api-br-1"]) == ACCEPT
    assert radius_code(api_server, "api-br-2", new["api-br-2"]) == ACCEPT
    assert new["api-br-1"].encode() not in admin_api.get("/api/v1/users/api-br-1").raw

    by_filter = admin_api.post("/api/v1/users/bulk/password-reset", {"q": "api-br-2"}).json()
    assert [item["username"] for item in by_filter["items"]] == ["api-br-2"]
    assert radius_code(api_server, "api-br-2", new["api-br-2"]) == REJECT


@pytest.mark.parametrize("body, status, code", [
    ({}, 422, "invalid"),
    ({"usernames": ["api-br-1"], "status": "active"}, 422, "invalid"),
    ({"usernames": []}, 422, "invalid"),
    ({"usernames": ["no-such-user"]}, 404, "not_found"),
    ({"status": "everyone"}, 422, "invalid"),
    ({"usernames": ["x"], "password": "chosen"}, 422, "unknown_field"),
])
def test_bulk_password_reset_refuses_bad_selections(admin_api, body, status, code):
    assert_problem(admin_api.post("/api/v1/users/bulk/password-reset", body), status, code)


def test_bulk_expiration_takes_effect_over_radius(admin_api, api_server):
    for name in ("api-be-1", "api-be-2"):
        admin_api.post("/api/v1/users", {"username": name, "password": PASSWORD, "password_confirmation": PASSWORD,
                                         "mfa_exempt": True})
    past = admin_api.post("/api/v1/users/bulk/expiration", {"usernames": ["api-be-1", "api-be-2"],
                                                            "expires_at": "2001-02-03T04:05:06Z"})
    assert past.status == 200, past.raw
    assert past.json()["expired"] is True and past.json()["count"] == 2
    assert {item["status"] for item in past.json()["items"]} == {"expired"}
    assert radius_code(api_server, "api-be-1", PASSWORD) == REJECT
    future = admin_api.post("/api/v1/users/bulk/expiration", {"usernames": ["api-be-1"],
                                                              "expires_at": "2040-01-01T00:00:00+03:00"})
    assert future.json()["items"][0]["expires_at"] == "2039-12-31T21:00:00+00:00"
    assert radius_code(api_server, "api-be-1", PASSWORD) == ACCEPT
    assert_problem(admin_api.post("/api/v1/users/bulk/expiration", {"usernames": ["api-be-1", "ghost"],
                                                                    "expires_at": None}), 404, "not_found")
    assert admin_api.get("/api/v1/users/api-be-1").json()["expires_at"] is not None  # all or none
    assert_problem(admin_api.post("/api/v1/users/bulk/expiration", {"usernames": ["api-be-1"]}), 422, "invalid")


def test_each_bulk_operation_is_one_audit_event(admin_api):
    body = csv_body([["username"], ["api-aud-1"], ["api-aud-2"], ["api-aud-3"]])
    assert post_csv(admin_api, body, dry_run=False).status == 200
    admin_api.post("/api/v1/users/bulk/expiration", {"usernames": ["api-aud-1", "api-aud-2"], "expires_at": None})
    admin_api.post("/api/v1/users/bulk/password-reset", {"usernames": ["api-aud-3"]})
    events = admin_api.get("/api/v1/audit-events", query={"type": "admin", "limit": 20}).json()["items"]
    latest = {}
    for event in reversed(events):
        latest[event["reason"]] = event
    assert latest["user.import"]["detail"]["created"] == 3
    assert latest["user.bulk_expiration"]["detail"]["count"] == 2
    assert latest["user.bulk_password_reset"]["detail"] == {"count": 1, "selection": {"usernames": 1}}
    assert all(latest[reason]["actor"].startswith("api:") for reason in
               ("user.import", "user.bulk_expiration", "user.bulk_password_reset"))
    assert not any(event["username"] and event["username"].startswith("api-aud-") for event in events)
