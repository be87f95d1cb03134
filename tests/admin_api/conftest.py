"""Admin API fixtures: a real ``radiusd serve`` per module, an HTTP client, tokens per type."""

from __future__ import annotations

import base64
import http.client
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pyotp
import pytest

from tests.support import RadiusClient, ServerProcess, admin, write_config

PASSWORD = "Correct-Horse-7731"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    raw: bytes

    def json(self):
        return json.loads(self.raw)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


@dataclass
class Api:
    """A plain HTTP/1.1 client for the admin API; remembers every body it received."""

    port: int
    token: str | None = None
    received: list[bytes] = field(default_factory=list)
    source: str | None = None  # another loopback address to connect from (per-address limits)

    def request(self, method: str, path: str, *, json_body=None, body: bytes | None = None,
                headers: dict | None = None, token: str | None = None, query: dict | None = None) -> Response:
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        bearer = token if token is not None else self.token
        if bearer and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {bearer}"
        if query:
            path = f"{path}?{urlencode(query)}"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30,
                                                source_address=(self.source, 0) if self.source else None)
        try:
            connection.request(method, path, body=body, headers=headers)
            reply = connection.getresponse()
            raw = reply.read()
            result = Response(reply.status, {name.lower(): value for name, value in reply.getheaders()}, raw)
        finally:
            connection.close()
        self.received.append(raw)
        return result

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path, json_body=None, **kwargs):
        return self.request("POST", path, json_body=json_body, **kwargs)

    def put(self, path, json_body=None, **kwargs):
        return self.request("PUT", path, json_body=json_body, **kwargs)

    def patch(self, path, json_body=None, **kwargs):
        return self.request("PATCH", path, json_body=json_body, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def token_request(self, form: dict | None = None, *, basic: tuple[str, str] | None = None,
                      content_type: str = "application/x-www-form-urlencoded", raw: bytes | None = None) -> Response:
        headers = {"Content-Type": content_type}
        if basic is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
        body = raw if raw is not None else urlencode(form or {}).encode()
        return self.request("POST", "/oauth/token", body=body, headers=headers, token="")

    def issue_token(self, client_id: str, secret: str) -> str:
        reply = self.token_request({"grant_type": "client_credentials"}, basic=(client_id, secret))
        assert reply.status == 200, reply.raw
        return reply.json()["access_token"]

    def all_pages(self, path: str, limit: int, **query) -> list[dict]:
        items, cursor = [], None
        while True:
            params = {"limit": limit, **query, **({"cursor": cursor} if cursor else {})}
            reply = self.get(path, query=params)
            assert reply.status == 200, reply.raw
            document = reply.json()
            assert set(document) == {"items", "next_cursor"}
            assert len(document["items"]) <= limit
            items.extend(document["items"])
            cursor = document["next_cursor"]
            if cursor is None:
                return items


@dataclass
class ApiServer:
    server: ServerProcess
    admin_client: dict

    @property
    def port(self) -> int:
        return self.server.settings["api"]["port"]

    @property
    def config_path(self) -> Path:
        return self.server.config_path

    @property
    def database_url(self) -> str:
        return self.server.settings["database"]["url"]

    def api(self, token: str | None = None) -> Api:
        return Api(self.port, token)

    def admin_api(self) -> Api:
        api = self.api()
        api.token = api.issue_token(self.admin_client["client_id"], self.admin_client["client_secret"])
        return api

    def client_of_type(self, client_type: str, name: str) -> tuple[dict, Api]:
        """A new API client of ``client_type`` and an Api holding its token."""
        reply = self.admin_api().post("/api/v1/api-clients", {"type": client_type, "name": name})
        assert reply.status == 201, reply.raw
        created = reply.json()
        api = self.api()
        api.token = api.issue_token(created["client_id"], created["client_secret"])
        return created, api

    def radius(self) -> RadiusClient:
        return RadiusClient(self.server.auth_port)


def start_api_server(directory: Path, database_url: str | None = None, sections: dict | None = None,
                     nas: list[dict] | None = None) -> ApiServer:
    url = database_url or f"sqlite:///{directory / 'radiusd.db'}"
    config = write_config(directory, url, sections=sections, nas=nas)
    admin(config, "db", "upgrade")
    created = json.loads(admin(config, "api-client", "ensure-admin").stdout)
    server = ServerProcess(config, directory / "radiusd.log").start()
    return ApiServer(server, created)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """One server for the module (tests use distinct usernames and clients)."""
    started = start_api_server(tmp_path_factory.mktemp("api"))
    yield started
    started.server.stop()


@pytest.fixture(scope="module")
def admin_api(api_server) -> Api:
    return api_server.admin_api()


def totp_of(enrolment: dict) -> pyotp.TOTP:
    return pyotp.parse_uri(enrolment["otpauth_uri"])


def step_start() -> float:
    """A time safely inside a TOTP step (waits out the last two seconds of one)."""
    now = time.time()
    if now % 30 > 27:
        time.sleep(30 - now % 30 + 0.2)
        now = time.time()
    return now


def enrolment_for(api: Api, username: str, *, password: str | None = PASSWORD, **fields) -> dict:
    """Create the user (``fields`` as for ``POST /users``) and enrol them: the enrolment as
    shown once (otpauth URI, activation code)."""
    body = {"username": username, **fields}
    if password:
        body.update(password=password, password_confirmation=password)
    assert api.post("/api/v1/users", body).status == 201
    enrolment = api.post(f"/api/v1/softotp/{username}/enroll")
    assert enrolment.status == 201, enrolment.raw
    return enrolment.json()


def enrolled_user(api: Api, username: str, *, password: str | None = PASSWORD) -> tuple[pyotp.TOTP, float]:
    """A user with a verified SoftOTP enrolment; returns its TOTP and the time whose step the
    verification consumed (codes of later steps are still fresh)."""
    totp = totp_of(enrolment_for(api, username, password=password))
    now = step_start()
    verified = api.post(f"/api/v1/softotp/{username}/verify", {"otp": totp.at(now - 30)})
    assert verified.json() == {"username": username, "valid": True, "verified": True}
    return totp, now


def assert_problem(reply: Response, status: int, code: str) -> dict:
    assert reply.status == status, (reply.status, reply.raw)
    assert reply.content_type == "application/problem+json"
    document = reply.json()
    assert {"type", "title", "status", "detail", "code"} <= set(document)
    assert document["status"] == status and document["code"] == code, document
    assert document["type"].endswith(code)
    return document


def activated_user(api: Api, username: str, *, password: str | None = PASSWORD,
                   **fields) -> tuple[pyotp.TOTP, Api]:
    """A user whose authenticator app is activated (``POST /mobile/activate``): its TOTP and an
    Api holding the device token. The activation uses the previous step's code, so the current
    step's code is still fresh for a login."""
    enrolment = enrolment_for(api, username, password=password, **fields)
    totp = totp_of(enrolment)
    now = step_start()
    reply = Api(api.port).post("/api/v1/mobile/activate", {
        "activation_code": enrolment["activation_code"], "otp": totp.at(now - 30),
        "device_name": "test phone", "platform": "test"})
    assert reply.status == 201, reply.raw
    return totp, Api(api.port, reply.json()["device_token"])
