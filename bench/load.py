#!/usr/bin/env python3
"""Bounded RADIUS load generator for radiusd's own benchmark (standard library only).

It pre-builds a ring of distinct requests per UDP socket, keeps at most ``--window``
requests in flight over ``--sockets`` connected sockets to a loopback address, and checks
every reply before counting it:

* the Response Authenticator (RFC 2865 §3: MD5 over the reply with the Request
  Authenticator in the header, then the shared secret),
* the reply's Message-Authenticator when it carries one (RFC 3579 §3.2: HMAC-MD5 over the
  reply with the Request Authenticator in the header and the attribute's value zeroed);
  ``--require-reply-ma`` also counts a reply without one as an error,
* the code: Access-Accept, Access-Reject for ``--expect reject``, either for ``--expect any``
  (a users file mixing right and wrong passwords; accepts and rejects are counted apart).

Requests are either Status-Server (RFC 5997; ``--kind status``) or password-only
Access-Requests (``--kind pap``), both with the Message-Authenticator as the first attribute
(RFC 3579, BlastRADIUS guidance); User-Password is hidden per RFC 2865 §5.2. Every request
carries a fresh random Request Authenticator, so a server's RFC 5080 duplicate cache cannot
answer it from a previous run unless the ring wraps (reported as ``ring_wraps``).

Two ways to send:

* closed loop (the default): at most ``--window`` requests in flight; a reply frees a slot for
  the next request, so the rate follows the server.
* open loop (``--rate R``): request n is sent at start + n/R whatever the replies, like a
  population of NASes. Each request waits ``--timeout`` seconds for its reply (a NAS's retry
  interval; no retransmission is sent) and then counts as a timeout; a reply that comes later
  is counted as ``late``, not as answered. Enough sockets are opened that no (socket,
  Identifier) pair is reused within the timeout. The report adds the goodput (answered
  requests per second of the schedule) and the generator's lag behind its schedule.

The run stops sending after ``--duration`` seconds or ``--count`` requests, whichever comes
first, then waits at most ``--timeout`` for the replies still due. It prints req/s, latency
percentiles (of answered requests), timeouts and errors, then one JSON line. With ``--server-pid`` it also samples
that process's CPU time (all threads, plus its child processes) from /proc right before the
first request and right after the last reply, and reports server CPU µs per reply.

Examples:
  load.py --port 18120 --secret benchsecret --kind status --duration 5
  load.py --port 18120 --kind pap --users user0000:pw-0-bench-pass,user0001:pw-1-bench-pass \
          --window 16 --sockets 4 --timeout 15 --duration 5
  load.py --port 18120 --kind pap --users-file users.txt --expect reject --count 500
  load.py --port 18120 --kind pap --users-file mixed.txt --expect any --rate 150 --timeout 5 --duration 30

Exit code: 0 when something was answered and nothing failed a check, 1 otherwise, 2 on a
usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import json
import math
import os
import select
import socket
import struct
import sys
import time
from array import array

ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCESS_CHALLENGE = 11
STATUS_SERVER = 12
CODE_NAMES = {ACCESS_ACCEPT: "accept", ACCESS_REJECT: "reject", ACCESS_CHALLENGE: "challenge"}

USER_NAME = 1
USER_PASSWORD = 2
NAS_IP_ADDRESS = 4
NAS_PORT = 5
MESSAGE_AUTHENTICATOR = 80
MA_HEADER = bytes((MESSAGE_AUTHENTICATOR, 18))
ZERO16 = bytes(16)

MAX_DURATION = 600.0          # one run never sends for longer than this
MAX_TIMEOUT = 60.0            # nor waits longer than this for late replies
MAX_PREBUILT = 2_000_000      # packets held in memory
MAX_SOCKETS = 512             # open loop: sockets needed = rate x (timeout + 1) / 256
LATE_SEARCH = 64              # earlier requests with the same Identifier a late reply is matched to
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- packets ----------------------------------------------------------------------------------

def attribute(number: int, value: bytes) -> bytes:
    if not 0 < len(value) <= 253:
        raise ValueError(f"attribute {number}: value of {len(value)} octets")
    return bytes((number, len(value) + 2)) + value


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """RFC 2865 §5.2: pad to a multiple of 16 with NULs, then XOR block by block with
    MD5(secret + previous ciphertext block), the first block chained on the authenticator."""
    if len(password) > 128:
        raise ValueError("User-Password longer than 128 octets")
    padding = 16 if not password else -len(password) % 16
    padded = password + bytes(padding)
    out = bytearray()
    chain = authenticator
    for start in range(0, len(padded), 16):
        key = int.from_bytes(hashlib.md5(secret + chain).digest(), "big")
        block = (int.from_bytes(padded[start:start + 16], "big") ^ key).to_bytes(16, "big")
        out += block
        chain = block
    return bytes(out)


def sign_request(code: int, identifier: int, authenticator: bytes, tail: bytes, secret: bytes) -> bytes:
    """A request with the Message-Authenticator first (RFC 3579 §3.2: HMAC-MD5 over the whole
    packet with the Message-Authenticator value set to 16 zero octets)."""
    header = struct.pack("!BBH", code, identifier, 20 + 18 + len(tail))
    mac = hmac.digest(secret, header + authenticator + MA_HEADER + ZERO16 + tail, "md5")
    return header + authenticator + MA_HEADER + mac + tail


def status_server(identifier: int, authenticator: bytes, secret: bytes, nas_ip: bytes) -> bytes:
    return sign_request(STATUS_SERVER, identifier, authenticator, attribute(NAS_IP_ADDRESS, nas_ip), secret)


def access_request(identifier: int, authenticator: bytes, secret: bytes, nas_ip: bytes, user: bytes,
                   password: bytes, nas_port: int) -> bytes:
    tail = (attribute(USER_NAME, user)
            + attribute(USER_PASSWORD, hide_password(password, secret, authenticator))
            + attribute(NAS_IP_ADDRESS, nas_ip)
            + attribute(NAS_PORT, struct.pack("!I", nas_port & 0xFFFFFFFF)))
    return sign_request(ACCESS_REQUEST, identifier, authenticator, tail, secret)


def message_authenticator_offset(reply: bytes, length: int) -> int | None:
    """Offset of the Message-Authenticator value in the reply; None if absent; -1 if the
    attributes are malformed or the attribute has the wrong length."""
    offset = 20
    while offset < length:
        if offset + 2 > length:
            return -1
        number, size = reply[offset], reply[offset + 1]
        if size < 2 or offset + size > length:
            return -1
        if number == MESSAGE_AUTHENTICATOR:
            return offset + 2 if size == 18 else -1
        offset += size
    return None


# -- server CPU from /proc -------------------------------------------------------------------

def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _children(pid: int) -> list[int]:
    """Every live descendant of pid (``workers > 1`` starts child processes)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), ()):
            found.append(child)
            todo.append(child)
    return found


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of pid (the kernel sums every thread of the process) and of its
    descendants; None if pid is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    ticks = int(fields[11]) + int(fields[12])
    for child in _children(pid):
        child_fields = _stat_fields(child)
        if child_fields:
            ticks += int(child_fields[11]) + int(child_fields[12])
    return ticks / CLK_TCK


# -- the run ---------------------------------------------------------------------------------

class Ring:
    """Pre-built requests for one socket; the identifier of packet k is k % 256."""

    def __init__(self, size: int):
        self.packets: list[bytes] = []
        self.authenticators: list[bytes] = []
        self.size = size


def build_rings(args, users: list[tuple[bytes, bytes]], secret: bytes) -> list[Ring]:
    nsock = args.sockets
    if args.count:
        need = args.count + args.window
    else:
        need = args.prebuild
    # Each ring holds a multiple of 256 packets (at least 512) so identifiers stay in step
    # when it wraps and no (socket, identifier) pair repeats an authenticator back to back.
    per_socket = max(512, -(-need // nsock) + args.window)
    per_socket = -(-per_socket // 256) * 256
    if per_socket * nsock > MAX_PREBUILT:
        per_socket = max(512, (MAX_PREBUILT // nsock) // 256 * 256)
    nas_ip = ipaddress.IPv4Address(args.nas_ip).packed
    randomness = os.urandom(16 * per_socket * nsock)
    rings = []
    position = 0
    user_index = 0
    for sock_index in range(nsock):
        ring = Ring(per_socket)
        for k in range(per_socket):
            authenticator = randomness[position:position + 16]
            position += 16
            if args.kind == "status":
                packet = status_server(k & 255, authenticator, secret, nas_ip)
            else:
                name, password = users[user_index % len(users)]
                user_index += 1
                if args.expect == "reject":
                    password = password + b"-wrong"
                packet = access_request(k & 255, authenticator, secret, nas_ip, name, password,
                                        sock_index * 65536 + k)
            ring.packets.append(packet)
            ring.authenticators.append(authenticator)
        rings.append(ring)
    return rings


def percentile(ordered, p: float):
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(p / 100.0 * len(ordered)) - 1))
    return ordered[index]


def run(args, users) -> dict:
    secret = args.secret.encode()
    valid = {"accept": (ACCESS_ACCEPT,), "reject": (ACCESS_REJECT,),
             "any": (ACCESS_ACCEPT, ACCESS_REJECT)}[args.expect]
    open_loop = args.rate > 0
    started_build = time.perf_counter()
    rings = build_rings(args, users, secret)
    build_seconds = time.perf_counter() - started_build

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    socks = []
    for _ in range(args.sockets):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.connect((args.host, args.port))
        sock.setblocking(False)
        socks.append(sock)
    # Split the window over the sockets (at most 255 in flight per socket: one id space).
    base, extra = divmod(args.window, args.sockets)
    windows = [min(255, base + (1 if i < extra else 0)) for i in range(args.sockets)]

    nsock = len(socks)
    in_flight = [array("l", [-1]) * 256 for _ in range(nsock)]      # packet index per id
    last_sent = [array("l", [-1]) * 256 for _ in range(nsock)]      # newest packet sent per id
    sent_at = [array("d", [0.0]) * 256 for _ in range(nsock)]
    outstanding = [0] * nsock
    next_packet = [0] * nsock
    latencies = array("d")
    lags = array("d")                                                # open loop: send time - due time
    counts = dict(sent=0, accept=0, reject=0, challenge=0, other=0, timeout=0, late=0, unexpected=0,
                  bad_authenticator=0, bad_message_authenticator=0, missing_message_authenticator=0,
                  malformed=0, stray=0, send_errors=0, skipped=0, reply_ma=0, ring_wraps=0)
    limit = args.count or (1 << 62)
    if open_loop:
        limit = min(limit, math.ceil(args.rate * args.duration))
        interval = 1.0 / args.rate
    scheduled = 0                                                    # open loop: requests due so far
    perf = time.perf_counter
    md5 = hashlib.md5
    hdigest = hmac.digest
    compare = hmac.compare_digest
    require_ma = args.require_reply_ma
    timeout = args.timeout
    sending = True

    def send(i: int) -> bool:
        """Send socket i's next packet; False if its Identifier still waits for a reply, the
        socket buffer is full, or the send failed (counted)."""
        k = next_packet[i]
        identifier = k & 255
        if in_flight[i][identifier] >= 0:     # that id is still waiting for a (late) reply
            return False
        try:
            socks[i].send(rings[i].packets[k])
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            counts["send_errors"] += 1
            return False
        in_flight[i][identifier] = k
        last_sent[i][identifier] = k
        sent_at[i][identifier] = perf()
        outstanding[i] += 1
        counts["sent"] += 1
        k += 1
        if k == rings[i].size:
            k = 0
            counts["ring_wraps"] += 1
        next_packet[i] = k
        return True

    def fill(i: int) -> None:
        """Closed loop: top socket i up to its window."""
        while sending and outstanding[i] < windows[i] and counts["sent"] < limit and send(i):
            pass

    def send_due() -> None:
        """Open loop: send every request whose time has come, round robin over the sockets;
        one that cannot be sent is skipped (counted), the schedule never waits."""
        nonlocal scheduled
        while scheduled < limit:
            due = t_start + scheduled * interval
            if due > perf():
                return
            failed_before = counts["send_errors"]
            if send(scheduled % nsock):
                lags.append(perf() - due)
            elif counts["send_errors"] == failed_before:
                counts["skipped"] += 1
            scheduled += 1

    def verifies(data: bytes, length: int, request_authenticator: bytes) -> bool:
        return md5(data[:4] + request_authenticator + data[20:length] + secret).digest() == data[4:20]

    def late_reply(i: int, identifier: int, data: bytes, length: int, in_flight_k: int) -> bool:
        """Whether data answers an earlier request with this Identifier on socket i, one that
        already counted as a timeout."""
        authenticators = rings[i].authenticators
        k = last_sent[i][identifier]
        for _ in range(LATE_SEARCH):
            if k < 0:
                return False
            if k != in_flight_k and verifies(data, length, authenticators[k]):
                return True
            k -= 256
        return False

    def receive(i: int) -> None:
        nonlocal last_reply
        sock, ring, slots, stamps = socks[i], rings[i], in_flight[i], sent_at[i]
        authenticators = ring.authenticators
        while True:
            try:
                data = sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:        # ICMP port unreachable: no server on that port
                counts["send_errors"] += 1
                return
            now = perf()
            if len(data) < 20:
                counts["malformed"] += 1
                continue
            length = (data[2] << 8) | data[3]
            if length < 20 or length > len(data):
                counts["malformed"] += 1
                continue
            identifier = data[1]
            k = slots[identifier]
            if k < 0 or not verifies(data, length, authenticators[k]):
                if late_reply(i, identifier, data, length, k):
                    counts["late"] += 1
                elif k < 0:
                    counts["stray"] += 1
                else:
                    counts["bad_authenticator"] += 1     # not ours: leave the slot to time out
                continue
            if now - stamps[identifier] > timeout:      # the NAS has given up: not an answer
                slots[identifier] = -1
                outstanding[i] -= 1
                counts["timeout"] += 1
                counts["late"] += 1
                continue
            request_authenticator = authenticators[k]
            if length > 21 and data[20] == MESSAGE_AUTHENTICATOR and data[21] == 18:
                at = 22                              # radiusd puts it first
            else:
                at = message_authenticator_offset(data, length)
            if at is not None:
                if at < 0:
                    counts["bad_message_authenticator"] += 1
                    continue
                counts["reply_ma"] += 1
                signed = data[:4] + request_authenticator + data[20:at] + ZERO16 + data[at + 16:length]
                if not compare(hdigest(secret, signed, "md5"), data[at:at + 16]):
                    counts["bad_message_authenticator"] += 1
                    continue
            elif require_ma:
                counts["missing_message_authenticator"] += 1
            latencies.append(now - stamps[identifier])
            last_reply = now
            slots[identifier] = -1
            outstanding[i] -= 1
            code = data[0]
            counts[CODE_NAMES.get(code, "other")] += 1
            if code not in valid:
                counts["unexpected"] += 1

    server_cpu_start = process_cpu_seconds(args.server_pid) if args.server_pid else None
    cpu_start = time.process_time()
    started_unix = time.time()
    t_start = perf()
    last_reply = t_start
    stop_sending_at = t_start + args.duration
    give_up_at = None
    scan_every = min(0.1, timeout / 4)
    next_scan = t_start + scan_every
    poller = select.epoll()
    by_fd = {}
    for i, sock in enumerate(socks):
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = i
    if open_loop:
        send_due()
    else:
        for i in range(nsock):
            fill(i)
    t_stop_send = None
    while True:
        now = perf()
        if open_loop:
            all_sent = scheduled >= limit
        else:
            all_sent = counts["sent"] >= limit or now >= stop_sending_at
        if sending and all_sent:
            sending = False
            t_stop_send = now
            give_up_at = now + timeout
        if not sending and (not any(outstanding) or now >= give_up_at):
            break
        wait = 0.05
        if open_loop and sending:
            wait = min(wait, max(0.0, t_start + scheduled * interval - now))
        for fd, _event in poller.poll(wait):
            i = by_fd[fd]
            receive(i)
            if not open_loop:
                fill(i)
        if open_loop and sending:
            send_due()
        now = perf()
        if now >= next_scan:            # expire requests that waited longer than --timeout
            next_scan = now + scan_every
            for i in range(nsock):
                if not outstanding[i]:
                    continue
                slots, stamps = in_flight[i], sent_at[i]
                for identifier in range(256):
                    if slots[identifier] >= 0 and now - stamps[identifier] > timeout:
                        slots[identifier] = -1
                        outstanding[i] -= 1
                        counts["timeout"] += 1
                if not open_loop:
                    fill(i)
    t_end = perf()
    cpu_seconds = time.process_time() - cpu_start
    server_cpu_end = process_cpu_seconds(args.server_pid) if args.server_pid else None
    counts["timeout"] += sum(outstanding)
    poller.close()
    for sock in socks:
        sock.close()

    answered = len(latencies)
    # The rate counts the time from the first request to the last reply: a closed loop drains
    # within one window, and a request that times out does not stretch the interval.
    # In an open loop that is the goodput: what the server answered in time per second, however
    # much more was offered, and not inflated by replies that drain after the last request; nor by
    # a server whose answers stopped coming in time halfway: the sending period is the floor.
    sending = (t_stop_send or t_end) - t_start if open_loop else 0.0
    elapsed = max(1e-9, last_reply - t_start, sending)
    rps = round(answered / elapsed, 1) if answered else 0.0
    ordered = sorted(latencies)
    errors = (counts["unexpected"] + counts["bad_authenticator"] + counts["bad_message_authenticator"]
              + counts["missing_message_authenticator"] + counts["malformed"] + counts["send_errors"]
              + counts["skipped"])
    result = dict(
        label=args.label, kind=args.kind, expect=args.expect, host=args.host, port=args.port,
        mode="open" if open_loop else "closed", rate=args.rate if open_loop else None,
        started_unix=round(started_unix, 3),
        sockets=nsock, window=None if open_loop else sum(windows), timeout_s=timeout,
        packets_built=sum(r.size for r in rings),
        build_s=round(build_seconds, 3), **counts, answered=answered, errors=errors,
        send_s=round((t_stop_send or t_end) - t_start, 3), elapsed_s=round(elapsed, 3),
        wall_s=round(t_end - t_start, 3), rps=rps,
        p50_ms=_ms(percentile(ordered, 50)), p90_ms=_ms(percentile(ordered, 90)),
        p99_ms=_ms(percentile(ordered, 99)), max_ms=_ms(ordered[-1] if ordered else None),
        gen_cpu_s=round(cpu_seconds, 3),
        gen_cpu_pct=round(100.0 * cpu_seconds / (t_end - t_start), 1),
        gen_us_per_req=round(1e6 * cpu_seconds / answered, 1) if answered else None,
    )
    if open_loop:
        ordered_lags = sorted(lags)
        result.update(send_lag_p99_ms=_ms(percentile(ordered_lags, 99)),
                      send_lag_max_ms=_ms(ordered_lags[-1] if ordered_lags else None))
    if server_cpu_start is not None and server_cpu_end is not None:
        server_cpu = server_cpu_end - server_cpu_start
        result.update(server_pid=args.server_pid, server_cpu_s=round(server_cpu, 3),
                      server_cpu_pct=round(100.0 * server_cpu / (t_end - t_start), 1),
                      server_us_per_req=round(1e6 * server_cpu / answered, 1) if answered else None)
    return result


def _ms(seconds):
    return None if seconds is None else round(seconds * 1e3, 3)


# -- command line ----------------------------------------------------------------------------

def parse_users(args) -> list[tuple[bytes, bytes]]:
    """NAME:PASSWORD pairs from --users (comma separated) or --users-file (one a line)."""
    items = []
    if args.users_file:
        with open(args.users_file, encoding="utf-8") as handle:
            items = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    elif args.users:
        items = [item for item in args.users.split(",") if item]
    users = []
    for item in items:
        name, separator, password = item.partition(":")
        if not separator or not name:
            raise SystemExit(f"load.py: user entry {item!r} is not NAME:PASSWORD")
        users.append((name.encode(), password.encode()))
    return users


def check_args(parser, args) -> None:
    try:
        host = ipaddress.ip_address(args.host)
    except ValueError:
        parser.error("--host must be an IP address")
    if not host.is_loopback:
        parser.error("--host must be a loopback address: this tool only loads servers on this machine")
    if not args.duration and not args.count:
        args.duration = 5.0
    if not args.duration:
        args.duration = MAX_DURATION
    if not 0 < args.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION:g}]")
    if not 0 < args.timeout <= MAX_TIMEOUT:
        parser.error(f"--timeout must be in (0, {MAX_TIMEOUT:g}]")
    if args.count < 0 or args.window < 1 or args.sockets < 1:
        parser.error("--count must be >= 0, --window and --sockets >= 1")
    if args.rate < 0:
        parser.error("--rate must be > 0 (open loop) or 0 (closed loop)")
    if args.rate:
        # No (socket, Identifier) pair is reused before its request has timed out, and more.
        args.sockets = max(args.sockets, math.ceil(args.rate * (args.timeout + 1) / 256))
        if args.sockets > MAX_SOCKETS:
            parser.error(f"--rate x (--timeout + 1) needs more than {MAX_SOCKETS} sockets")
    else:
        args.sockets = min(args.sockets, args.window)
        if args.window > 255 * args.sockets:
            parser.error("--window may be at most 255 per socket")
    if args.kind == "status" and args.expect == "reject":
        parser.error("Status-Server is answered with Access-Accept: --expect reject needs --kind pap")
    if args.prebuild is None and args.rate:
        args.prebuild = min(MAX_PREBUILT, math.ceil(args.rate * args.duration))
    elif args.prebuild is None:
        # Status-Server: enough that no packet is sent twice within a run of a fast server.
        args.prebuild = min(MAX_PREBUILT, int(100_000 * args.duration)) if args.kind == "status" else 4096


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="server address, loopback only (%(default)s)")
    parser.add_argument("--port", type=int, default=18120, help="auth port (%(default)s)")
    parser.add_argument("--secret", default="benchsecret", help="shared secret (%(default)s)")
    parser.add_argument("--nas-ip", default="127.0.0.1", help="NAS-IP-Address sent (%(default)s)")
    parser.add_argument("--kind", choices=("status", "pap"), default="status",
                        help="Status-Server or password-only Access-Request (%(default)s)")
    parser.add_argument("--expect", choices=("accept", "reject", "any"), default="accept",
                        help="expected reply code; reject sends each password with '-wrong' appended; "
                             "any takes Access-Accept or Access-Reject (a users file of right and wrong "
                             "passwords)")
    users = parser.add_mutually_exclusive_group()
    users.add_argument("--users", default="", help="NAME:PASSWORD,... for --kind pap")
    users.add_argument("--users-file", help="file of NAME:PASSWORD lines for --kind pap")
    parser.add_argument("--duration", type=float, default=0.0,
                        help="stop sending after this many seconds (default 5 unless --count)")
    parser.add_argument("--count", type=int, default=0, help="stop sending after this many requests")
    parser.add_argument("--window", type=int, default=64, help="closed loop: requests in flight at most "
                        "(%(default)s)")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: send this many requests per "
                        "second on a fixed schedule, whatever the replies (default: closed loop)")
    parser.add_argument("--sockets", type=int, default=8, help="UDP sockets (%(default)s; with --rate at "
                        "least rate x (timeout + 1) / 256)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds before a request "
                        "counts as timed out, like a NAS's retry interval (%(default)s)")
    parser.add_argument("--prebuild", type=int, default=None, help="packets to build up front for "
                        "--duration runs (default: 100,000 per second of --duration for status, 4,096 for pap; "
                        "with --rate, rate x duration)")
    parser.add_argument("--require-reply-ma", action="store_true",
                        help="count a reply without Message-Authenticator as an error")
    parser.add_argument("--server-pid", type=int, default=0,
                        help="sample this process's CPU time (threads and children) around the run")
    parser.add_argument("--label", default="", help="copied into the JSON line")
    parser.add_argument("--quiet", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    check_args(parser, args)
    user_list = parse_users(args)
    if args.kind == "pap" and not user_list:
        parser.error("--kind pap needs --users or --users-file")

    result = run(args, user_list)
    if not args.quiet:
        loop = (f"open loop at {args.rate:g}/s" if args.rate else f"window {result['window']}")
        print(f"load.py: {args.kind} ({args.expect}) to {args.host}:{args.port}, {result['sockets']} sockets, "
              f"{loop}, timeout {args.timeout:g} s, {result['packets_built']} packets built in {result['build_s']} s")
        print(f"sent {result['sent']}  answered {result['answered']}  accept {result['accept']}  "
              f"reject {result['reject']}  other {result['other'] + result['challenge']}  "
              f"timeouts {result['timeout']} (late replies {result['late']})  errors {result['errors']} "
              f"(unexpected {result['unexpected']}, "
              f"bad authenticator {result['bad_authenticator']}, bad MA {result['bad_message_authenticator']}, "
              f"missing MA {result['missing_message_authenticator']}, malformed {result['malformed']}, "
              f"send errors {result['send_errors']}, skipped {result['skipped']})  "
              f"replies with MA {result['reply_ma']}")
        print(f"{result['rps']:.1f} requests/s over {result['elapsed_s']} s   latency p50 {result['p50_ms']} ms  "
              f"p90 {result['p90_ms']} ms  p99 {result['p99_ms']} ms  max {result['max_ms']} ms")
        if args.rate:
            print(f"goodput {result['rps']:.1f} answered/s of {args.rate:g}/s offered for {result['send_s']} s   "
                  f"schedule lag p99 {result['send_lag_p99_ms']} ms  max {result['send_lag_max_ms']} ms")
        line = f"generator CPU {result['gen_cpu_pct']}% ({result['gen_us_per_req']} us/request)"
        if "server_cpu_s" in result:
            line += (f"   server CPU {result['server_cpu_pct']}% ({result['server_us_per_req']} us/request, "
                     f"pid {args.server_pid})")
        if result["ring_wraps"]:
            line += f"   [packet ring reused {result['ring_wraps']}x]"
        print(line)
    print(json.dumps(result), flush=True)
    return 0 if result["answered"] and not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
