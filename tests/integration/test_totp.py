"""SoftOTP (TOTP) over real UDP against real ``radiusd serve`` processes (SPEC §3.1, issue 3):
challenge and append modes, replay protection, State handling, the ``[mfa] required`` policy.

Codes come from pyotp with the seed of ``radiusd-admin otp enroll``. Every enrolment is
verified with the code of the step *before* the current one, so the current step's code is
still fresh for the first login. One module-wide pair of servers shares one SQLite database:
``strict`` (mfa required, NASes in challenge and append mode) and ``lenient`` (mfa not
required, one-second challenges). Metrics are read as deltas.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyotp
import pytest

from tests.support import (ACCEPT, PASSWORD, REJECT, SECRET, Deltas, Provisioner, RadiusClient, ServerProcess, add_users,
                           admin, answer, challenge_state, enrol, enrol_verified, login, settle, start_all,
                           write_config)


# -- the servers ---------------------------------------------------------------------------------

USERS = ["wrongcode", "app", "appwrong", "replay", "appreplay", "older", "reuse", "victim", "thief",
         "nasmove", "retrans", "appretrans", "slow", "both"]
NAS = [
    {"name": "test", "address": "127.0.0.1/32", "secret": SECRET.decode(), "mfa_mode": "challenge"},
    {"name": "other", "address": "127.0.0.2/32", "secret": SECRET.decode(), "mfa_mode": "challenge"},
    {"name": "append", "address": "127.0.0.3/32", "secret": SECRET.decode(), "mfa_mode": "append"},
]


class Servers:
    strict: ServerProcess
    lenient: ServerProcess
    apps: dict[str, pyotp.TOTP]
    database: str


def failed_attempts(database: str, username: str) -> int:
    with sqlite3.connect(database) as conn:
        return conn.execute("SELECT failed_attempts FROM users WHERE username = ?", (username,)).fetchone()[0]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    strict_dir = tmp_path_factory.mktemp("totp-strict")
    lenient_dir = tmp_path_factory.mktemp("totp-lenient")
    url = f"sqlite:///{strict_dir / 'radiusd.db'}"
    lockout = {"max_failures": 100}  # wrong codes count as failures; these tests make many
    strict_config = write_config(strict_dir, url, nas=NAS, sections={
        "mfa": {"required": True, "totp_window": 1}, "lockout": lockout})
    shutil.copy(strict_dir / "seed.key", lenient_dir / "seed.key")  # one database, one seed key
    lenient_config = write_config(lenient_dir, url, sections={
        "mfa": {"required": False, "totp_window": 1, "challenge_ttl_seconds": 1}, "lockout": lockout})
    admin(strict_config, "db", "upgrade")
    add_users(strict_config, {"flow": [], "pending": []}, PASSWORD)  # these two through the CLI end to end
    result = Servers()
    result.database = str(strict_dir / "radiusd.db")
    provisioner = Provisioner(strict_config)
    try:
        provisioner.add(USERS)
        provisioner.add(["nofactor", "cliuser"])
        provisioner.add(["exempt"], mfa_exempt=True)
        result.apps = provisioner.enrol_verified(USERS)
    finally:
        provisioner.close()
    result.apps["flow"] = enrol_verified(strict_config, "flow")
    result.apps["pending"] = enrol(strict_config, "pending")  # never verified
    result.strict = ServerProcess(strict_config, strict_dir / "radiusd.log")
    result.lenient = ServerProcess(lenient_config, lenient_dir / "radiusd.log")
    try:
        start_all([result.strict, result.lenient])
        yield result
    finally:
        result.strict.stop()
        result.lenient.stop()


@pytest.fixture
def strict(servers):
    return servers.strict


@pytest.fixture
def apps(servers):
    return servers.apps


@pytest.fixture
def nas_clients(servers):
    """Clients as the three NASes of the strict server: 127.0.0.1, .2 (challenge), .3 (append)."""
    port = servers.strict.auth_port
    clients = {"test": RadiusClient(port), "other": RadiusClient(port, source="127.0.0.2"),
               "append": RadiusClient(port, source="127.0.0.3")}
    yield clients
    for client in clients.values():
        client.close()


@pytest.fixture
def client(nas_clients):
    return nas_clients["test"]


@pytest.fixture
def appender(nas_clients):
    return nas_clients["append"]


# -- challenge mode --------------------------------------------------------------------------------

def test_challenge_flow_end_to_end(strict, client, apps):
    deltas = Deltas(strict, "ok", "challenge")
    reply = login(client, "flow")
    state = challenge_state(reply)
    assert len(state) >= 16
    [prompt] = reply["Reply-Message"]
    assert "code" in prompt.lower()
    assert "Framed-IP-Address" not in reply
    settle(1)
    accepted = answer(client, "flow", state, apps["flow"].now())
    assert accepted.code == ACCEPT
    assert "State" not in accepted
    assert deltas.changed() == {"ok": 1, "challenge": 1, "challenges_totp": 1}


def test_each_challenge_gets_a_fresh_state(strict, client):
    states = {challenge_state(login(client, "both")) for _ in range(3)}
    assert len(states) == 3


def test_wrong_password_gets_no_challenge(strict, client):
    deltas = Deltas(strict, "bad_password")
    assert login(client, "flow", "not-the-password").code == REJECT
    assert deltas.changed() == {"bad_password": 1}


def test_a_wrong_code_is_rejected_counts_as_a_failure_and_its_state_is_spent(servers, strict, client, apps):
    state = challenge_state(login(client, "wrongcode"))
    assert failed_attempts(servers.database, "wrongcode") == 0  # a challenge is not a failure
    good = apps["wrongcode"].now()
    wrong = f"{(int(good) + 1) % 10**6:06d}"
    deltas = Deltas(strict, "bad_otp", "bad_state")
    assert answer(client, "wrongcode", state, wrong).code == REJECT
    assert failed_attempts(servers.database, "wrongcode") == 1
    assert answer(client, "wrongcode", state, good).code == REJECT  # the State was single use
    assert deltas.changed() == {"bad_otp": 1, "bad_state": 1}
    for bad in ("", "12345", "１２３４５６", good + "0", "abcdef"):  # malformed codes, each on a fresh State
        state = challenge_state(login(client, "wrongcode"))
        assert answer(client, "wrongcode", state, bad or b"").code == REJECT, bad
    settle(1)
    state = challenge_state(login(client, "wrongcode"))
    assert answer(client, "wrongcode", state, apps["wrongcode"].now()).code == ACCEPT  # nothing was consumed


# -- append mode -----------------------------------------------------------------------------------

def test_append_mode_accepts_password_followed_by_the_code(strict, appender, apps):
    deltas = Deltas(strict, "ok")
    settle(1)
    reply = login(appender, "app", PASSWORD + apps["app"].now())
    assert reply.code == ACCEPT
    assert deltas.changed() == {"ok": 1}  # no Access-Challenge in append mode


def test_append_mode_rejects_the_password_alone_or_with_a_wrong_code(strict, appender, apps):
    good = apps["appwrong"].now()
    wrong = f"{(int(good) + 1) % 10**6:06d}"
    deltas = Deltas(strict, "bad_otp", "bad_password")
    assert login(appender, "appwrong", PASSWORD).code == REJECT
    assert login(appender, "appwrong", PASSWORD + wrong).code == REJECT
    assert login(appender, "appwrong", PASSWORD + "１２３４５６").code == REJECT
    assert login(appender, "appwrong", "wrong-password" + good).code == REJECT
    assert login(appender, "appwrong", PASSWORD + " " + good).code == REJECT
    assert deltas.changed() == {"bad_otp": 2, "bad_password": 3}  # "１２３４５６" and " 123456" are no code


# -- replay protection -----------------------------------------------------------------------------

def test_a_replayed_code_is_rejected_as_otp_replay(strict, client, apps):
    settle(2)
    code = apps["replay"].now()
    assert answer(client, "replay", challenge_state(login(client, "replay")), code).code == ACCEPT
    deltas = Deltas(strict, "otp_replay")
    assert answer(client, "replay", challenge_state(login(client, "replay")), code).code == REJECT
    assert deltas.changed() == {"otp_replay": 1, "otp_replays": 1, "challenges_totp": 1}


def test_a_replayed_code_is_rejected_in_append_mode(strict, appender, apps):
    settle(2)
    password = PASSWORD + apps["appreplay"].now()
    assert login(appender, "appreplay", password).code == ACCEPT
    deltas = Deltas(strict, "otp_replay")
    assert login(appender, "appreplay", password).code == REJECT  # a new request, same code
    assert deltas.changed() == {"otp_replay": 1, "otp_replays": 1}


def test_an_older_steps_code_is_rejected_after_a_newer_one_was_used(strict, client, apps):
    settle(2)
    now = time.time()
    newer, current = apps["older"].at(now + 30), apps["older"].at(now)
    assert answer(client, "older", challenge_state(login(client, "older")), newer).code == ACCEPT
    deltas = Deltas(strict, "otp_replay")
    assert answer(client, "older", challenge_state(login(client, "older")), current).code == REJECT
    assert deltas.changed() == {"otp_replay": 1, "otp_replays": 1, "challenges_totp": 1}


def test_a_retransmitted_answer_gets_the_cached_accept_not_otp_replay(strict, client, apps):
    state = challenge_state(login(client, "retrans"))
    settle(1)
    request = client.access_request("retrans", apps["retrans"].now())
    request["State"] = state
    deltas = Deltas(strict, "ok", "otp_replay", "bad_state")
    duplicates = strict.metric("radiusd_duplicate_requests_total", client="test")
    wire = request.RequestPacket()
    replies = []
    for _ in range(3):
        client.send_raw(wire)
        replies.append(client.sock.recv(4096))
    assert replies[0] == replies[1] == replies[2]
    assert replies[0][0] == ACCEPT
    assert deltas.changed() == {"ok": 1}
    assert strict.metric("radiusd_duplicate_requests_total", client="test") == duplicates + 2


def test_a_retransmitted_append_mode_request_gets_the_cached_accept(strict, appender, apps):
    settle(1)
    request = appender.access_request("appretrans", PASSWORD + apps["appretrans"].now())
    deltas = Deltas(strict, "ok", "otp_replay")
    wire = request.RequestPacket()
    appender.send_raw(wire)
    first = appender.sock.recv(4096)
    appender.send_raw(wire)
    second = appender.sock.recv(4096)
    assert first == second and first[0] == ACCEPT
    assert deltas.changed() == {"ok": 1}


# -- State handling ----------------------------------------------------------------------------------

def test_a_forged_state_is_rejected(strict, client, apps):
    deltas = Deltas(strict, "bad_state")
    for forged in (secrets.token_bytes(20), secrets.token_bytes(16), b"x"):
        assert answer(client, "flow", forged, apps["flow"].now()).code == REJECT
    assert deltas.changed() == {"bad_state": 3}


def test_a_reused_state_is_rejected(strict, client, apps):
    settle(2)
    state = challenge_state(login(client, "reuse"))
    assert answer(client, "reuse", state, apps["reuse"].now()).code == ACCEPT
    deltas = Deltas(strict, "bad_state")
    assert answer(client, "reuse", state, apps["reuse"].at(time.time() + 30)).code == REJECT
    assert deltas.changed() == {"bad_state": 1}


def test_another_users_state_is_rejected(strict, client, apps):
    settle(1)
    victims_state = challenge_state(login(client, "victim"))
    deltas = Deltas(strict, "bad_state", "ok")
    assert answer(client, "thief", victims_state, apps["thief"].now()).code == REJECT
    assert answer(client, "victim", victims_state, apps["victim"].now()).code == REJECT  # burnt by the misuse
    assert deltas.changed() == {"bad_state": 2}


def test_a_state_sent_from_another_nas_is_rejected(strict, nas_clients, apps):
    settle(1)
    state = challenge_state(login(nas_clients["test"], "nasmove"))
    deltas = Deltas(strict, "bad_state")
    assert answer(nas_clients["other"], "nasmove", state, apps["nasmove"].now()).code == REJECT
    assert deltas.changed() == {"bad_state": 1}
    # the other NAS is otherwise fine: its own challenge completes
    state = challenge_state(login(nas_clients["other"], "nasmove"))
    assert answer(nas_clients["other"], "nasmove", state, apps["nasmove"].at(time.time() + 30)).code == ACCEPT


def test_an_expired_state_is_rejected(servers, radius_client):
    lenient = servers.lenient  # challenge_ttl_seconds = 1
    client = radius_client(lenient.auth_port)
    state = challenge_state(login(client, "slow"))
    time.sleep(1.5)
    deltas = Deltas(lenient, "challenge_expired", "ok")
    assert answer(client, "slow", state, servers.apps["slow"].now()).code == REJECT
    assert deltas.changed() == {"challenge_expired": 1}
    settle(1)
    state = challenge_state(login(client, "slow"))  # answered in time, the same code works
    assert answer(client, "slow", state, servers.apps["slow"].now()).code == ACCEPT


# -- policy ------------------------------------------------------------------------------------------

def test_an_unverified_enrolment_is_not_a_usable_factor(servers, client, appender):
    strict, lenient = servers.strict, servers.lenient
    code = servers.apps["pending"].now()
    deltas = Deltas(strict, "otp_required", "challenge", "bad_password")
    reply = login(client, "pending")
    assert reply.code == REJECT  # no Access-Challenge for an unverified enrolment
    assert login(appender, "pending", PASSWORD + code).code == REJECT
    assert deltas.changed() == {"otp_required": 1, "bad_password": 1}  # the code is not split off
    lenient_client = RadiusClient(lenient.auth_port)
    try:  # where a factor is not required, the user simply has none
        assert login(lenient_client, "pending").code == ACCEPT
    finally:
        lenient_client.close()


def test_required_mfa_rejects_a_user_without_a_factor_and_exempt_users_get_in(strict, client, appender):
    deltas = Deltas(strict, "otp_required", "ok")
    assert login(client, "nofactor").code == REJECT
    assert login(client, "exempt").code == ACCEPT
    assert login(appender, "exempt").code == ACCEPT
    assert deltas.changed() == {"otp_required": 1, "ok": 2}


def test_mfa_not_required_lets_a_user_without_a_factor_in_but_still_challenges_enrolled_users(servers,
                                                                                              radius_client):
    lenient = servers.lenient
    client = radius_client(lenient.auth_port)
    assert login(client, "nofactor").code == ACCEPT
    assert login(client, "nofactor", "wrong-password").code == REJECT
    challenge_state(login(client, "both"))  # a verified enrolment is still used


# -- administration and storage ----------------------------------------------------------------------

def test_otp_cli_shows_the_verified_flag_and_guards_enrolments(servers, tmp_path):
    config = servers.strict.config_path
    svg = tmp_path / "qr.svg"
    with ThreadPoolExecutor(max_workers=3) as pool:
        listing = pool.submit(admin, config, "otp", "list")
        refused = pool.submit(admin, config, "otp", "enroll", "flow", check=False)  # verified: reset first
        shown = pool.submit(admin, config, "otp", "enroll", "cliuser", "--qr", f"svg:{svg}", fmt="table")
    listed = {row["username"]: row for row in json.loads(listing.result().stdout)}
    assert listed["flow"]["verified"] is True and listed["flow"]["verified_at"]
    assert listed["pending"]["verified"] is False and listed["pending"]["verified_at"] is None
    assert refused.result().returncode == 1 and "reset" in refused.result().stderr
    assert "otpauth://totp/" in shown.result().stdout and "activation code" in shown.result().stdout
    assert "<svg" in svg.read_text()
    assert json.loads(admin(config, "otp", "reset", "cliuser").stdout) == {"reset": "cliuser"}


def test_totp_seeds_are_not_readable_in_the_database_file(servers):
    import base64

    path = Path(servers.database)
    raw = b"".join(file.read_bytes() for file in (path, Path(f"{path}-wal")) if file.exists())
    assert servers.apps
    for name, app in servers.apps.items():
        seed = base64.b32decode(app.secret)
        for needle in (seed, app.secret.encode(), app.secret.lower().encode(), seed.hex().encode(),
                       base64.b64encode(seed)):
            assert needle not in raw, name
