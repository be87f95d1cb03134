"""``radiusd-admin api-client`` and ``otp remote-config``: the CLI side of the same services."""

from __future__ import annotations

import json
import re

import pytest

from tests.support import admin, write_config


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    path = write_config(directory, f"sqlite:///{directory / 'radiusd.db'}")
    admin(path, "db", "upgrade")
    return path


def test_ensure_admin_prints_the_first_admin_once_then_nothing(config):
    first = admin(config, "api-client", "ensure-admin", fmt="table")
    client_id = re.search(r"client_id:\s+(rc_\w+)", first.stdout).group(1)
    secret = re.search(r"client_secret:\s+(\S+)", first.stdout).group(1)
    assert len(secret) >= 40
    again = admin(config, "api-client", "ensure-admin", fmt="table")
    assert again.stdout == "" and again.returncode == 0
    listed = admin(config, "api-client", "list").stdout
    assert [entry["client_id"] for entry in json.loads(listed)] == [client_id]
    assert secret not in listed


def test_create_and_revoke(config):
    created = json.loads(admin(config, "api-client", "create", "--type", "agent", "--name", "rdp").stdout)
    assert created["type"] == "agent" and created["client_secret"]
    duplicate = admin(config, "api-client", "create", "--type", "user", "--name", "rdp", check=False)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    assert admin(config, "api-client", "create", "--type", "root", "--name", "x", check=False).returncode == 2
    assert json.loads(admin(config, "api-client", "revoke", created["client_id"]).stdout) == \
        {"revoked": created["client_id"]}
    missing = admin(config, "api-client", "revoke", created["client_id"], check=False)
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_otp_remote_config(config):
    admin(config, "user", "add", "rita", "--password-stdin", stdin="Correct-Horse-7731\n")
    admin(config, "otp", "enroll", "rita", "--qr", f"svg:{config.parent / 'qr.svg'}")
    shown = json.loads(admin(config, "otp", "remote-config", "rita", "--pin", "--no-biometric").stdout)
    assert shown[0]["pin_required"] is True and shown[0]["config_version"] == 2
    listed = json.loads(admin(config, "otp", "list").stdout)
    assert listed[0]["pin_required"] is True and listed[0]["applied_version"] is None
    assert admin(config, "otp", "remote-config", "rita", check=False).returncode == 1  # nothing to set
    assert admin(config, "otp", "remote-config", "rita", "ghost", "--pin", check=False).returncode == 1
