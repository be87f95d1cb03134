"""A database that hangs, crawls, goes away or is locked, against a real ``radiusd serve``.

PostgreSQL sits behind ``tests.faultproxy.FaultProxy``. What must hold: no Accept while the
database cannot decide (fail closed), ``/readyz`` and Status-Server follow within a few seconds,
readiness returns without a restart, and start-up against a hung database ends within a
bounded time with one line.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
from pyrad import packet as pyrad_packet

from tests.faultproxy import FaultProxy, through, upstream_of
from tests.support import BIN, RadiusClient, ServerProcess, add_users, wait_for

PASSWORD = "correct-horse-battery"
ACCEPT = pyrad_packet.AccessAccept
HEALTH_TIMEOUT = 1
FAST = {"ops": {"health_timeout_seconds": HEALTH_TIMEOUT}, "server": {"request_budget_seconds": 2}}
FOLLOWS_WITHIN = 6  # seconds: a probe's timeout, the 2 s check interval, and room for a busy machine


def readyz(server: ServerProcess) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(server.ops_url + "/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def status_answered(client: RadiusClient) -> bool:
    try:
        return client.send(client.status_server())[1].code == ACCEPT
    except TimeoutError:
        return False


def accepted(client: RadiusClient) -> bool:
    try:
        return client.send(client.access_request("alice", PASSWORD))[1].code == ACCEPT
    except TimeoutError:
        return False


def seconds_until(predicate, timeout: float) -> float:
    started = time.monotonic()
    assert wait_for(predicate, timeout=timeout, interval=0.1), f"not within {timeout} s"
    return time.monotonic() - started


class Load:
    """A few NAS threads logging alice in back to back (each waits up to 1 s for its reply),
    recording when each request left and every reply that came back. Stops within 90 s."""

    def __init__(self, port: int, threads: int = 3):
        self.port = port
        self.sent: dict[tuple[int, int], float] = {}  # (thread, identifier) → when it left
        self.replies: list[tuple[float, tuple[int, int], int]] = []  # (when, (thread, identifier), code)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(index,), daemon=True) for index in range(threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def accepts_between(self, start: float, end: float, *, sent_after: float) -> int:
        return sum(1 for when, key, code in self.replies
                   if code == ACCEPT and start <= when < end and self.sent[key] >= sent_after)

    def sent_between(self, start: float, end: float) -> int:
        return sum(1 for when in self.sent.values() if start <= when < end)

    def _run(self, index: int) -> None:
        client = RadiusClient(self.port, timeout=1)
        deadline = time.monotonic() + 90
        try:
            for number in range(256):  # identifiers are not reused: each reply maps to its request
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                request = client.access_request("alice", PASSWORD)
                request.id = number
                self.sent[(index, number)] = time.monotonic()
                client.send_raw(request.RequestPacket())
                self._collect(client, index, until=time.monotonic() + 1, identifier=number)
        finally:
            client.close()

    def _collect(self, client: RadiusClient, index: int, until: float, identifier: int) -> None:
        while (left := until - time.monotonic()) > 0:
            client.sock.settimeout(left)
            try:
                data = client.sock.recv(4096)
            except TimeoutError:
                return
            self.replies.append((time.monotonic(), (index, data[1]), data[0]))
            if data[1] == identifier:
                return


@pytest.fixture
def proxy(postgres_url):
    with FaultProxy(upstream_of(postgres_url), lifetime=300) as proxy:
        yield proxy


@pytest.fixture
def proxied_server(postgres_url, proxy, make_server):
    server = make_server(through(proxy, postgres_url), sections=FAST)
    add_users(server.config_path, {"alice": []}, PASSWORD)
    return server


def black_hole(proxy: FaultProxy) -> None:
    proxy.black_hole()


def refuse_and_cut(proxy: FaultProxy) -> None:
    proxy.refuse()
    proxy.cut()


@pytest.mark.parametrize("outage", [black_hole, refuse_and_cut])
def test_an_outage_mid_load_fails_closed_turns_readiness_off_and_recovers_without_restart(
        proxy, proxied_server, radius_client, outage):
    server = proxied_server
    client = radius_client(server.auth_port)
    assert accepted(client) and status_answered(client)

    with Load(server.auth_port) as load:
        time.sleep(1.5)
        started = time.monotonic()
        assert load.accepts_between(0, started, sent_after=0) > 0  # the load is served
        outage(proxy)
        assert seconds_until(lambda: readyz(server)[0] == 503, FOLLOWS_WITHIN)
        status, body = readyz(server)
        assert body["status"] == "unavailable"
        assert body["failing"]["database"].startswith("unreachable ("), body
        assert not status_answered(client)
        time.sleep(1.5)  # the load goes on against the broken path
        healed = time.monotonic()
        proxy.pass_()
        assert seconds_until(lambda: readyz(server) == (200, {"status": "ok"}), FOLLOWS_WITHIN)
        assert wait_for(lambda: status_answered(client), timeout=5)
        assert wait_for(lambda: accepted(client), timeout=10)

    assert load.sent_between(started, healed) >= 6
    assert load.accepts_between(started, healed, sent_after=started) == 0  # fail closed
    assert server.process.poll() is None  # recovered without a restart
    assert server.stop() == 0


def test_a_database_slower_than_the_health_timeout_is_not_ready_until_it_speeds_up(
        proxy, proxied_server, radius_client):
    server = proxied_server
    client = radius_client(server.auth_port)
    proxy.delay(0.01)  # slow but in time: still ready, still serving
    assert accepted(client)
    time.sleep(2.5)  # a probe or two through the delay
    assert readyz(server)[0] == 200

    proxy.delay(3 * HEALTH_TIMEOUT)
    seconds_until(lambda: readyz(server)[0] == 503, FOLLOWS_WITHIN)
    assert readyz(server)[1]["failing"]["database"] == f"unreachable (no answer within {HEALTH_TIMEOUT} s)"
    assert not status_answered(client)
    assert not accepted(client)

    proxy.pass_()
    seconds_until(lambda: readyz(server)[0] == 200, FOLLOWS_WITHIN + 3 * HEALTH_TIMEOUT)
    assert status_answered(client)
    assert wait_for(lambda: accepted(client), timeout=10)


def test_a_write_locked_sqlite_database_is_not_ready_until_the_lock_goes(make_server, radius_client):
    server = make_server(sections=FAST)
    client = radius_client(server.auth_port)
    assert status_answered(client)
    path = server.settings["database"]["url"].removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        seconds_until(lambda: readyz(server)[0] == 503, FOLLOWS_WITHIN)
        assert readyz(server)[1]["failing"] == {"database": "unreachable (OperationalError: database is locked)"}
        assert not status_answered(client)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    seconds_until(lambda: readyz(server)[0] == 200, FOLLOWS_WITHIN)
    assert status_answered(client)


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_a_black_holed_database_at_start_up_ends_the_process_in_bounded_time_with_one_line(
        proxy, postgres_url, make_server, command):
    server = make_server(through(proxy, postgres_url), start=False)
    proxy.black_hole()
    env = {key: value for key, value in os.environ.items() if not key.startswith("RADIUSD_")}
    started = time.monotonic()
    result = subprocess.run([str(BIN / "radiusd"), "--config", str(server.config_path), command],
                            capture_output=True, text=True, timeout=60, env=env)
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("radiusd: database unreachable: "), result.stderr


def failed_attempts(postgres_url: str, username: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT failed_attempts FROM users WHERE username = :name"),
                                {"name": username}).scalar_one()
    finally:
        engine.dispose()


def test_retransmissions_during_a_slow_database_count_once_and_get_the_cached_reply(
        proxy, postgres_url, make_server):
    """SPEC §3.2: retransmissions never count. A wrong password sent three times 3 s apart (a NAS
    retrying) while every database round trip takes 0.6 s: one failure counted at most, one audit
    row at most, and every reply the NAS gets is the same Reject — never a second piece of work."""
    server = make_server(through(proxy, postgres_url), sections={
        "server": {"request_budget_seconds": 4, "reject_delay_seconds": 0}})
    add_users(server.config_path, {"alice": []}, PASSWORD)
    client = RadiusClient(server.auth_port, timeout=3)
    try:
        request = client.access_request("alice", "a-wrong-password")
        wire = request.RequestPacket()
        proxy.delay(0.6)
        replies = []
        for _ in range(3):
            client.send_raw(wire)
            try:
                replies.append(client.receive(request, wire))
            except TimeoutError:
                pass
        proxy.pass_()
        client.sock.settimeout(8)
        if not replies:  # the first copy may finish after the last retry left
            try:
                replies.append(client.receive(request, wire))
            except TimeoutError:
                pass
    finally:
        client.close()
    assert {reply.code for reply in replies} <= {pyrad_packet.AccessReject}
    assert failed_attempts(postgres_url, "alice") <= 1
    decided = server.metric("radiusd_auth_decisions_total", reason="bad_password")
    assert decided <= 1
    assert decided == (1 if replies else 0)  # a failure is counted only for a request that was answered
    if replies:
        assert server.metric("radiusd_duplicate_requests_total", client="test") >= len(replies) - 1
