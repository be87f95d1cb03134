"""Structured logs: one JSON object per line (or plain text), through twisted.logger.

Messages use constant format strings with fields; callers never put a password, OTP, State,
seed, secret or token into a field, and a test holds them to it.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)

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
