"""An independent real client (issue 3): Linux-PAM's ``pam_radius_auth`` driven by
``pamtester``, logging in through the Access-Challenge prompt with a TOTP code.

pam_radius_auth 2.0 sends the password, shows the challenge's Reply-Message as a prompt,
and answers with the State; pamtester's conversation reads the answers from stdin. The PAM
service file goes to /etc/pam.d under a unique name and is removed afterwards. pam_radius_auth
2.0 does not send Message-Authenticator, so its NAS entry does not require it.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import (PASSWORD, SECRET, Deltas, Provisioner, ServerProcess, admin, missing, need_program,
                           settle, write_config)

MODULE_DIRS = ("/lib/x86_64-linux-gnu/security", "/usr/lib/x86_64-linux-gnu/security",
               "/lib/aarch64-linux-gnu/security", "/usr/lib/aarch64-linux-gnu/security",
               "/lib/security", "/usr/lib/security", "/lib64/security")
PAM_DIR = Path("/etc/pam.d")


def pam_radius_module() -> str:
    for directory in MODULE_DIRS:
        path = Path(directory) / "pam_radius_auth.so"
        if path.exists():
            return str(path)
    missing("pam_radius_auth.so is not installed (apt-get install libpam-radius-auth)")


@pytest.fixture(scope="module")
def pam(tmp_path_factory):
    """A running server and a PAM service that authenticates against it."""
    pamtester = need_program("pamtester")
    module = pam_radius_module()
    if not os.access(PAM_DIR, os.W_OK):
        missing(f"{PAM_DIR} is not writable (the PAM test needs root)")
    directory = tmp_path_factory.mktemp("pam")
    nas = [{"name": "pam", "address": "127.0.0.1/32", "secret": SECRET.decode(), "mfa_mode": "challenge",
            "require_message_authenticator": False}]
    config = write_config(directory, f"sqlite:///{directory / 'radiusd.db'}", nas=nas,
                          sections={"mfa": {"required": True, "totp_window": 1}, "lockout": {"max_failures": 100}})
    admin(config, "db", "upgrade")
    provisioner = Provisioner(config)
    try:
        provisioner.add(["pamuser", "pamwrong"])
        provisioner.add(["pamexempt"], mfa_exempt=True)
        apps = provisioner.enrol_verified(["pamuser", "pamwrong"])
    finally:
        provisioner.close()
    server = ServerProcess(config, directory / "radiusd.log").start()

    conf = directory / "pam_radius.conf"
    conf.write_text(f"127.0.0.1:{server.auth_port} {SECRET.decode()} 10\n")  # timeout 10 s: loaded CI machines
    conf.chmod(0o600)
    service = f"radiusd-test-{secrets.token_hex(4)}"
    service_file = PAM_DIR / service
    service_file.write_text(f"auth required {module} conf={conf}\naccount required pam_permit.so\n")
    try:
        yield {"pamtester": pamtester, "service": service, "server": server, "apps": apps}
    finally:
        service_file.unlink(missing_ok=True)
        server.stop()


def pamtester(pam, user: str, *answers: str) -> subprocess.CompletedProcess:
    return subprocess.run([pam["pamtester"], "-v", pam["service"], user, "authenticate"],
                          input="".join(answer + "\n" for answer in answers),
                          capture_output=True, text=True, timeout=30)


def succeeded(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == 0 and "successfully authenticated" in result.stdout + result.stderr


def test_pam_login_through_the_challenge_prompt_with_a_totp_code(pam):
    server = pam["server"]
    deltas = Deltas(server, "ok", "challenge")
    settle(4)
    result = pamtester(pam, "pamuser", PASSWORD, pam["apps"]["pamuser"].now())
    output = result.stdout + result.stderr
    assert succeeded(result), output
    assert "authenticator app" in output  # the Reply-Message was shown as the prompt
    assert deltas.changed() == {"ok": 1, "challenge": 1, "challenges_totp": 1}


def test_pam_login_with_a_wrong_code_fails(pam):
    server = pam["server"]
    good = pam["apps"]["pamwrong"].now()
    deltas = Deltas(server, "challenge", "bad_otp")
    result = pamtester(pam, "pamwrong", PASSWORD, f"{(int(good) + 1) % 10**6:06d}")
    assert not succeeded(result)
    assert result.returncode != 0
    assert deltas.changed() == {"challenge": 1, "challenges_totp": 1, "bad_otp": 1}


def test_pam_login_of_an_exempt_user_needs_only_the_password(pam):
    deltas = Deltas(pam["server"], "ok", "bad_password")
    assert succeeded(pamtester(pam, "pamexempt", PASSWORD))
    result = pamtester(pam, "pamexempt", "not-the-password")
    assert not succeeded(result) and result.returncode != 0
    assert deltas.changed() == {"ok": 1, "bad_password": 1}


def test_pam_replayed_code_fails(pam):
    server = pam["server"]
    settle(4)
    code = pam["apps"]["pamuser"].at(time.time() + 30)
    assert succeeded(pamtester(pam, "pamuser", PASSWORD, code))
    deltas = Deltas(server, "otp_replay")
    assert not succeeded(pamtester(pam, "pamuser", PASSWORD, code))
    assert deltas.changed() == {"otp_replay": 1, "otp_replays": 1, "challenges_totp": 1}
