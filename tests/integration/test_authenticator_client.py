"""The reference authenticator client ``radiusd-authenticator`` drives the whole flow against a
real ``radiusd serve`` with the admin API (SPEC §6, issue 8): activate from the enrolment that
``radiusd-admin otp enroll`` printed, print codes, sync the remote configuration an operator
set with ``radiusd-admin otp remote-config``, and approve and deny the pushes of RADIUS logins.
"""

from __future__ import annotations

import json
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlparse

import pyotp
from pyrad import packet as pyrad_packet

from tests.support import BIN, SECRET, RadiusClient, admin

PASSWORD = "correct-horse-battery"


def authenticator(state, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "radiusd-authenticator"), "--state", str(state), *args],
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_the_reference_client_activates_shows_codes_syncs_and_answers_pushes(make_server, tmp_path):
    server = make_server(sections={"mfa": {"required": True, "push_timeout_seconds": 10}},
                         nas=[{"name": "vpn", "address": "127.0.0.1/32", "secret": SECRET.decode(),
                               "mfa_mode": "append"}])
    config, url = server.config_path, f"http://127.0.0.1:{server.settings['api']['port']}"
    admin(config, "user", "add", "zoe", "--password-stdin", stdin=PASSWORD + "\n")
    enrolment_file = tmp_path / "enrolment.json"
    enrolment_file.write_text(admin(config, "otp", "enroll", "zoe").stdout)
    enrolment = json.loads(enrolment_file.read_text())
    [seed] = parse_qs(urlparse(enrolment["otpauth_uri"]).query)["secret"]
    state = tmp_path / "app" / "state.json"

    assert "no state" in authenticator(state, "code", check=False).stderr
    activated = authenticator(state, "activate", "--server", url, "--enrolment", str(enrolment_file))
    assert json.loads(activated.stdout)["username"] == "zoe"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    token = json.loads(state.read_text())["device_token"]
    for output in (activated.stdout + activated.stderr, server.log()):
        assert token not in output and seed not in output
    assert authenticator(state, "activate", "--server", url, "--enrolment", str(enrolment_file),
                         check=False).returncode == 1  # the state exists: --force to replace it
    [listed] = json.loads(admin(config, "otp", "list").stdout)
    assert listed["verified"] is True

    now = time.time()
    code = authenticator(state, "code").stdout.strip()
    assert code in {pyotp.TOTP(seed).at(now + offset) for offset in (0, 2)}

    admin(config, "otp", "remote-config", "zoe", "--pin", "--biometric")
    synced = json.loads(authenticator(state, "sync").stdout)
    assert synced["version"] == 2 and synced["pin"]["required"] and synced["biometric"]["required"]
    [listed] = json.loads(admin(config, "otp", "list").stdout)
    assert (listed["config_version"], listed["applied_version"]) == (2, 2)

    client = RadiusClient(server.auth_port, timeout=15)
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        for decision, expected in (("approve", pyrad_packet.AccessAccept), ("deny", pyrad_packet.AccessReject)):
            login = pool.submit(client.send, client.access_request("zoe", PASSWORD))
            [push] = json.loads(authenticator(state, "pushes", "--wait", "10").stdout)
            assert push["username"] == "zoe" and push["nas"] == "vpn"
            decided = json.loads(authenticator(state, decision, push["push_id"]).stdout)
            assert decided["status"] == {"approve": "approved", "deny": "denied"}[decision]
            assert login.result(timeout=15)[1].code == expected
        again = authenticator(state, "approve", push["push_id"], check=False)
        assert again.returncode == 1 and "409" in again.stderr
    finally:
        pool.shutdown()
        client.close()
    assert json.loads(authenticator(state, "pending").stdout) == []
