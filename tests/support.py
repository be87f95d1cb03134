"""Test helpers: configuration files, a real ``radiusd serve`` process, and a RADIUS client.

The client builds and checks packets with pyrad (an implementation independent of ours):
requests carry Message-Authenticator first, replies have their Response Authenticator and
Message-Authenticator verified by pyrad before a test sees them.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from pyrad import packet as pyrad_packet
from pyrad.dictionary import Dictionary

ROOT = Path(__file__).resolve().parents[1]
DICTIONARY = Dictionary(str(ROOT / "dictionaries" / "dictionary"))
BIN = Path(sys.executable).parent
STRICT = os.environ.get("RADIUSD_TEST_STRICT") == "1"
SECRET = b"test-secret-0123456789"


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
    from concurrent.futures import ThreadPoolExecutor

    def add(item):
        name, flags = item
        admin(config, "user", "add", name, "--password-stdin", *flags, stdin=password + "\n")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(add, users.items()))
