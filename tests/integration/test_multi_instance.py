"""Two ``radiusd serve`` processes on one PostgreSQL database (SPEC §3.1): replay protection
and challenge State hold across instances."""

from __future__ import annotations

import shutil
import time

from tests.support import (ACCEPT, REJECT, SECRET, Deltas, Provisioner, answer, challenge_state, login, settle,
                           start_all)

NAS = [{"name": "test", "address": "127.0.0.1/32", "secret": SECRET.decode(), "mfa_mode": "challenge"}]
SECTIONS = {"mfa": {"required": True, "totp_window": 1}, "lockout": {"max_failures": 100}}


def test_replay_protection_and_challenge_state_hold_across_two_instances(make_server, postgres_url, tmp_path,
                                                                       radius_client):
    # instances A and B: same database, same seed key, same NAS name and secret
    a = make_server(postgres_url, name="a", sections=SECTIONS, nas=NAS, start=False)
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "seed.key", tmp_path / "b" / "seed.key")
    b = make_server(postgres_url, name="b", sections=SECTIONS, nas=NAS, start=False)
    assert a.auth_port != b.auth_port
    provisioner = Provisioner(b.config_path)  # B's view of the seed key: the same key
    try:
        provisioner.add(["bob", "carol", "dave"])
        apps = provisioner.enrol_verified(["bob", "carol", "dave"])
    finally:
        provisioner.close()
    start_all([a, b])
    on_a, on_b = radius_client(a.auth_port), radius_client(b.auth_port)

    # a code used on A is rejected as a replay on B
    settle(2)
    code = apps["bob"].now()
    assert answer(on_a, "bob", challenge_state(login(on_a, "bob")), code).code == ACCEPT
    deltas_b = Deltas(b, "otp_replay")
    assert answer(on_b, "bob", challenge_state(login(on_b, "bob")), code).code == REJECT
    assert deltas_b.changed() == {"otp_replay": 1, "otp_replays": 1, "challenges_totp": 1}

    # a challenge started on A is finished on B, and is then spent on A too
    state = challenge_state(login(on_a, "carol"))
    settle(1)
    deltas_a, deltas_b = Deltas(a, "ok", "bad_state"), Deltas(b, "ok", "bad_state")
    assert answer(on_b, "carol", state, apps["carol"].now()).code == ACCEPT
    assert answer(on_a, "carol", state, apps["carol"].at(time.time() + 30)).code == REJECT
    assert deltas_b.changed() == {"ok": 1}
    assert deltas_a.changed() == {"bad_state": 1}

    # one code answered on both instances at the same moment, two challenges each: one Accept
    clients = [radius_client(a.auth_port), radius_client(b.auth_port), radius_client(a.auth_port),
               radius_client(b.auth_port)]
    replays = a.metric("radiusd_otp_replays_total") + b.metric("radiusd_otp_replays_total")
    states = [challenge_state(login(client, "dave")) for client in clients]
    settle(1)
    code = apps["dave"].now()
    requests = []
    for client, state in zip(clients, states):
        request = client.access_request("dave", code)
        request["State"] = state
        requests.append((client, request))
    for client, request in requests:  # all four in flight before any answer is read
        client.send_raw(request.RequestPacket())
    codes = [client.receive(request, b"").code for client, request in requests]
    assert sorted(codes) == [ACCEPT, REJECT, REJECT, REJECT]
    assert a.metric("radiusd_otp_replays_total") + b.metric("radiusd_otp_replays_total") == replays + 3
