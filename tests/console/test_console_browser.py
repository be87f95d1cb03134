"""The console in Debian's chromium driven by Playwright: login with enrolment and with a code,
keyboard only; axe-core (bundled by axe-playwright-python, offline) finds no WCAG 2.1 A/AA
violation on the login, enrolment, code and Dashboard screens; no CSP violation is reported;
screenshots go to the test's tmp dir."""

from __future__ import annotations

import re
from pathlib import Path

import pyotp
import pytest

from tests.console.conftest import Operator
from tests.support import PASSWORD, missing

CHROMIUM = Path("/usr/bin/chromium")
WCAG = {"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
        "resultTypes": ["violations"]}


@pytest.fixture(scope="module")
def chromium():
    if not CHROMIUM.exists():
        missing("chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, console):
    context = chromium.new_context(base_url=f"http://127.0.0.1:{console.port}", viewport={"width": 1100, "height": 640})
    page = context.new_page()
    page.csp_errors = []
    page.on("console", lambda message: "Content Security Policy" in message.text and page.csp_errors.append(message.text))
    yield page
    context.close()


def accessible(page) -> None:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options=WCAG)
    assert results.violations_count == 0, results.generate_report()
    assert page.csp_errors == []


def some_users_and_decisions(console) -> None:
    """Figures for the Dashboard: users of each status and a few RADIUS decisions."""
    api = console.started.admin_api()
    for name in ("dash-ann", "dash-bob", "dash-cy", "dash-dee"):
        assert api.post("/api/v1/users", {"username": name, "password": PASSWORD,
                                          "password_confirmation": PASSWORD}).status == 201
    assert api.post("/api/v1/users/dash-dee/disable").status == 200
    assert api.post("/api/v1/users/dash-cy/block", {"duration_seconds": 600, "reason": "screenshot"}).status == 200
    radius = console.started.radius()
    try:
        for name, password in (("dash-ann", PASSWORD), ("dash-bob", PASSWORD), ("dash-bob", "wrong"),
                               ("dash-cy", PASSWORD), ("nobody", "wrong")):
            radius.send(radius.access_request(name, password))
    finally:
        radius.close()


def test_first_login_enrols_then_shows_the_dashboard(console, page, tmp_path):
    console.add_operator("browser-admin")
    page.goto("/")
    assert page.get_by_role("heading", name="Sign in").is_visible()
    accessible(page)
    page.screenshot(path=tmp_path / "login.png")
    page.get_by_label("Name").fill("browser-admin")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    page.get_by_role("heading", name="Set up two-factor authentication").wait_for()
    assert page.get_by_role("img", name=re.compile("QR code")).is_visible()
    accessible(page)
    page.screenshot(path=tmp_path / "enrol.png", full_page=True)
    key = page.locator("#manual-key").inner_text().replace(" ", "")
    operator = Operator("browser-admin", pyotp.TOTP(key))
    page.get_by_label("Code from your authenticator app").fill(operator.next_code())
    page.get_by_role("button", name="Verify").click()

    page.get_by_role("heading", name="Dashboard").wait_for()
    some_users_and_decisions(console)
    page.reload()
    assert page.get_by_role("navigation", name="Console").get_by_role("link", name="Dashboard").is_visible()
    assert page.get_by_role("table", name="Users by status").is_visible()
    assert page.get_by_role("table", name="Decisions in the last hour").get_by_role(
        "cell", name="bad_password").is_visible()
    accessible(page)
    page.screenshot(path=tmp_path / "dashboard.png")

    page.get_by_role("button", name="Log out").click()
    page.get_by_role("heading", name="Sign in").wait_for()
    page.goto("/console/")
    assert page.get_by_role("heading", name="Sign in").is_visible()


def test_keyboard_only_login_with_a_code(console, page, tmp_path):
    operator, _ = console.enrolled("browser-keys", "auditor")
    page.goto("/console/login")
    page.keyboard.type("browser-keys")  # the name field has focus
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Enter your code").wait_for()
    accessible(page)
    page.screenshot(path=tmp_path / "code.png")
    page.keyboard.type(operator.next_code())
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Dashboard").wait_for()
    assert "auditor" in page.locator("header").inner_text()
