"""Use-cases shared by the admin CLI and the admin API, and the errors they raise.

Each error carries a stable ``code`` that the API puts in problem+json and the CLI prints.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime, timezone
from typing import Callable

from pydantic import ValidationError


class Clocked:
    """``now()`` as an aware UTC datetime from the object's ``clock`` (a time.time-like
    callable, so tests can move time)."""

    clock: Callable[[], float]

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)


class ServiceError(Exception):
    code = "error"

    def __init__(self, field: str, detail: str):
        super().__init__(detail)
        self.field = field
        self.detail = detail


class Invalid(ServiceError):
    code = "invalid"


class UnknownField(Invalid):
    """A field the object does not have, or may not be written (no mass assignment)."""

    code = "unknown_field"


class Conflict(ServiceError):
    code = "conflict"


class NotFound(ServiceError):
    code = "not_found"

    def __init__(self, kind: str, name: str):
        super().__init__(kind, f"{kind} {name} not found")


def check_name(value: str, field: str, max_length: int) -> str:
    """A name (of a user, an operator, an API client): 1 to ``max_length`` characters, none a
    control or format character."""
    if not 1 <= len(value) <= max_length:
        raise Invalid(field, f"{field} must be 1 to {max_length} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise Invalid(field, f"{field} must not contain control characters")
    return value


def first_error(error: ValidationError) -> Invalid:
    """The first pydantic error as one readable ``Invalid``."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "body"
    if first["type"] == "extra_forbidden":
        return UnknownField(field, f"unknown field {field}")
    message = first["msg"].removeprefix("Value error, ")
    return Invalid(field, f"{field}: {message}")
