#!/usr/bin/env python3
"""``make bench`` (overload part): what radiusd answers, and what it records, past its capacity.

A population of NASes does not slow down when the server does: it sends on its own schedule
and gives up on a request after its retry interval. This scenario offers radiusd such a load
(``bench/load.py --rate``, open loop, NAS timeout ``--timeout``, default 5 s) at 1.5, 2 and 3
times its measured capacity, half the requests with a right password and half with a wrong
one (``--expect any``: Access-Accept and Access-Reject are both answers), and records:

* offered rate, goodput (requests answered within the timeout per second, from the first
  request to the last answered one, and at least the sending period) and goodput as a share of
  capacity; p50/p99 latency of
  the answered requests; timeouts, and the replies that came after the timeout (``late``:
  work nobody waited for);
* the server's ``radiusd_dropped_packets_total`` by reason and ``radiusd_auth_decisions_total``
  by reason (``GET /metrics`` on the ops port before and after the phase);
* the ``auth`` rows written to ``audit_events`` during the phase (SQLite, read-only), against the
  replies the generator received: a row without a reply is a failure counted for a request
  nobody was answered for;
* the server's peak RSS (``VmHWM`` of /proc/PID/status) and how long it kept deciding after
  the last request was sent (``drain``: to the last audit row of the phase). Before counting,
  the driver waits (at most ``--settle-max`` s) until the server's CPU time and the audit table
  stop moving.

Set-up, as bench/run.py does it: radiusd.toml on 127.0.0.1 and free ports, SQLite,
``auth_threads = 2``, ``reject_delay_seconds = 0``, ``[mfa] required = false``, lockout at 100
failures in 1 s (no bench user is ever blocked, so every Reject verifies a password), and
``--users`` users added once with ``radiusd-admin user add ... --mfa-exempt`` to a template
database. Each phase (the capacity run and every factor) copies that database into a fresh
work dir and starts its own server, so no phase inherits a queue, a cache or audit rows from
the one before. Each server gets a 1 s closed-loop warm-up (not counted).

Capacity is the req/s of a closed loop (window ``--capacity-window``) of ``--capacity-duration``
seconds with the same mixed passwords, unless ``--capacity`` fixes it: pass the same figure to
runs that are to be compared (an older radiusd and a newer one).

``--budget S`` writes ``[server] request_budget_seconds = S``; without it the key is left out,
so the scenario also runs an older radiusd that does not know it (``--radiusd-bin`` names that
install's bin/ directory). The goals checked below the table (goodput >= 90 % of capacity, p99
below the budget, audit rows = replies received) come from issue 13.

Prints one table and writes every figure to ``--json`` (default bench/out/overload.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from run import BENCH, Radiusd, ScenarioFailed, cpu_seconds, fmt, load, table

DEFAULT_BUDGET = 4.0          # the new server's default request_budget_seconds, for the goal check
GOODPUT_GOAL = 0.9
IDLE_CPU_SHARE = 0.1          # below this share of one core and no new audit rows: the server is idle
IDLE_SAMPLE_SECONDS = 0.5
SAMPLE = re.compile(r'^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
COLUMNS = ("load", "offered/s", "sent", "answered", "goodput/s", "% cap", "p50 ms", "p99 ms", "timeouts",
           "late", "drops by reason", "decisions by reason", "audit rows", "replies", "peak RSS MiB",
           "drain s")


# -- what the server shows -----------------------------------------------------------------------

def scrape(server: Radiusd) -> dict[str, dict[str, float]]:
    """Every sample of /metrics, by metric name, each keyed by its label string."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ops_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match:
            samples.setdefault(match[1], {})[match[2] or ""] = float(match[3])
    return samples


def by_label(samples: dict, name: str, label: str) -> dict[str, float]:
    """The samples of one metric summed by the value of one label."""
    totals: dict[str, float] = {}
    for labels, value in samples.get(name, {}).items():
        key = dict(LABEL.findall(labels)).get(label, "")
        totals[key] = totals.get(key, 0.0) + value
    return totals


def growth(before: dict, after: dict, name: str, label: str) -> dict[str, int]:
    """What each labelled counter gained between two scrapes (zeros left out)."""
    old, new = by_label(before, name, label), by_label(after, name, label)
    gained = {key: int(round(value - old.get(key, 0.0))) for key, value in new.items()}
    return {key: value for key, value in sorted(gained.items()) if value}


def audit_database(server: Radiusd) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{server.dir / 'radiusd.db'}?mode=ro", uri=True, timeout=10)


def last_audit_id(server: Radiusd) -> int:
    with audit_database(server) as connection:
        return connection.execute("SELECT coalesce(max(id), 0) FROM audit_events").fetchone()[0]


def audit_rows_since(server: Radiusd, after_id: int) -> tuple[dict[str, int], float | None]:
    """Authentication audit rows written after after_id, by result/reason, and the Unix time
    of the last one."""
    with audit_database(server) as connection:
        rows = connection.execute(
            "SELECT result, reason, count(*) FROM audit_events WHERE type = 'auth' AND id > ? "
            "GROUP BY result, reason ORDER BY result, reason", (after_id,)).fetchall()
        last = connection.execute("SELECT max(occurred_at) FROM audit_events WHERE type = 'auth' AND id > ?",
                                  (after_id,)).fetchone()[0]
    last_at = datetime.fromisoformat(last).replace(tzinfo=timezone.utc).timestamp() if last else None
    return {f"{result}/{reason}" if reason else result: count for result, reason, count in rows}, last_at


def memory_mib(pid: int, field: str) -> float | None:
    """VmRSS or VmHWM (peak) of pid, in MiB."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def wait_until_idle(server: Radiusd, pid: int, limit: float) -> bool:
    """Wait until the server's CPU time and audit table stop moving; False if they still move
    after limit seconds."""
    deadline = time.monotonic() + limit
    cpu, rows = cpu_seconds(pid), last_audit_id(server)
    while time.monotonic() < deadline:
        time.sleep(IDLE_SAMPLE_SECONDS)
        cpu_now, rows_now = cpu_seconds(pid), last_audit_id(server)
        if rows_now == rows and cpu_now - cpu < IDLE_CPU_SHARE * IDLE_SAMPLE_SECONDS:
            return True
        cpu, rows = cpu_now, rows_now
    return False


# -- phases ------------------------------------------------------------------------------------

def closed_loop(args, users_file: Path) -> list[str]:
    return ["--kind", "pap", "--expect", "any", "--users-file", str(users_file),
            "--window", str(args.capacity_window), "--sockets", "4", "--timeout", "15"]


def open_loop(args, users_file: Path, rate: float) -> list[str]:
    return ["--kind", "pap", "--expect", "any", "--users-file", str(users_file), "--rate", f"{rate:g}",
            "--timeout", f"{args.timeout:g}", "--require-reply-ma"]


def fresh_server(args, base: Path, name: str, template: Radiusd) -> Radiusd:
    """A new work dir with its own config and a copy of the template database (users only)."""
    server = Radiusd(base, name, args.threads, template.users, args.radiusd_bin, None, budget=args.budget)
    server.write_config()
    for file_name in ("radiusd.db", "radiusd.db-wal", "seed.key"):
        if (template.dir / file_name).exists():
            shutil.copy2(template.dir / file_name, server.dir / file_name)
    return server


def warm_up(server: Radiusd, args, users_file: Path) -> None:
    warm = load(server.auth_port, closed_loop(args, users_file), 1.0, None, label="warm-up")
    if not warm["answered"]:
        raise ScenarioFailed(f"no reply during the warm-up: {server.log_tail()}")


def measure_capacity(args, base: Path, template: Radiusd, users_file: Path) -> dict:
    server = fresh_server(args, base, "capacity", template)
    try:
        pid = server.start()
        warm_up(server, args, users_file)
        result = load(server.auth_port, closed_loop(args, users_file) + ["--require-reply-ma"],
                      args.capacity_duration, None, server_pid=pid, label="capacity")
        result["peak_rss_mib"] = memory_mib(pid, "VmHWM")
        result["version"] = next(iter(by_label(scrape(server), "radiusd_build_info", "version")), None)
    finally:
        result_stop = server.stop()
    if not result["answered"] or result["errors"]:
        raise ScenarioFailed(f"capacity run: {result['answered']} answered, {result['errors']} errors")
    result.update(stop=result_stop, work_dir=str(server.dir))
    return result


def overload_phase(args, base: Path, template: Radiusd, users_file: Path, factor: float,
                   capacity: float) -> dict:
    rate = round(factor * capacity, 1)
    server = fresh_server(args, base, f"overload-x{factor:g}", template)
    try:
        pid = server.start()
        warm_up(server, args, users_file)
        before, audit_from = scrape(server), last_audit_id(server)
        rss_before = memory_mib(pid, "VmRSS")
        result = load(server.auth_port, open_loop(args, users_file, rate), args.overload_duration, None,
                      server_pid=pid, label=f"overload x{factor:g}")
        settled = wait_until_idle(server, pid, args.settle_max)
        after = scrape(server)
        audit, last_audit_at = audit_rows_since(server, audit_from)
        last_sent_at = result["started_unix"] + result["send_s"]
        result.update(
            factor=factor, offered=rate, capacity=capacity,
            goodput=result["rps"], goodput_pct=round(100.0 * result["rps"] / capacity, 1),
            # Decisions the server still made after the last request was sent.
            drain_s=round(max(0.0, last_audit_at - last_sent_at), 1) if last_audit_at else None, settled=settled,
            dropped=growth(before, after, "radiusd_dropped_packets_total", "reason"),
            decisions=growth(before, after, "radiusd_auth_decisions_total", "reason"),
            server_replies=sum(growth(before, after, "radiusd_access_responses_total", "code").values()),
            audit_rows=sum(audit.values()), audit_by_result=audit,
            replies_received=result["answered"] + result["late"],
            rss_before_mib=rss_before, peak_rss_mib=memory_mib(pid, "VmHWM"))
    finally:
        result_stop = server.stop()
    result.update(stop=result_stop, work_dir=str(server.dir))
    return result


# -- report ------------------------------------------------------------------------------------

def reasons(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in counts.items()) or "-"


def capacity_row(result: dict) -> dict:
    return {"load": "capacity (closed loop)", "offered/s": "-", "sent": f"{result['sent']:,}",
            "answered": f"{result['answered']:,}", "goodput/s": fmt(result["rps"]), "% cap": "100.0",
            "p50 ms": fmt(result["p50_ms"], 0), "p99 ms": fmt(result["p99_ms"], 0), "timeouts": result["timeout"],
            "late": result["late"], "peak RSS MiB": fmt(result["peak_rss_mib"])}


def phase_row(result: dict) -> dict:
    return {"load": f"{result['factor']:g}x capacity", "offered/s": fmt(result["offered"]),
            "sent": f"{result['sent']:,}", "answered": f"{result['answered']:,}",
            "goodput/s": fmt(result["goodput"]), "% cap": fmt(result["goodput_pct"]),
            "p50 ms": fmt(result["p50_ms"], 0), "p99 ms": fmt(result["p99_ms"], 0),
            "timeouts": f"{result['timeout']:,}", "late": f"{result['late']:,}",
            "drops by reason": reasons(result["dropped"]), "decisions by reason": reasons(result["decisions"]),
            "audit rows": f"{result['audit_rows']:,}", "replies": f"{result['replies_received']:,}",
            "peak RSS MiB": fmt(result["peak_rss_mib"]),
            "drain s": fmt(result["drain_s"]) + ("" if result["settled"] else "+")}


def goals(result: dict, budget: float) -> list[str]:
    """Issue 13's goals for one phase, each 'ok' or 'MISSED'."""
    p99 = result["p99_ms"]
    checks = [
        (f"goodput {result['goodput_pct']:.0f} % >= {GOODPUT_GOAL:.0%} of capacity",
         result["goodput_pct"] >= 100 * GOODPUT_GOAL),
        (f"p99 {fmt(p99, 0)} ms < budget {budget * 1e3:,.0f} ms", p99 is not None and p99 < budget * 1e3),
        (f"audit rows {result['audit_rows']:,} = replies {result['replies_received']:,}",
         result["audit_rows"] == result["replies_received"]),
    ]
    return [f"{text}: {'ok' if passed else 'MISSED'}" for text, passed in checks]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factors", default="1.5,2,3", help="offered load in multiples of capacity (%(default)s)")
    parser.add_argument("--overload-duration", type=float, default=30.0,
                        help="seconds of open-loop load per factor (%(default)s)")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="the NAS's timeout: an answer later than this is not counted (%(default)s)")
    parser.add_argument("--capacity", type=float, default=None,
                        help="capacity in req/s; default: measured with a closed loop first")
    parser.add_argument("--capacity-duration", type=float, default=5.0,
                        help="seconds of the capacity run (%(default)s)")
    parser.add_argument("--capacity-window", type=int, default=8,
                        help="requests in flight in the capacity run (%(default)s)")
    parser.add_argument("--settle-max", type=float, default=60.0,
                        help="after the load, wait at most this long for the server to go idle (%(default)s)")
    parser.add_argument("--budget", type=float, default=None,
                        help="write [server] request_budget_seconds (default: leave it out, as an older "
                             f"radiusd needs; the goal check then assumes {DEFAULT_BUDGET:g} s)")
    parser.add_argument("--threads", type=int, default=2, help="[server] auth_threads (%(default)s)")
    parser.add_argument("--users", type=int, default=8,
                        help="mfa-exempt bench users; each is sent a right and a wrong password (%(default)s)")
    parser.add_argument("--radiusd-bin", "--bin", dest="radiusd_bin", type=Path, default=Path(sys.executable).parent,
                        help="directory holding radiusd and radiusd-admin, e.g. another checkout's .venv/bin "
                             "(%(default)s)")
    parser.add_argument("--json", type=Path, default=BENCH / "out" / "overload.json",
                        help="results file (%(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the work dirs (configs, databases, logs)")
    args = parser.parse_args(argv)
    try:
        factors = [float(item) for item in args.factors.split(",") if item]
    except ValueError:
        parser.error("--factors takes numbers, e.g. 1.5,2,3")
    if not factors or any(not 0 < factor <= 10 for factor in factors):
        parser.error("--factors must be in (0, 10]")
    if not 0 < args.overload_duration <= 300 or not 0 < args.capacity_duration <= 60:
        parser.error("--overload-duration must be in (0, 300] and --capacity-duration in (0, 60]")
    if not 0 < args.timeout <= 30 or not 0 <= args.settle_max <= 600:
        parser.error("--timeout must be in (0, 30] and --settle-max in [0, 600]")
    if args.capacity is not None and not 0 < args.capacity <= 10_000:
        parser.error("--capacity must be in (0, 10000]")
    if not 1 <= args.threads <= 64 or not 1 <= args.users <= 250 or not 1 <= args.capacity_window <= 64:
        parser.error("--threads must be 1..64, --users 1..250, --capacity-window 1..64")
    for program in ("radiusd", "radiusd-admin"):
        if not os.access(args.radiusd_bin / program, os.X_OK):
            parser.error(f"{args.radiusd_bin / program} not found: pass --radiusd-bin DIR (a virtualenv's bin/)")

    base = Path(tempfile.mkdtemp(prefix="radiusd-overload."))
    users = [(f"bench{index:02d}", f"bench-password-{index:02d}") for index in range(args.users)]
    users_file = base / "mixed-users.txt"   # every user twice: the right password, then a wrong one
    users_file.write_text("".join(f"{name}:{password}\n{name}:{password}-wrong\n" for name, password in users))
    budget = args.budget if args.budget is not None else DEFAULT_BUDGET
    print(f"overload: radiusd from {args.radiusd_bin}; work dirs under {base}; auth_threads {args.threads}, "
          f"{len(users)} users, half the requests with a wrong password; factors {args.factors} for "
          f"{args.overload_duration:g} s each, NAS timeout {args.timeout:g} s; request_budget_seconds "
          f"{'not set' if args.budget is None else f'{args.budget:g}'}", flush=True)

    started = time.monotonic()
    capacity_result, phases, failures = None, [], []
    template = Radiusd(base, "template", args.threads, users, args.radiusd_bin, None, budget=args.budget)
    try:
        template.prepare()
        capacity = args.capacity
        if capacity is None:
            capacity_result = measure_capacity(args, base, template, users_file)
            capacity = capacity_result["rps"]
            print(f"overload: capacity {capacity:.1f} req/s (closed loop, window {args.capacity_window}, "
                  f"p50 {capacity_result['p50_ms']} ms), radiusd {capacity_result['version']}", flush=True)
        for factor in factors:
            try:
                result = overload_phase(args, base, template, users_file, factor, capacity)
            except ScenarioFailed as exc:
                failures.append(f"{factor:g}x: {exc}")
                print(f"overload: {factor:g}x FAILED {exc}", flush=True)
                continue
            phases.append(result)
            print(f"overload: {factor:g}x = {result['offered']:g}/s: goodput {result['goodput']:.1f}/s "
                  f"({result['goodput_pct']:.0f} %), p99 {result['p99_ms']} ms, timeouts {result['timeout']}, "
                  f"late {result['late']}, dropped {reasons(result['dropped'])}, audit rows {result['audit_rows']} "
                  f"vs replies {result['replies_received']}, drain {result['drain_s']} s, "
                  f"errors {result['errors']}", flush=True)
    except ScenarioFailed as exc:
        failures.append(str(exc))
        print(f"overload: FAILED {exc}", flush=True)

    rows = ([capacity_row(capacity_result)] if capacity_result else []) + [phase_row(r) for r in phases]
    print()
    print(table(rows, COLUMNS))
    print()
    print(f"offered: open-loop requests/s, each waiting {args.timeout:g} s (a NAS's timeout); goodput: "
          "requests answered within it per second (first request to last answer), % cap: of capacity;\np50/p99: of the "
          "answered requests; late: replies after the timeout; drops and decisions: the server's counters "
          "over the phase;\naudit rows: 'auth' rows written during the phase (until the server is idle) vs "
          "replies the generator received (answered + late);\npeak RSS: VmHWM; drain: seconds from the last "
          "request sent to the last decision audited ('+': still busy after --settle-max).")
    for result in phases:
        print(f"goals at {result['factor']:g}x: " + "; ".join(goals(result, budget)))
    print(f"total {time.monotonic() - started:.0f} s")

    errors = [f"{r['factor']:g}x: {r['errors']} generator errors" for r in phases if r["errors"]]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(dict(
        radiusd_bin=str(args.radiusd_bin), budget=args.budget, threads=args.threads, users=args.users,
        timeout=args.timeout, overload_duration=args.overload_duration,
        capacity=capacity_result["rps"] if capacity_result else args.capacity, capacity_run=capacity_result,
        phases=phases, failures=failures), indent=1) + "\n")
    print(f"results: {args.json}")
    if args.keep or failures:
        print(f"work dirs kept under {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    for failure in failures + errors:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures or errors else 0


if __name__ == "__main__":
    sys.exit(main())
