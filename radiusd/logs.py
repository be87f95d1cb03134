"""Structured logs: one JSON object per line (or plain text), through twisted.logger.

Messages use constant format strings with fields; callers never put a password, OTP, State,
seed, secret or token into a field, and a test holds them to it.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    Logger,
    formatEvent,
    globalLogBeginner,
)
from twisted.python.failure import Failure

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
RESERVED = ("log_", "message", "format", "isError", "failure", "why", "system", "time")


def to_json_line(event: dict) -> str:
    record = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(timespec="milliseconds"),
        "level": event["log_level"].name if "log_level" in event else "info",
        "logger": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if not key.startswith(RESERVED) and key not in record:
            record[key] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    if "log_failure" in event:
        record["traceback"] = event["log_failure"].getTraceback()
    return json.dumps(record, ensure_ascii=False)


def to_text_line(event: dict) -> str:
    stamp = datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    line = f"{stamp} [{event.get('log_namespace', '')}] {formatEvent(event)}"
    if "log_failure" in event:
        line += "\n" + event["log_failure"].getTraceback()
    return line


def make_observer(stream, fmt: str = "json", level: str = "info"):
    render = to_json_line if fmt == "json" else to_text_line

    def observe(event: dict) -> None:
        stream.write(render(event) + "\n")
        stream.flush()

    predicate = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    return FilteringLogObserver(observe, [predicate])


def start_logging(fmt: str = "json", level: str = "info", stream=None) -> None:
    globalLogBeginner.beginLoggingTo([make_observer(stream or sys.stdout, fmt, level)],
                                     redirectStandardIO=False)


class Throttle:
    """Lets the first event of each key through, then at most one per ``interval_seconds``,
    counting the ones held back in between; the next one let through carries that count.

    Keys are things like (source, reason) or an exception type. A flood of distinct keys
    (spoofed source addresses) is bounded: past ``max_keys``, keys whose interval has passed
    are forgotten (losing their held-back counts), and if none has, the new key shares one
    overflow key. Safe to call from any thread."""

    OVERFLOW = ("overflow",)

    def __init__(self, *, interval_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 1024):
        self.interval_seconds = interval_seconds
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._shown_at: dict = {}  # key → when an event of it was last let through
        self._held_back: dict = {}

    def admit(self, key) -> int | None:
        """None: hold this event back. Else let it through: the number held back since the last."""
        now = self.clock()
        with self._lock:
            if key not in self._shown_at and len(self._shown_at) >= self.max_keys:
                self._forget_before(now - self.interval_seconds)
                if len(self._shown_at) >= self.max_keys:
                    key = self.OVERFLOW
            shown_at = self._shown_at.get(key)
            if shown_at is not None and now - shown_at < self.interval_seconds:
                self._held_back[key] = self._held_back.get(key, 0) + 1
                return None
            self._shown_at[key] = now
            return self._held_back.pop(key, 0)

    def _forget_before(self, moment: float) -> None:
        for key in [key for key, shown_at in self._shown_at.items() if shown_at <= moment]:
            del self._shown_at[key]
            self._held_back.pop(key, None)


class FailureLog:
    """Failed requests, logged quietly: one line each with the exception's type, and its
    traceback at most once per exception type per ``interval_seconds``.

    A backend outage fails every request the same way; a full traceback each (4 KB at level
    critical) flooded the log with 5 MB per 1,000 requests. The traceback line that ends a
    quiet spell says how many tracebacks of that type were left out since the last one. Safe
    to call from any thread (the admin API runs the pipeline in its own threads)."""

    def __init__(self, log: Logger, *, interval_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.tracebacks = Throttle(interval_seconds=interval_seconds, clock=clock)

    def failure(self, format: str, failure: Failure | None = None, **fields) -> None:
        """Log ``format`` (a constant, with ``fields``) and the failure's type as ``{error}``;
        the current exception when ``failure`` is None."""
        if failure is None:
            failure = Failure()
        error = type(failure.value).__name__
        left_out = self.tracebacks.admit(f"{type(failure.value).__module__}.{type(failure.value).__qualname__}")
        if left_out is not None:
            self.log.failure(format + ": {error} (traceback; {tracebacks_left_out} of this type left out since the last)",
                             failure=failure, error=error, tracebacks_left_out=left_out, **fields)
        else:
            self.log.error(format + ": {error}", error=error, **fields)
