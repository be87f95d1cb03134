"""Test helpers: configuration files, a real ``radiusd serve`` process, RADIUS and accounting
clients, a NAS's Disconnect listener, the second-factor helpers of the integration tests, and an
HTTP client of the admin API with its helpers.

The client builds and checks packets with pyrad (an implementation independent of ours):
requests carry Message-Authenticator first, replies have their Response Authenticator and
Message-Authenticator verified by pyrad before a test sees them.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import pyotp
import pytest
from pyrad import packet as pyrad_packet
from pyrad.dictionary import Dictionary
from sqlalchemy import select

from radiusd.db.engine import Database
from radiusd.db.tables import sessions

ROOT = Path(__file__).resolve().parents[1]
DICTIONARY = Dictionary(str(ROOT / "dictionaries" / "dictionary"))
BIN = Path(sys.executable).parent
STRICT = os.environ.get("RADIUSD_TEST_STRICT") == "1"
PG_ADMIN_URL = os.environ.get("RADIUSD_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
SECRET = b"test-secret-0123456789"
PASSWORD = "correct-horse-battery"
ACCEPT, REJECT, CHALLENGE = pyrad_packet.AccessAccept, pyrad_packet.AccessReject, pyrad_packet.AccessChallenge


def need_program(name: str) -> str:
    """Path of a program the test needs; skip without it, or fail under RADIUSD_TEST_STRICT=1."""
    path = shutil.which(name) or next((str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name)
                                       if p.exists()), None)
    if path is None:
        missing(f"{name} is not installed (apt-get install the package that provides it)")
    return path


def need_file(path: str, package: str) -> str:
    """A file a Debian package installs; skip without it, or fail under RADIUSD_TEST_STRICT=1."""
    if not Path(path).exists():
        missing(f"{path} is missing (apt-get install {package})")
    return path


def missing(message: str) -> None:
    if STRICT:
        pytest.fail(message + " and RADIUSD_TEST_STRICT=1 forbids skipping")
    pytest.skip(message)


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_seed_key(path: Path) -> Path:
    path.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    path.chmod(0o600)
    return path


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml_value(item)}" for key, item in value.items()) + " }"
    raise TypeError(type(value))


def write_config(directory: Path, database_url: str, *, sections: dict | None = None,
                 nas: list[dict] | None = None) -> Path:
    """A complete radiusd.toml in ``directory``; ``sections`` overrides keys per section."""
    seed = directory / "seed.key"
    if not seed.exists():
        write_seed_key(seed)
    base = {
        "server": {"listen": ["127.0.0.1"], "auth_port": free_port(), "acct_port": 0,
                   "reject_delay_seconds": 0, "auth_threads": 2},
        "security": {"seed_key": {"file": str(seed)}},
        "database": {"url": database_url},
        "api": {"listen": "127.0.0.1", "port": free_port(socket.SOCK_STREAM)},
        "ops": {"listen": "127.0.0.1", "port": free_port(socket.SOCK_STREAM)},
        "mfa": {"required": False},
        "sms": {"spool_path": str(directory / "sms.spool")},
        "logging": {"format": "json", "level": "info"},
    }
    for name, values in (sections or {}).items():
        base.setdefault(name, {}).update(values)
    lines = []
    for name, values in base.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in values.items())
        lines.append("")
    for entry in nas if nas is not None else [{"name": "test", "address": "127.0.0.1/32",
                                               "secret": SECRET.decode()}]:
        lines.append("[[nas]]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in entry.items())
        lines.append("")
    path = directory / "radiusd.toml"
    path.write_text("\n".join(lines))
    return path


def admin(config: Path, *args: str, stdin: str | None = None, fmt: str = "json",
          check: bool = True) -> subprocess.CompletedProcess:
    """Run ``radiusd-admin --config CONFIG --format FMT ARGS``."""
    result = subprocess.run([str(BIN / "radiusd-admin"), "--config", str(config), "--format", fmt, *args],
                            input=stdin, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"radiusd-admin {' '.join(args)} failed: {result.stderr}")
    return result


class ServerProcess:
    """A ``radiusd serve`` child process, stopped by its PID."""

    def __init__(self, config: Path, log_path: Path):
        import tomllib

        self.config_path = config
        self.settings = tomllib.loads(config.read_text())
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    @property
    def auth_port(self) -> int:
        return self.settings["server"]["auth_port"]

    @property
    def ops_url(self) -> str:
        return f"http://127.0.0.1:{self.settings['ops']['port']}"

    def start(self, timeout: float = 30, wait_for: str = "/readyz") -> "ServerProcess":
        """Start and wait until ``wait_for`` (an ops path) answers 200."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("RADIUSD_")}
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen([str(BIN / "radiusd"), "--config", str(self.config_path), "serve"],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"radiusd exited with {self.process.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(self.ops_url + wait_for, timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"radiusd did not become ready: {self.log()}")

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def stop(self, timeout: float = 20) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
            raise AssertionError("radiusd did not stop on SIGTERM")
        finally:
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metric(self, name: str, **labels) -> float:
        """The current value of one sample from /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.ops_url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return 0.0


class RadiusClient:
    """A blocking UDP RADIUS client on 127.0.0.1 that checks replies with pyrad."""

    def __init__(self, port: int, secret: bytes = SECRET, timeout: float = 5.0, source: str | None = None):
        self.address = ("127.0.0.1", port)
        self.secret = secret
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        if source is not None:  # another loopback address (127.0.0.2, ...) is another NAS
            self.sock.bind((source, 0))
        self.sock.connect(self.address)

    def close(self) -> None:
        self.sock.close()

    def access_request(self, user: str | None = None, password: str | bytes | None = None,
                       message_authenticator: bool = True, **attributes) -> pyrad_packet.AuthPacket:
        request = pyrad_packet.AuthPacket(code=pyrad_packet.AccessRequest, secret=self.secret,
                                          dict=DICTIONARY, id=secrets.randbelow(256))
        if message_authenticator:
            request.add_message_authenticator()
        if user is not None:
            request["User-Name"] = user
        if password is not None:
            request["User-Password"] = request.PwCrypt(password)
        for name, value in attributes.items():
            request[name.replace("_", "-")] = value
        return request

    def status_server(self, message_authenticator: bool = True) -> pyrad_packet.AuthPacket:
        request = pyrad_packet.AuthPacket(code=pyrad_packet.StatusServer, secret=self.secret, dict=DICTIONARY,
                                          id=secrets.randbelow(256))
        if message_authenticator:
            request.add_message_authenticator()
        return request

    def send_raw(self, data: bytes) -> None:
        self.sock.send(data)

    def receive(self, request, wire: bytes) -> pyrad_packet.Packet:
        """Wait for the reply to ``request`` (sent as ``wire``) and verify it with pyrad. A reply
        with another Identifier answers an earlier request late: skipped, as a NAS does."""
        data = self.sock.recv(4096)
        while len(data) > 1 and data[1] != request.id:
            data = self.sock.recv(4096)
        reply = request.CreateReply(packet=data)
        assert request.VerifyReply(reply, data), "Response Authenticator does not verify"
        assert reply.verify_message_authenticator(original_authenticator=request.authenticator,
                                                  original_code=request.code), \
            "Message-Authenticator does not verify"
        assert data[20] == 80, "Message-Authenticator is not the first attribute"
        return reply

    def send(self, request) -> tuple[bytes, pyrad_packet.Packet]:
        """Send and return (wire bytes sent, verified reply)."""
        wire = request.RequestPacket()
        self.sock.send(wire)
        return wire, self.receive(request, wire)

    def expect_silence(self, wait: float = 0.5) -> None:
        self.sock.settimeout(wait)
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return
        finally:
            self.sock.settimeout(5.0)
        raise AssertionError(f"expected no reply, got {len(data)} bytes (code {data[0]})")


# -- accounting and Disconnect --------------------------------------------------------------------------

class AcctClient(RadiusClient):
    """The test RADIUS client, sending Accounting-Requests (pyrad builds them and verifies replies)."""

    def accounting_request(self, status: str, session: str | None = None, **attributes) -> pyrad_packet.AcctPacket:
        request = pyrad_packet.AcctPacket(code=pyrad_packet.AccountingRequest, secret=self.secret,
                                          dict=DICTIONARY, id=secrets.randbelow(256))
        request["Acct-Status-Type"] = status
        if session is not None:
            request["Acct-Session-Id"] = session
        for name, value in attributes.items():
            request[name.replace("_", "-")] = value
        return request

    def account(self, status: str, session: str | None = None, **attributes) -> bytes:
        """Send one Accounting-Request; the verified Accounting-Response's bytes."""
        return self.send(self.accounting_request(status, session, **attributes))[1].raw_packet

    def expect_no_answer(self, request, wait: float = 0.6) -> None:
        self.send_raw(request.RequestPacket())
        self.expect_silence(wait)


def session_row(database: Database, session_id: str):
    with database.engine.connect() as conn:
        return conn.execute(select(sessions).where(sessions.c.session_id == session_id)).first()


@contextmanager
def serving(config, directory):
    """``radiusd serve`` on ``config``, with ``.database`` opened on its database for the test."""
    process = ServerProcess(config, directory / "radiusd.log").start()
    process.database = Database(process.settings["database"]["url"], pool_size=2)
    try:
        yield process
    finally:
        process.stop()
        process.database.dispose()


@dataclass
class Received:
    packet: pyrad_packet.CoAPacket
    data: bytes
    source: tuple


class FakeNas:
    """A NAS's Disconnect listener (RFC 5176 §2.1) on ``host``; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", secret: bytes = SECRET):
        self.secret = secret
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received: list[Received] = []
        self.problems: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, source = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            request = pyrad_packet.CoAPacket(secret=self.secret, dict=DICTIONARY, packet=data)
            if request.code != pyrad_packet.DisconnectRequest or not request.VerifyCoARequest() or \
                    not request.message_authenticator or not request.verify_message_authenticator():
                self.problems.append(f"unverifiable packet code {request.code} from {source}")
                continue
            self.received.append(Received(request, data, source))
            mode = request["Acct-Session-Id"][0].split("-", 1)[0]
            if mode == "SIL":
                continue
            reply = request.CreateReply()
            if mode == "NAK":
                reply.code = pyrad_packet.DisconnectNAK
                reply["Error-Cause"] = "Session-Context-Not-Found"
            reply.add_message_authenticator()
            self.sock.sendto(reply.ReplyPacket(), source)

    def requests_for(self, session_id: str) -> list[Received]:
        return [item for item in self.received if item.packet["Acct-Session-Id"] == [session_id]]

    def wait_for(self, session_id: str, count: int = 1, timeout: float = 10) -> list[Received]:
        wait_for(lambda: len(self.requests_for(session_id)) >= count, timeout=timeout)
        return self.requests_for(session_id)


def session_id(mode: str) -> str:
    return f"{mode}-{secrets.token_hex(4)}"


def drop_database(url: str) -> None:
    """Drop a test's PostgreSQL database under the running server (the database "goes away")."""
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


# -- waiting -----------------------------------------------------------------------------------------

def wait_for(predicate, timeout: float = 10.0, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def add_users(config: Path, users: dict[str, list[str]], password: str) -> None:
    """``radiusd-admin user add NAME --password-stdin FLAGS...`` for each user, concurrently."""
    def add(item):
        name, flags = item
        admin(config, "user", "add", name, "--password-stdin", *flags, stdin=password + "\n")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add, users.items()))


# -- second factors over RADIUS (TOTP, SMS, PAM, several instances) -----------------------------------

def settle(margin: float = 3.0) -> None:
    """Wait out the end of a 30 s step when fewer than ``margin`` seconds are left, so a code
    computed now is still in the server's window when it is checked."""
    left = 30 - time.time() % 30
    if left < margin:
        time.sleep(left + 0.05)


def app_of(otpauth_uri: str) -> pyotp.TOTP:
    """The authenticator app's view of an enrolment."""
    [secret] = parse_qs(urlparse(otpauth_uri).query)["secret"]
    return pyotp.TOTP(secret)


def enrol(config, username: str) -> pyotp.TOTP:
    """``radiusd-admin otp enroll`` (JSON)."""
    return app_of(json.loads(admin(config, "otp", "enroll", username).stdout)["otpauth_uri"])


def verify_previous_step(verify, app: pyotp.TOTP) -> None:
    """Verify an enrolment with the previous step's code. On a loaded machine the check may
    land a step later than the code was computed for (outside ±1 step): a refused code consumes
    nothing, so try again with the code of the then previous step."""
    for _ in range(3):
        settle()
        if verify(app.at(time.time() - 30)):
            return
    raise AssertionError("the enrolment could not be verified")


def enrol_verified(config, username: str) -> pyotp.TOTP:
    """Enrol and ``radiusd-admin otp verify`` with the previous step's code."""
    app = enrol(config, username)

    def verify(code: str) -> bool:
        result = admin(config, "otp", "verify", username, code, check=False)
        document = json.loads(result.stdout)
        assert document["username"] == username and result.returncode == (0 if document["valid"] else 1)
        return document["valid"]

    verify_previous_step(verify, app)
    return app


class Provisioner:
    """Bulk set-up in this process, through the same services the CLI uses (one CLI process
    per user costs about a second on a small machine). Use before the server starts."""

    def __init__(self, config_path):
        from radiusd.config import load_config
        from radiusd.crypto import PasswordHasher, SeedKey
        from radiusd.db.engine import Database
        from radiusd.dictionary import RadiusDictionary
        from radiusd.services.otp import OtpService
        from radiusd.services.users import UserService

        config = load_config(str(config_path), environ={})
        self.database = Database(config.database.url, pool_size=2)
        self.users = UserService(self.database, PasswordHasher(config.security), RadiusDictionary(), actor="test")
        self.otp = OtpService(self.database, SeedKey.load(config.security.seed_key), config.mfa, time.time,
                              actor="test")

    def add(self, names, password: str = PASSWORD, **fields) -> None:
        for name in names:
            self.users.create(name, fields, password=password)

    def enrol(self, name: str) -> pyotp.TOTP:
        return app_of(self.otp.enroll(name)["otpauth_uri"])

    def enrol_verified(self, names) -> dict[str, pyotp.TOTP]:
        apps = {name: self.enrol(name) for name in names}
        for name, app in apps.items():
            verify_previous_step(lambda code, name=name: self.otp.verify(name, code), app)
        return apps

    def close(self) -> None:
        self.database.dispose()


def start_all(servers: list[ServerProcess]) -> None:
    """Start several servers at once (each start waits for its /readyz)."""
    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        list(pool.map(lambda server: server.start(), servers))


def decisions(server: ServerProcess, reason: str) -> float:
    return server.metric("radiusd_auth_decisions_total", reason=reason)


class Deltas:
    """Metric deltas around a block: ``with Deltas(server, ok=..., replays=...)``."""

    def __init__(self, server: ServerProcess, *reasons: str):
        self.server = server
        self.reasons = reasons
        self.before = self.read()

    def read(self) -> dict:
        values = {reason: decisions(self.server, reason) for reason in self.reasons}
        values["otp_replays"] = self.server.metric("radiusd_otp_replays_total")
        values["challenges_totp"] = self.server.metric("radiusd_challenges_total", factor="totp")
        values["challenges_sms"] = self.server.metric("radiusd_challenges_total", factor="sms")
        return values

    def changed(self) -> dict:
        after = self.read()
        return {key: after[key] - self.before[key] for key in after if after[key] != self.before[key]}


def login(client: RadiusClient, user: str, password: str = PASSWORD, **attributes):
    _, reply = client.send(client.access_request(user, password, **attributes))
    return reply


def answer(client: RadiusClient, user: str, state: bytes, code: str | bytes):
    request = client.access_request(user, code)
    request["State"] = state
    _, reply = client.send(request)
    return reply


def challenge_state(reply) -> bytes:
    assert reply.code == CHALLENGE, f"expected Access-Challenge, got code {reply.code}"
    [state] = reply["State"]
    return state


# -- the admin API over HTTP ---------------------------------------------------------------------------

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
