#!/usr/bin/env python3
"""``make bench``: radiusd's throughput, server CPU per request and latency, with our load.py.

Scenarios (each in its own temporary work dir, server on 127.0.0.1 and free ports):

* ``status``: Status-Server (RFC 5997) flood, window 64 over 16 sockets. Answered in the
  reactor thread; with two or more CPUs the server is pinned to CPU 1 and the generator to
  CPU 0 (as the kit's ``fr-status`` / ``radiusd-status`` targets), so the figure is per core.
* ``accept``: password-only Access-Requests of ``--mfa-exempt`` users with the right
  password (argon2id verify, Access-Accept with Framed-IP-Address), ``auth_threads`` 1 and 2.
* ``reject``: the same users with a wrong password (argon2id verify, Access-Reject).

The lockout counts every wrong password, but with ``max_failures = 100`` within
``window_seconds = 1`` no bench user is ever blocked, so each Reject costs a full verify.
PAP scenarios run unpinned (the hash pool may use every core), with a small window
(``--pap-window``, default 8) and a 15 s timeout: an argon2id verify costs ~20 ms.

For each scenario: write radiusd.toml (``reject_delay_seconds = 0``, ``[mfa] required =
false``, ``[server] auth_threads``), ``radiusd-admin db upgrade``, ``radiusd-admin user add``
for each bench user, ``radiusd --config ... serve``, wait for ``GET /readyz`` = 200, a 1 s
warm-up (not recorded), then the measured run of ``bench/load.py``, which samples the
server's CPU time (utime + stime of all its threads, and of any child process) from
/proc/PID/stat right before its first request and after its last reply. The server is then
stopped by its PID: SIGTERM, and SIGKILL only if it has not exited within 15 s.

Reference rows, measured in the same invocation:

* ``hash-limit``: single-thread argon2id verifies/s at the server's own parameters (no
  server); a PAP row's ratio is req/s / (threads x that rate), 1.0 = the pool verifies
  passwords all the time.
* ``freeradius-status`` (when FreeRADIUS is installed and the kit at ../shared/bench is
  there; ``--no-freeradius`` skips it): the kit's FreeRADIUS 3.2 instance flooded with the
  same Status-Server load, pinned alike; the ``status`` row's ratio is to that req/s.

Prints one table, and writes every figure as JSON to ``--json`` (default bench/out/last.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOAD = BENCH / "load.py"
SECRET = "bench-secret-0123456789"
SERVER_CPU, GENERATOR_CPU = 1, 0
STOP_GRACE_SECONDS = 15
READY_TIMEOUT_SECONDS = 60

HASH_LIMIT_SCRIPT = r"""
import json, sys, time
from argon2 import PasswordHasher, Type
from radiusd.config import SecuritySection
s = SecuritySection()
ph = PasswordHasher(time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_kib,
                    parallelism=s.argon2_parallelism, type=Type.ID)
h = ph.hash("bench-password")
ph.verify(h, "bench-password")
n, w0, c0 = 0, time.perf_counter(), time.process_time()
end = w0 + float(sys.argv[1])
while time.perf_counter() < end:
    ph.verify(h, "bench-password")
    n += 1
w, c = time.perf_counter() - w0, time.process_time() - c0
print(json.dumps(dict(verifies=n, wall_s=round(w, 3), rps=round(n / w, 2),
                      cpu_ms_per_verify=round(1e3 * c / n, 2),
                      params="m=%d,t=%d,p=%d" % (s.argon2_memory_kib, s.argon2_time_cost,
                                                  s.argon2_parallelism))))
"""


# -- helpers -----------------------------------------------------------------------------------

def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def toml_string(value: str) -> str:
    return json.dumps(str(value))   # a JSON string is a valid TOML basic string


def server_env() -> dict:
    """Our environment without RADIUSD_* (they would override the bench configuration)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RADIUSD_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pinned_to(cpu: int | None):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def descendants(pid: int) -> dict[int, str]:
    """Live descendants of pid, each with its start time (to never signal a reused PID)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = stat_fields(int(name))
            if fields:
                parents.setdefault(int(fields[1]), []).append(int(name))
    found, todo = {}, [pid]
    while todo:
        for child in parents.get(todo.pop(), ()):
            fields = stat_fields(child)
            if fields:
                found[child] = fields[19]
                todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of pid (all threads) and of its descendants."""
    ticks = 0
    for each in [pid, *descendants(pid)]:
        fields = stat_fields(each)
        if fields:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class ScenarioFailed(Exception):
    pass


# -- radiusd -----------------------------------------------------------------------------------

class Radiusd:
    """One work dir (config, SQLite database, seed key, users, log) and one server process."""

    def __init__(self, base: Path, name: str, threads: int, users: list[tuple[str, str]], bin_dir: Path,
                 cpu: int | None, budget: float | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-t{threads}.", dir=base))
        self.config = self.dir / "radiusd.toml"
        self.log_path = self.dir / "radiusd.log"
        self.threads = threads
        self.users = users
        self.bin = bin_dir
        self.cpu = cpu
        self.budget = budget        # [server] request_budget_seconds; None: not written (older servers)
        self.auth_port = free_port(socket.SOCK_DGRAM)
        self.ops_port = free_port(socket.SOCK_STREAM)
        self.api_port = free_port(socket.SOCK_STREAM)
        self.process: subprocess.Popen | None = None
        self.started_once = False
        self.children: dict[int, str] = {}

    def write_config(self) -> None:
        d = self.dir
        self.config.write_text("\n".join([
            "# written by bench/run.py",
            "[server]",
            'listen = ["127.0.0.1"]',
            f"auth_port = {self.auth_port}",
            "acct_port = 0",
            "workers = 1",
            f"auth_threads = {self.threads}",
            "reject_delay_seconds = 0",
            *([] if self.budget is None else [f"request_budget_seconds = {self.budget:g}"]),
            "",
            "[security]",
            "require_message_authenticator = true",
            f"seed_key = {{ file = {toml_string(d / 'seed.key')} }}",
            "",
            "[database]",
            f"url = {toml_string('sqlite:///' + str(d / 'radiusd.db'))}",
            "",
            "[api]", 'listen = "127.0.0.1"', f"port = {self.api_port}", "",
            "[ops]", 'listen = "127.0.0.1"', f"port = {self.ops_port}", "",
            "[mfa]", "required = false", "",
            # Failures are still counted (their database writes are part of a Reject's cost),
            # but the wrong-password scenario never reaches the limit, so every Reject verifies.
            "[lockout]", "max_failures = 100", "window_seconds = 1", "block_seconds = 1", "",
            "[sms]", 'gateway = "file"', f"spool_path = {toml_string(d / 'sms.spool')}", "",
            "[[nas]]",
            'name = "bench"',
            'address = "127.0.0.1/32"',
            f"secret = {toml_string(SECRET)}",
            "require_message_authenticator = true",
            "",
        ]))

    def admin(self, *args: str, stdin: str | None = None) -> None:
        command = [str(self.bin / "radiusd-admin"), "--config", str(self.config), *args]
        try:
            done = subprocess.run(command, cwd=self.dir, env=server_env(), input=stdin, text=True,
                                  capture_output=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise ScenarioFailed(f"`radiusd-admin {' '.join(args)}` took more than 120 s") from None
        if done.returncode != 0:
            lines = (done.stderr + done.stdout).strip().splitlines() or ["(no output)"]
            raise ScenarioFailed(f"`radiusd-admin {' '.join(args)}` failed (rc {done.returncode}): {lines[-1]}")

    def prepare(self) -> None:
        self.write_config()
        self.admin("db", "upgrade")
        for index, (name, password) in enumerate(self.users):
            self.admin("user", "add", name, "--password-stdin", "--mfa-exempt",
                       "--framed-ip", f"10.254.0.{index + 1}", stdin=password + "\n")

    def start(self) -> int:
        if self.started_once:       # a later round: the schema may have moved on meanwhile
            self.admin("db", "upgrade")
        self.started_once = True
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(self.bin / "radiusd"), "--config", str(self.config), "serve"], cwd=self.dir,
            env=server_env(), stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=pinned_to(self.cpu))
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        url = f"http://127.0.0.1:{self.ops_port}/readyz"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ScenarioFailed(f"radiusd exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        self.children = descendants(self.process.pid)
                        return self.process.pid
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ScenarioFailed(f"GET {url} not 200 within {READY_TIMEOUT_SECONDS} s: {self.log_tail()}")

    def stop(self) -> str:
        """SIGTERM to the server's PID; SIGKILL (by PID) only if it is still there after 15 s."""
        if self.process is None:
            return "not started"
        process, self.process = self.process, None
        children = {**self.children, **descendants(process.pid)}
        how = "exited"
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_SECONDS)
                how = f"stopped by SIGTERM (exit {process.returncode})"
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
                how = f"did not exit {STOP_GRACE_SECONDS} s after SIGTERM: SIGKILLed"
        for pid, started in children.items():       # workers > 1 only; none with workers = 1
            fields = stat_fields(pid)
            if fields and fields[19] == started:
                os.kill(pid, signal.SIGKILL)
        self.log.close()
        return how

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log_path.read_bytes()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:])


# -- runs --------------------------------------------------------------------------------------

def load(port: int, arguments: list[str], duration: float, cpu: int | None, server_pid: int = 0,
         label: str = "") -> dict:
    command = [sys.executable, str(LOAD), "--port", str(port), "--secret", SECRET,
               "--duration", str(duration), "--quiet", "--label", label, *arguments]
    if server_pid:
        command += ["--server-pid", str(server_pid)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120,
                          preexec_fn=pinned_to(cpu))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ScenarioFailed(f"load.py gave no result (rc {done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(lines[-1])


def status_arguments(args) -> list[str]:
    return ["--kind", "status", "--window", "64", "--sockets", "16"]


def pap_arguments(args, expect: str, users_file: Path) -> list[str]:
    return ["--kind", "pap", "--expect", expect, "--users-file", str(users_file),
            "--window", str(args.pap_window), "--sockets", "4", "--timeout", "15"]


class Target:
    """One row of the table: a radiusd scenario, FreeRADIUS, or the hash-limit pseudo-target."""

    def __init__(self, name: str, threads: int, pinned: bool, arguments: list[str] | None = None,
                 server: Radiusd | None = None):
        self.name, self.threads, self.pinned = name, threads, pinned
        self.arguments = arguments or []
        self.server = server
        self.prepared = False
        self.setup_failed = False
        self.results: list[dict] = []
        self.failures: list[str] = []

    @property
    def generator_cpu(self) -> int | None:
        return GENERATOR_CPU if self.pinned else None


def run_radiusd(args, target: Target) -> dict:
    server = target.server
    if target.setup_failed:
        raise ScenarioFailed("set-up failed in an earlier round")
    if not target.prepared:               # first round: config, database, users
        try:
            server.prepare()
        except ScenarioFailed:
            target.setup_failed = True
            raise
        target.prepared = True
    try:
        pid = server.start()
        warm = load(server.auth_port, target.arguments, 1.0, target.generator_cpu, label="warm-up")
        if not warm["answered"]:
            raise ScenarioFailed(f"no reply during the warm-up: {server.log_tail()}")
        outer0 = cpu_seconds(pid)
        result = load(server.auth_port, target.arguments + ["--require-reply-ma"], args.duration,
                      target.generator_cpu, server_pid=pid, label=target.name)
        result["outer_server_cpu_s"] = round(cpu_seconds(pid) - outer0, 3)
    finally:
        stopped = server.stop()
    result.update(stop=stopped, work_dir=str(server.dir))
    return result


def run_freeradius(args, target: Target) -> dict:
    script = args.kit / "freeradius" / "run.sh"
    port = free_port(socket.SOCK_DGRAM)
    env = dict(os.environ, RADBENCH_PORT=str(port), RADBENCH_SECRET=SECRET,
               RADBENCH_CPUS=str(SERVER_CPU) if target.pinned else "")
    started = subprocess.run([str(script), "start", "cleartext"], cwd=args.kit, env=env, capture_output=True,
                             text=True, timeout=60)
    if started.returncode != 0:
        raise ScenarioFailed(f"freeradius/run.sh start failed: {started.stderr.strip()[-300:]}")
    pid_text, rundir = started.stdout.split()
    try:
        load(port, target.arguments, 1.0, target.generator_cpu, label="warm-up")
        result = load(port, target.arguments, args.duration, target.generator_cpu, server_pid=int(pid_text),
                      label=target.name)
    finally:
        subprocess.run([str(script), "stop", rundir], cwd=args.kit, env=env, timeout=60)
    return result


def hash_limit(args, target: Target) -> dict:
    done = subprocess.run([sys.executable, "-c", HASH_LIMIT_SCRIPT, str(args.hash_seconds)],
                          capture_output=True, text=True, timeout=args.hash_seconds + 60, cwd=ROOT)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ScenarioFailed(f"hash-limit failed: {done.stderr.strip()[-300:]}")
    return json.loads(lines[-1])


# -- report ------------------------------------------------------------------------------------

COLUMNS = ("scenario", "threads", "req/s", "server CPU us/req", "p50 ms", "p99 ms", "timeouts", "errors",
           "ratio")


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def table(rows: list[dict], columns: tuple[str, ...] = COLUMNS) -> str:
    cells = [columns] + [tuple(row.get(column, "-") for column in columns) for row in rows]
    widths = [max(len(str(line[i])) for line in cells) for i in range(len(columns))]
    out = []
    for number, line in enumerate(cells):
        out.append("| " + " | ".join(str(cell).ljust(widths[i]) if i == 0 else str(cell).rjust(widths[i])
                                     for i, cell in enumerate(line)) + " |")
        if number == 0:
            out.append("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join(out)


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def summarise(target: Target, ratios: list[float], ratio_label: str) -> dict:
    results = target.results
    n = len(results)
    summary = dict(scenario=target.name, threads=target.threads, pinned=target.pinned, rounds=n,
                   rps=median([r["rps"] for r in results]),
                   rps_min=min((r["rps"] for r in results), default=None),
                   rps_max=max((r["rps"] for r in results), default=None),
                   server_us_per_req=median([r.get("server_us_per_req") for r in results]),
                   server_cpu_pct=median([r.get("server_cpu_pct") for r in results]),
                   gen_cpu_pct=median([r.get("gen_cpu_pct") for r in results]),
                   p50_ms=median([r.get("p50_ms") for r in results]),
                   p99_ms=median([r.get("p99_ms") for r in results]),
                   timeouts=sum(r.get("timeout", 0) for r in results),
                   errors=sum(r.get("errors", 0) for r in results),
                   ratio=round(median(ratios), 3) if ratios else None, ratio_to=ratio_label if ratios else None,
                   failures=target.failures)
    return summary


def row_of(summary: dict) -> dict:
    rps = summary["rps"]
    spread = (f" ({summary['rps_min']:,.0f}-{summary['rps_max']:,.0f})"
              if summary["rounds"] > 1 and rps is not None else "")
    digits = lambda value: 2 if (value or 0) < 100 else 0  # noqa: E731
    ratio = "-" if summary["ratio"] is None else f"{summary['ratio']:.3f} x {summary['ratio_to']}"
    return {
        "scenario": summary["scenario"] + ("" if not summary["failures"] else " (FAILED)"),
        "threads": summary["threads"],
        "req/s": (fmt(float(rps)) if rps is not None else "-") + spread,
        "server CPU us/req": fmt(summary["server_us_per_req"]),
        "p50 ms": fmt(summary["p50_ms"], digits(summary["p50_ms"])),
        "p99 ms": fmt(summary["p99_ms"], digits(summary["p99_ms"])),
        "timeouts": summary["timeouts"],
        "errors": summary["errors"],
        "ratio": ratio,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (%(default)s)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds; each runs every target once, in a shuffled order, and the table "
                             "shows medians (%(default)s)")
    parser.add_argument("--scenarios", default="status,accept,reject",
                        help="comma list of status, accept, reject (%(default)s)")
    parser.add_argument("--threads", default="1,2", help="auth_threads values for accept/reject (%(default)s)")
    parser.add_argument("--users", type=int, default=8, help="mfa-exempt bench users per PAP scenario (%(default)s)")
    parser.add_argument("--pap-window", type=int, default=8, help="PAP requests in flight (%(default)s)")
    parser.add_argument("--hash-seconds", type=float, default=3.0, help="length of the hash-limit run (%(default)s)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin the Status-Server runs to CPUs")
    parser.add_argument("--no-freeradius", action="store_true", help="skip the FreeRADIUS Status-Server row")
    parser.add_argument("--kit", type=Path, default=ROOT.parent / "shared" / "bench",
                        help="benchmark kit with freeradius/run.sh (%(default)s)")
    parser.add_argument("--bin", type=Path, default=Path(sys.executable).parent,
                        help="directory holding radiusd and radiusd-admin (%(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the per-round order (%(default)s)")
    parser.add_argument("--json", type=Path, default=BENCH / "out" / "last.json", help="results file (%(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the work dirs (config, database, logs)")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 300 or not 1 <= args.rounds <= 20:
        parser.error("--duration must be in (0, 300] and --rounds in 1..20")
    if not 1 <= args.pap_window <= 64 or not 1 <= args.users <= 250:
        parser.error("--pap-window must be 1..64 and --users 1..250")
    scenarios = [item for item in args.scenarios.split(",") if item]
    if set(scenarios) - {"status", "accept", "reject"}:
        parser.error("--scenarios takes status, accept, reject")
    try:
        thread_counts = [int(item) for item in args.threads.split(",") if item]
    except ValueError:
        parser.error("--threads takes numbers, e.g. 1,2")
    if any(not 1 <= count <= 64 for count in thread_counts):
        parser.error("--threads values must be 1..64")
    for program in ("radiusd", "radiusd-admin"):
        if not os.access(args.bin / program, os.X_OK):
            parser.error(f"{args.bin / program} not found: run `make bench` (it installs .venv) or pass --bin")
    pinned = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
    with_freeradius = (not args.no_freeradius and "status" in scenarios and shutil.which("freeradius") is not None
                       and (args.kit / "freeradius" / "run.sh").exists())

    base = Path(tempfile.mkdtemp(prefix="radiusd-bench."))
    users = [(f"bench{index:02d}", f"bench-password-{index:02d}") for index in range(args.users)]
    users_file = base / "users.txt"
    users_file.write_text("".join(f"{name}:{password}\n" for name, password in users))
    print(f"bench: work dirs under {base}; {args.rounds} round(s) of {args.duration:g} s runs; Status-Server "
          f"{'pinned (server CPU 1, generator CPU 0)' if pinned else 'unpinned'}; PAP unpinned, window "
          f"{args.pap_window}, {len(users)} users", flush=True)

    targets: list[Target] = []
    if "status" in scenarios:
        targets.append(Target("status", 1, pinned, status_arguments(args),
                              Radiusd(base, "status", 1, [], args.bin, SERVER_CPU if pinned else None)))
    for threads in thread_counts:
        for name in ("accept", "reject"):
            if name in scenarios:
                targets.append(Target(name, threads, False, pap_arguments(args, name, users_file),
                                      Radiusd(base, name, threads, users, args.bin, None)))
    freeradius = hashes = None
    if with_freeradius:
        freeradius = Target("freeradius-status", 8, pinned, status_arguments(args))
        targets.append(freeradius)
    if any(target.name != "status" and target.server for target in targets):
        hashes = Target("hash-limit", 1, False)
        targets.append(hashes)
    runners = {"freeradius-status": run_freeradius, "hash-limit": hash_limit}

    started = time.monotonic()
    order = random.Random(args.seed)
    try:
        for round_number in range(1, args.rounds + 1):
            this_round = targets[:]
            if args.rounds > 1:
                order.shuffle(this_round)
            for target in this_round:
                if target.setup_failed:
                    continue
                runner = runners.get(target.name, run_radiusd)
                try:
                    result = runner(args, target)
                except ScenarioFailed as exc:
                    target.failures.append(f"round {round_number}: {exc}")
                    print(f"bench: round {round_number} {target.name} threads={target.threads}: FAILED {exc}",
                          flush=True)
                    continue
                result.update(round=round_number, scenario=target.name, threads=target.threads,
                              pinned=target.pinned)
                target.results.append(result)
                if target is hashes:
                    print(f"bench: round {round_number} hash-limit: {result['rps']} argon2id verifies/s in one "
                          f"thread ({result['params']}, {result['cpu_ms_per_verify']} ms CPU each)", flush=True)
                else:
                    print(f"bench: round {round_number} {target.name} threads={target.threads}: "
                          f"{result['rps']:.1f} req/s, server {result.get('server_us_per_req')} us/req "
                          f"({result.get('server_cpu_pct')}% CPU), generator {result.get('gen_cpu_pct')}% CPU, "
                          f"timeouts {result['timeout']}, errors {result['errors']}"
                          + (f", packet ring reused {result['ring_wraps']}x" if result.get("ring_wraps") else "")
                          + (f", server {result['stop']}" if "stop" in result else ""), flush=True)
    finally:
        for target in targets:            # after an interrupt: no server is left running
            if target.server is not None:
                target.server.stop()

    cores = len(os.sched_getaffinity(0))
    summaries = []
    for target in targets:
        if target is hashes or not target.results:
            if target is not hashes and target.failures:
                summaries.append(summarise(target, [], ""))
            continue
        ratios, label = [], ""
        if target.name == "status" and freeradius:
            reference = {r["round"]: r["rps"] for r in freeradius.results}
            ratios = [r["rps"] / reference[r["round"]] for r in target.results if reference.get(r["round"])]
            label = "FR"
        elif target.name == "freeradius-status":
            ratios, label = [1.0], "FR"
        elif hashes and target.name in ("accept", "reject"):
            reference = {r["round"]: r["rps"] for r in hashes.results}
            ratios = [r["rps"] / (min(target.threads, cores) * reference[r["round"]])
                      for r in target.results if reference.get(r["round"])]
            label = "hash"
        summaries.append(summarise(target, ratios, label))
    rows = [row_of(summary) for summary in summaries]
    if hashes and hashes.results:
        rps = median([r["rps"] for r in hashes.results])
        cpu_ms = median([r["cpu_ms_per_verify"] for r in hashes.results])
        rows.append({"scenario": "hash-limit (no server)", "threads": 1, "req/s": fmt(float(rps)),
                     "server CPU us/req": fmt(cpu_ms * 1e3), "p50 ms": "-", "p99 ms": "-",
                     "timeouts": "-", "errors": "-", "ratio": "-"})

    print()
    print(table(rows))
    print()
    print("req/s: verified replies / (first request .. last reply)"
          + (", median of the rounds (min-max)" if args.rounds > 1 else "")
          + "; server CPU us/req: the server's utime+stime (all threads) / replies;\n"
          "p50/p99: request to verified reply; errors: wrong code, bad Response Authenticator or "
          "Message-Authenticator, missing Message-Authenticator (radiusd rows);\n"
          "ratio: status = req/s / FreeRADIUS's in the same round (same load and pinning); accept/reject = "
          "req/s / (threads x hash-limit argon2id verifies/s per thread).")
    print(f"total {time.monotonic() - started:.0f} s")

    failures = [f"{target.name} (threads {target.threads}): {failure}"
                for target in targets for failure in target.failures]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(dict(duration=args.duration, rounds=args.rounds, pinned_status=pinned,
                                         summaries=summaries,
                                         runs=[r for target in targets for r in target.results],
                                         failures=failures), indent=1) + "\n")
    print(f"results: {args.json}")
    if args.keep or failures:
        print(f"work dirs kept under {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    bad = failures or any(s["errors"] or s["timeouts"] for s in summaries)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
