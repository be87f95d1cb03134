"""The password hashing pool of bulk imports and resets: argon2id on several threads."""

from __future__ import annotations

import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable

from radiusd.crypto import PasswordHasher

# In the server, imports and bulk resets hash on half the cores: RADIUS logins keep the rest.
SERVER_HASH_THREADS = max(1, (os.cpu_count() or 1) // 2)


class ImportCancelled(Exception):
    """The import was stopped (server shutting down) before anything was written."""


def default_hash_threads() -> int:
    return max(1, os.cpu_count() or 1)


def hash_passwords(hasher: PasswordHasher, passwords: list[str], threads: int,
                   progress: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> list[str]:
    """argon2id hashes of ``passwords`` (same order) on ``threads`` threads: argon2-cffi releases
    the GIL, so they use as many cores. At most two tasks per thread are queued, so a stop or
    an error leaves nothing long to drain; ``progress(1)`` is called (in this thread) per hash."""
    results: list[str | None] = [None] * len(passwords)
    if not passwords:
        return []
    pending_inputs = iter(enumerate(passwords))
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(passwords))),
                            thread_name_prefix="radiusd-import-hash") as pool:
        def submit_next() -> bool:
            item = next(pending_inputs, None)
            if item is None:
                return False
            index, password = item
            running.add(pool.submit(lambda: (index, hasher.hash(password))))
            return True

        running: set = set()
        try:
            for _ in range(2 * threads):
                if not submit_next():
                    break
            while running:
                done, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                if stop is not None and stop.is_set():
                    raise ImportCancelled("stopped before anything was written")
                for future in done:
                    index, hashed = future.result()
                    results[index] = hashed
                    if progress is not None:
                        progress(1)
                    submit_next()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return results
