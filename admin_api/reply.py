"""What a handler answers: a ``Reply`` (status, headers and the body already encoded), or a
``Poll`` when the answer is not ready yet. Both are frozen: they cross from the worker thread
back to the reactor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Callable

from .problems import CONTENT_TYPE as PROBLEM_CONTENT_TYPE
from .problems import Problem

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

JSON_CONTENT_TYPE = "application/json"


def _json_default(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode_json(document) -> bytes:
    return json.dumps(document, default=_json_default, ensure_ascii=False, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Reply:
    """What a handler answers; crosses back to the reactor with the body already encoded."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    hold_seconds: float = 0.0  # answered no earlier than this long after receipt (reject delay)
    client: str = ""  # the API client, for the access log

    @classmethod
    def json(cls, document, status: int = 200, *, headers: tuple = (), hold_seconds: float = 0.0) -> "Reply":
        return cls(status, encode_json(document), JSON_CONTENT_TYPE, tuple(headers), hold_seconds)

    @classmethod
    def empty(cls, status: int = 204) -> "Reply":
        return cls(status)

    @classmethod
    def problem(cls, problem: Problem) -> "Reply":
        return cls(problem.status, encode_json(problem.document()), PROBLEM_CONTENT_TYPE, problem.headers)


@dataclass(frozen=True)
class Await:
    """A handler's "the reactor decides": ``start()`` runs on the reactor once the handler
    returned and gives a Deferred of the Reply (``POST /auth``, decided by
    ``Authentication.decide`` like any Access-Request). No thread waits for it."""

    start: Callable[[], "Deferred"]
    client: str = ""


@dataclass(frozen=True)
class Poll:
    """A handler's "not yet" (long polls, a held push): ``attempt`` runs again in the route's
    pool every ``interval`` seconds, on reactor timers, until it returns a Reply; after
    ``within`` seconds (None: no limit) ``expired`` is answered. No thread waits in between."""

    attempt: Callable[[], "Reply | None"]
    interval: float
    within: float | None = None
    expired: "Reply | None" = None
    client: str = ""
