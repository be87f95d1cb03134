"""Console fixtures: a real ``radiusd serve`` per module with operators, and an HTTP client
that keeps the console's cookie the way a browser does."""

from __future__ import annotations

import http.client
import re
import time
from dataclasses import dataclass
from http.cookies import SimpleCookie
from urllib.parse import urlencode

import pyotp
import pytest

from tests.support import PASSWORD, ApiServer, admin, start_api_server, step_start

COOKIE = "radiusd_console"


@dataclass
class Page:
    status: int
    headers: http.client.HTTPMessage
    text: str

    @property
    def location(self) -> str | None:
        return self.headers.get("location")

    @property
    def csrf_token(self) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', self.text).group(1)

    def cookies(self) -> list[str]:
        return self.headers.get_all("set-cookie") or []


class Browser:
    """Requests to the console with its cookie kept (Set-Cookie applied in order) and an Origin."""

    def __init__(self, port: int):
        self.port = port
        self.origin = f"http://127.0.0.1:{port}"
        self.cookie: str | None = None

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None) -> Page:
        sent = {"Host": f"127.0.0.1:{self.port}"}
        if self.cookie is not None:
            sent["Cookie"] = f"{COOKIE}={self.cookie}"
        body = None
        if form is not None:
            body = urlencode(form)
            sent.update({"Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin})
        sent.update(headers or {})
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers={k: v for k, v in sent.items() if v is not None})
            response = connection.getresponse()
            page = Page(response.status, response.headers, response.read().decode())
        finally:
            connection.close()
        for header in page.cookies():
            morsel = SimpleCookie(header)[COOKIE]
            self.cookie = None if morsel["max-age"] == "0" else morsel.value
        return page

    def get(self, path: str, **headers) -> Page:
        return self.request("GET", path, headers=headers)

    def post(self, path: str, form: dict, **headers) -> Page:
        return self.request("POST", path, form, headers)

    def login_password(self, name: str, password: str = PASSWORD) -> Page:
        form = self.get("/console/login")
        return self.post("/console/login", {"csrf_token": form.csrf_token, "name": name, "password": password})

    def submit_code(self, code: str) -> Page:
        form = self.get("/console/login/code")
        return self.post("/console/login/code", {"csrf_token": form.csrf_token, "code": code})


@dataclass
class Operator:
    name: str
    totp: pyotp.TOTP
    last: float = 0.0  # the time whose step was used last (a code is accepted once)

    def next_code(self) -> str:
        """A code of a step not used before (waits for the next step when needed)."""
        now = step_start()
        if int(now // 30) <= int(self.last // 30):
            time.sleep(30 - now % 30 + 0.2)
            now = time.time()
        self.last = now
        return self.totp.at(now)


@dataclass
class Console:
    started: ApiServer  # the server, its admin API and RADIUS port

    @property
    def server(self):
        return self.started.server

    @property
    def port(self) -> int:
        return self.started.port

    def browser(self) -> Browser:
        return Browser(self.port)

    def add_operator(self, name: str, role: str = "admin") -> None:
        admin(self.server.config_path, "operator", "add", name, "--role", role, "--password-stdin",
              stdin=PASSWORD + "\n")

    def enrolled(self, name: str, role: str = "admin") -> tuple[Operator, Browser]:
        """An operator who enrolled through the console, and their signed-in browser."""
        self.add_operator(name, role)
        browser = self.browser()
        assert browser.login_password(name).location == "/console/login/enrol"
        enrol = browser.get("/console/login/enrol")
        key = re.search(r'<code id="manual-key">([^<]+)</code>', enrol.text).group(1).replace(" ", "")
        operator = Operator(name, pyotp.TOTP(key))
        done = browser.post("/console/login/code", {"csrf_token": enrol.csrf_token, "code": operator.next_code()})
        assert done.status == 303 and done.location == "/console/", done.text
        return operator, browser


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    started = start_api_server(tmp_path_factory.mktemp("console"), sections={
        "console": {"login_attempts_per_minute": 60},
        "accounting": {"sweep_interval_seconds": 1}})  # housekeeping every second: expired sessions go
    yield Console(started)
    started.server.stop()
