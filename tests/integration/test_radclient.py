"""FreeRADIUS's ``radclient`` as an independent client of a real ``radiusd serve``.

radclient checks the Response Authenticator and Message-Authenticator of every reply itself;
a reply it cannot verify is reported as invalid, not as the expected code.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.support import BIN, SECRET, ServerProcess, admin, need_file, need_program, write_config

PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def radclient():
    return need_program("radclient")


@pytest.fixture(scope="module")
def server(tmp_path_factory, radclient):
    directory = tmp_path_factory.mktemp("radclient")
    config = write_config(directory, f"sqlite:///{directory / 'radiusd.db'}")
    admin(config, "db", "upgrade")
    admin(config, "user", "add", "alice", "--password-stdin", "--framed-ip", "10.44.0.7",
          stdin=PASSWORD + "\n")
    process = ServerProcess(config, directory / "radiusd.log").start()
    yield process
    process.stop()


def run(radclient: str, server: ServerProcess, kind: str, attributes: str, secret: bytes = SECRET,
        timeout: int = 3) -> subprocess.CompletedProcess:
    return subprocess.run(
        [radclient, "-x", "-r", "1", "-t", str(timeout), f"127.0.0.1:{server.auth_port}", kind, secret.decode()],
        input=attributes + "\n", capture_output=True, text=True, timeout=timeout + 15)


def credentials(password: str) -> str:
    return f'User-Name = "alice", User-Password = "{password}", Message-Authenticator = 0x00'


def test_radclient_access_request_gets_accept_with_framed_ip(radclient, server):
    result = run(radclient, server, "auth", credentials(PASSWORD))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Received Access-Accept Id \d+ from 127\.0\.0\.1", result.stdout), result.stdout
    assert re.search(r"Framed-IP-Address = 10\.44\.0\.7\b", result.stdout), result.stdout
    assert "Message-Authenticator = 0x" in result.stdout.split("Received", 1)[1]


def test_radclient_wrong_password_gets_reject(radclient, server):
    result = run(radclient, server, "auth", credentials("not-the-password"))
    assert re.search(r"Received Access-Reject Id \d+", result.stdout), result.stdout + result.stderr
    assert "Framed-IP-Address" not in result.stdout.split("Received", 1)[1]
    assert result.returncode != 0  # radclient expected an Accept


def test_radclient_status_server_gets_accept(radclient, server):
    result = run(radclient, server, "status", "Message-Authenticator = 0x00")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Received Access-Accept Id \d+", result.stdout), result.stdout


def test_radclient_with_the_wrong_secret_gets_no_reply_and_a_log_line(radclient, server):
    before = server.metric("radiusd_dropped_packets_total", reason="bad_authenticator", client="test")
    result = run(radclient, server, "auth", credentials(PASSWORD), secret=b"not-the-shared-secret", timeout=1)
    assert "Received" not in result.stdout, result.stdout
    assert result.returncode != 0
    assert server.metric("radiusd_dropped_packets_total", reason="bad_authenticator", client="test") == before + 1
    lines = [json.loads(line) for line in server.log().splitlines() if "invalid Message-Authenticator" in line]
    assert lines, server.log()
    assert lines[-1]["level"] == "warn"
    assert lines[-1]["message"] == ("Received packet from 127.0.0.1 with invalid Message-Authenticator! (Shared "
                                    "secret is incorrect.) client test, Access-Request (bad_authenticator)")
    assert "not-the-shared-secret" not in server.log()


def test_vendor_attribute_from_the_freeradius_dictionary_tree_is_sent_in_the_reply(radclient, make_server):
    dictionary = need_file("/usr/share/freeradius/dictionary", "freeradius-common")
    server = make_server(sections={"server": {"dictionaries": [dictionary]}})
    admin(server.config_path, "user", "add", "carol", "--password-stdin",
          "--reply-attribute", "Aruba-User-Role=employee", "--reply-attribute", "Cisco-AVPair=shell:priv-lvl=15",
          stdin=PASSWORD + "\n")
    result = run(radclient, server, "auth", credentials(PASSWORD).replace('"alice"', '"carol"'))
    assert result.returncode == 0, result.stdout + result.stderr
    reply = result.stdout.split("Received", 1)[1]
    assert 'Aruba-User-Role = "employee"' in reply, reply  # radclient decodes with its own copy of the tree
    assert 'Cisco-AVPair = "shell:priv-lvl=15"' in reply, reply
    checked = subprocess.run([str(BIN / "radiusd"), "--config", str(server.config_path), "check-config"],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr
