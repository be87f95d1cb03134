"""Errors as RFC 9457 problem details: ``type``, ``title``, ``status``, ``detail`` and a stable
``code`` (the same codes the services raise, plus the HTTP layer's own)."""

from __future__ import annotations

from http import HTTPStatus

from radiusd.services import Conflict, Invalid, NotFound, ServiceError

PROBLEM_TYPE = "urn:radiusd:problem:"
CONTENT_TYPE = "application/problem+json"


class Problem(Exception):
    """Raised anywhere in a handler; becomes one problem+json reply."""

    def __init__(self, status: int, code: str, detail: str, *, headers: tuple = (), **extra):
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = tuple(headers)
        self.extra = extra

    def document(self) -> dict:
        return {"type": PROBLEM_TYPE + self.code, "title": HTTPStatus(self.status).phrase, "status": self.status,
                "detail": self.detail, "code": self.code, **self.extra}


SERVICE_STATUS = ((NotFound, 404), (Conflict, 409), (Invalid, 422))


def from_service_error(error: ServiceError) -> Problem:
    """A service's error, with its own code: 404 unknown, 409 duplicate, 422 invalid."""
    status = next((status for kind, status in SERVICE_STATUS if isinstance(error, kind)), 422)
    extra = {"field": error.field} if status == 422 and error.field else {}
    return Problem(status, error.code, error.detail, **extra)


def bearer_challenge(error: str | None = None, scope: str | None = None) -> tuple:
    """RFC 6750 §3 ``WWW-Authenticate``: no error code when no token was presented."""
    if error is None:
        return (("WWW-Authenticate", 'Bearer realm="radiusd"'),)
    value = f'Bearer error="{error}"' + (f', scope="{scope}"' if scope else "")
    return (("WWW-Authenticate", value),)


def missing_token() -> Problem:
    return Problem(401, "missing_token", "this route needs an access token in the Authorization header "
                   "(Authorization: Bearer TOKEN)", headers=bearer_challenge())


def invalid_token() -> Problem:
    return Problem(401, "invalid_token", "the access token is malformed, expired or revoked",
                   headers=bearer_challenge("invalid_token"))


def insufficient_scope(allowed: frozenset[str]) -> Problem:
    scope = " ".join(sorted(allowed))
    return Problem(403, "insufficient_scope", f"this route is for API clients of type {scope.replace(' ', ' or ')}",
                   headers=bearer_challenge("insufficient_scope", scope))
