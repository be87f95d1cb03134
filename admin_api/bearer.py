"""Bearer token authorization (RFC 6750) of the API routes.

A route admits API client types (its scopes); a token from the ``Authorization`` header names
the client, whose type must be one of them. Runs in the worker thread: the token lookup reads
the database.
"""

from __future__ import annotations

from typing import Callable

from radiusd.services.api_clients import ApiPrincipal

from .problems import Problem, insufficient_scope, invalid_token, missing_token
from .request import RawRequest

PUBLIC: frozenset[str] = frozenset()
ADMIN = frozenset({"admin"})
AGENT = frozenset({"agent"})
USER = frozenset({"user"})
DEVICE = frozenset({"device"})  # authenticator apps, with the device token of /mobile/activate


def authorize(scopes: frozenset[str], raw: RawRequest,
              authenticate: Callable[[str], ApiPrincipal | None]) -> ApiPrincipal | None:
    """The principal of the request's token, if ``scopes`` admit its type (None for a public
    route). The token is taken from the Authorization header only, never the query string."""
    if not scopes:
        return None
    if any(name == "access_token" for name, _ in raw.query):
        raise Problem(400, "invalid_request", "send the access token in the Authorization header only")
    header = raw.headers.get("authorization")
    if header is None:
        raise missing_token()
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise invalid_token()
    principal = authenticate(token)
    if principal is None:
        raise invalid_token()
    if principal.type not in scopes:
        raise insufficient_scope(scopes)
    return principal
