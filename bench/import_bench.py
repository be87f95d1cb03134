#!/usr/bin/env python3
"""``make bench`` (second part): ``radiusd-admin import users`` on a fresh SQLite database.

Scenarios (each in its own temporary work dir, ``--users`` users, default 10,000, every one
with its own Framed-IP-Address and ``mfa_exempt``):

* ``plain``: ``username,password,framed_ip_address,mfa_exempt`` (the kit's ``radiusd-csv``
  format): every password is hashed with argon2id at the server's parameters on the import's
  thread pool (one thread per CPU), so this measures hashing throughput.
* ``hash``: ``password_hash`` instead, pre-computed (one argon2id hash, reused on every row: an
  import stores a hash as it is, so its cost does not depend on which hash it is).

For each: ``radiusd-admin db upgrade``, then the dry run and then ``--apply`` as separate
processes, each timed (wall clock) with its peak resident memory (``ru_maxrss`` of the child,
from ``os.wait4``). A final ``user show`` checks that the last user is there. Prints one table
and writes the figures to ``--json`` (default bench/out/import.json).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent

HASH_SCRIPT = r"""
from radiusd.config import SecuritySection
from radiusd.crypto import PasswordHasher
print(PasswordHasher(SecuritySection()).hash("pw-bench"))
"""


def server_env() -> dict:
    return {key: value for key, value in os.environ.items() if not key.startswith("RADIUSD_")}


def write_config(directory: Path) -> Path:
    config = directory / "radiusd.toml"
    config.write_text("\n".join([
        "# written by bench/import_bench.py",
        "[security]", f"seed_key = {{ file = {json.dumps(str(directory / 'seed.key'))} }}", "",
        "[database]", f"url = {json.dumps('sqlite:///' + str(directory / 'radiusd.db'))}", "",
    ]))
    return config


def write_users(path: Path, count: int, password_hash: str | None) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(["username", "password_hash" if password_hash else "password", "framed_ip_address",
                         "mfa_exempt"])
        for index in range(count):
            address = "10.%d.%d.%d" % (100 + (index >> 16) % 100, (index >> 8) & 255, index & 255)
            writer.writerow([f"user{index:05d}", password_hash or f"pw-{index}-bench", address, "true"])


def run_child(command: list[str], cwd: Path) -> dict:
    """``command`` as a direct child reaped with ``os.wait4``: wall time and peak RSS (MiB)."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.Popen(command, cwd=cwd, env=server_env(), stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return {"seconds": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                "exit": process.returncode, "stdout": out.read().decode(), "stderr": err.read().decode()}


def scenario(name: str, args, base: Path, password_hash: str | None) -> dict:
    directory = Path(tempfile.mkdtemp(prefix=f"import-{name}.", dir=base))
    admin = [str(args.bin / "radiusd-admin"), "--config", str(write_config(directory)), "--format", "json"]
    upgrade = run_child(admin + ["db", "upgrade"], directory)
    if upgrade["exit"] != 0:
        raise SystemExit(f"{name}: db upgrade failed: {upgrade['stderr'].strip()[-300:]}")
    users = directory / "users.csv"
    write_users(users, args.users, password_hash)
    row = {"scenario": name, "users": args.users, "file_mib": round(users.stat().st_size / 2 ** 20, 2),
           "threads": os.cpu_count()}
    for step, extra in (("dry_run", []), ("apply", ["--apply"])):
        result = run_child(admin + ["import", "users", str(users), *extra], directory)
        if result["exit"] != 0:
            raise SystemExit(f"{name} {step}: exit {result['exit']}: {result['stderr'].strip()[-300:]}")
        report = json.loads(result["stdout"])
        row[f"{step}_seconds"] = result["seconds"]
        row[f"{step}_peak_rss_mib"] = result["peak_rss_mib"]
        if step == "apply":
            assert report["applied"] and report["created"] == args.users, report
    last = run_child(admin + ["user", "show", f"user{args.users - 1:05d}"], directory)
    row["check"] = "ok" if last["exit"] == 0 else f"user show failed: {last['stderr'].strip()}"
    row["users_per_second"] = round(args.users / row["apply_seconds"], 1)
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="rows per file (%(default)s)")
    parser.add_argument("--scenarios", default="hash,plain", help="comma-separated: hash, plain (%(default)s)")
    parser.add_argument("--bin", type=Path, default=Path(sys.executable).parent,
                        help="directory of radiusd-admin (%(default)s)")
    parser.add_argument("--json", type=Path, default=BENCH / "out" / "import.json", help="results (%(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the work dirs")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="radiusd-import-bench."))
    rows = []
    try:
        for name in args.scenarios.split(","):
            password_hash = None
            if name == "hash":
                password_hash = subprocess.run([str(args.bin / "python"), "-c", HASH_SCRIPT], capture_output=True,
                                               text=True, check=True).stdout.strip()
            elif name != "plain":
                raise SystemExit(f"unknown scenario {name}")
            print(f"import {name}: {args.users} users ...", flush=True)
            rows.append(scenario(name, args, base, password_hash))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    columns = ["scenario", "users", "file_mib", "threads", "dry_run_seconds", "dry_run_peak_rss_mib",
               "apply_seconds", "apply_peak_rss_mib", "users_per_second", "check"]
    widths = [max(len(column), *(len(str(row[column])) for row in rows)) for column in columns]
    print("  ".join(column.ljust(width) for column, width in zip(columns, widths)))
    for row in rows:
        print("  ".join(str(row[column]).ljust(width) for column, width in zip(columns, widths)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
