"""The console over real HTTP against a real ``radiusd serve``: redirects, login with password
and TOTP (enrolment first), the session cookie, the security headers, CSRF and Origin checks,
session fixation, logout, the idle timeout and the role table."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, console_sessions, utcnow

from tests.support import PASSWORD, wait_for

PAGES = ("/console/login", "/console/", "/console/login/code", "/console/login/enrol", "/console/nope")


def test_root_and_bare_console_redirect_to_the_console(console):
    browser = console.browser()
    for path in ("/", "/console"):
        assert browser.get(path).status == 302 and browser.get(path).location == "/console/"


def test_dashboard_without_a_session_redirects_to_login(console):
    page = console.browser().get("/console/")
    assert page.status == 303 and page.location == "/console/login"


@pytest.mark.parametrize("path", PAGES)
def test_every_page_carries_the_security_headers(console, path):
    page = console.browser().get(path)
    assert page.headers["content-security-policy"].startswith("default-src 'self'; img-src 'self' data:")
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"


def test_pages_have_no_inline_script_or_style(console):
    text = console.browser().get("/console/login").text
    assert "<script>" not in text and "<style" not in text and " style=" not in text
    assert '<script src="/console/static/console.js"' in text


def test_enrolment_then_code_gives_a_session_with_a_new_id(console):
    operator, browser = console.enrolled("enrolling")
    dashboard = browser.get("/console/")
    assert dashboard.status == 200
    assert "<h1>Dashboard</h1>" in dashboard.text and "enrolling" in dashboard.text
    # the next login asks for the code straight away, with the enrolled key
    again = console.browser()
    assert again.login_password("enrolling").location == "/console/login/code"
    pending = again.cookie
    done = again.submit_code(operator.next_code())
    assert done.location == "/console/"
    assert again.cookie.split(".")[0] != pending.split(".")[0]  # no session fixation
    assert again.get("/console/").status == 200


def test_the_pending_session_cookie_does_not_open_the_console(console):
    console.add_operator("halfway")
    browser = console.browser()
    browser.login_password("halfway")
    assert browser.get("/console/").location == "/console/login"


def test_enrolment_page_shows_a_qr_image_and_the_manual_key(console):
    console.add_operator("qrshown")
    browser = console.browser()
    browser.login_password("qrshown")
    page = browser.get("/console/login/enrol")
    assert 'src="data:image/svg+xml' in page.text and 'alt="QR code' in page.text
    assert '<code id="manual-key">' in page.text


def test_session_cookie_flags(console):
    browser = console.browser()
    cookie = browser.get("/console/login").cookies()[0]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/" in cookie
    assert "Secure" not in cookie  # "auto" over plain HTTP


def test_wrong_password_and_wrong_code_are_refused(console):
    operator, _ = console.enrolled("refusing")
    browser = console.browser()
    assert browser.login_password("refusing", "not-the-password").status == 401
    assert browser.login_password("nobody-here").status == 401
    browser.login_password("refusing")
    wrong = browser.submit_code("000000" if operator.totp.now() != "000000" else "111111")
    assert wrong.status == 401 and "not accepted" in wrong.text
    assert browser.get("/console/").location == "/console/login"


def test_post_without_csrf_token_is_refused(console):
    _, browser = console.enrolled("nocsrf")
    assert browser.post("/console/logout", {}).status == 403
    assert browser.get("/console/").status == 200  # still signed in


def test_post_with_another_sessions_token_is_refused(console):
    _, mine = console.enrolled("mytoken")
    _, theirs = console.enrolled("theirtoken")
    their_token = theirs.get("/console/").csrf_token
    assert mine.post("/console/logout", {"csrf_token": their_token}).status == 403
    assert mine.get("/console/").status == 200


def test_login_without_the_form_token_is_refused(console):
    browser = console.browser()
    browser.get("/console/login")
    page = browser.post("/console/login", {"name": "x", "password": PASSWORD})
    assert page.status == 403


def test_cross_origin_posts_are_refused(console):
    _, browser = console.enrolled("origins")
    token = browser.get("/console/").csrf_token
    assert browser.post("/console/logout", {"csrf_token": token}, Origin="http://evil.example").status == 403
    assert browser.post("/console/logout", {"csrf_token": token}, Origin="null").status == 403
    assert browser.post("/console/logout", {"csrf_token": token}, Origin=None).status == 403
    assert browser.get("/console/").status == 200
    # Chromium's form post under no-referrer: Origin null, Sec-Fetch-Site same-origin
    out = browser.post("/console/logout", {"csrf_token": token}, Origin="null", **{"Sec-Fetch-Site": "same-origin"})
    assert out.status == 303


def test_logout_ends_the_session(console):
    _, browser = console.enrolled("leaving")
    kept = browser.cookie
    token = browser.get("/console/").csrf_token
    out = browser.post("/console/logout", {"csrf_token": token})
    assert out.status == 303 and out.location == "/console/login"
    assert browser.cookie is None
    browser.cookie = kept  # the old cookie is dead on the server too
    assert browser.get("/console/").location == "/console/login"


def test_idle_session_has_ended(console):
    _, browser = console.enrolled("idler")
    database = Database(console.server.settings["database"]["url"])
    try:
        with database.writer.begin() as conn:  # as if unused for longer than session_idle_minutes
            conn.execute(update(console_sessions).values(last_seen_at=utcnow() - timedelta(minutes=16)))
    finally:
        database.engine.dispose()
    assert browser.get("/console/").location == "/console/login"


def test_the_servers_housekeeping_deletes_sessions_past_their_timeouts(console):
    operator, _ = console.enrolled("swept")
    database = Database(console.server.settings["database"]["url"])
    try:
        with database.writer.begin() as conn:
            conn.execute(update(console_sessions).values(last_seen_at=utcnow() - timedelta(minutes=16)))

        def left() -> int:
            with database.engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(console_sessions)).scalar_one()

        assert wait_for(lambda: left() == 0, timeout=10)
    finally:
        database.engine.dispose()


def test_console_actions_are_audited(console):
    _, browser = console.enrolled("audited")
    token = browser.get("/console/").csrf_token
    browser.post("/console/logout", {"csrf_token": token})
    database = Database(console.server.settings["database"]["url"])
    try:
        with database.engine.connect() as conn:
            reasons = [row.reason for row in conn.execute(
                select(audit_events).where(audit_events.c.actor == "console:audited"))]
    finally:
        database.engine.dispose()
    assert "ok" in reasons and "logout" in reasons and "operator.enrol" in reasons


@pytest.mark.parametrize("role", ["admin", "helpdesk", "auditor"])
def test_every_role_sees_the_dashboard(console, role):
    _, browser = console.enrolled(f"role-{role}", role)
    assert browser.get("/console/").status == 200


def test_dashboard_shows_figures_from_the_database(console, tmp_path):
    _, browser = console.enrolled("figures")
    text = browser.get("/console/").text
    for label in ("users", "blocked now", "SoftOTP verified", "SoftOTP pending", "open sessions",
                  "Users by status", "Decisions in the last hour"):
        assert label in text


def test_login_is_rate_limited_per_source(console):
    browser = console.browser()
    token = browser.get("/console/login").csrf_token
    statuses = [browser.post("/console/login", {"csrf_token": token, "name": "nobody", "password": "x"}).status
                for _ in range(65)]
    assert 429 in statuses
