"""The route table: each operation's method, path template, handler, scopes and request
models, and the matching of a request path against the templates.

The router is written by hand (some fifty lines of matching) rather than taken from klein or
routes: its templates are spelled exactly as the OpenAPI paths (``/api/v1/users/{username}``),
so ``tests/admin_api/test_contract.py`` compares ``Router.operations()`` with ``openapi.yaml``
directly, and the same template is the ``route`` label of
``radiusd_admin_http_requests_total`` — a bounded label, never the raw path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import unquote

from pydantic import BaseModel

from radiusd.services.api_clients import ApiPrincipal

from .problems import Problem
from .reply import JSON_CONTENT_TYPE, Reply
from .request import MAX_BODY_BYTES, RawRequest


@dataclass(frozen=True)
class Route:
    """One operation: method, path template, handler and the API client types it admits
    (empty: no token needed). ``body``/``query`` are the pydantic models the request is
    validated with before the handler runs."""

    method: str
    template: str
    handler: Callable[["Call"], Reply]
    scopes: frozenset[str]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    raw: bool = False  # the handler reads query and body itself (the form-encoded token request)
    media_type: str = JSON_CONTENT_TYPE  # another one (text/csv): the handler reads call.raw.body
    max_body_bytes: int = MAX_BODY_BYTES
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "segments", tuple(self.template[1:].split("/")))  # "/console/" ends in ""

    @property
    def literal_segments(self) -> int:
        return sum(1 for segment in self.segments if not segment.startswith("{"))

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        params = {}
        for pattern, segment in zip(self.segments, segments):
            if pattern.startswith("{"):
                if not segment:
                    return None
                params[pattern[1:-1]] = segment
            elif pattern != segment:
                return None
        return params


@dataclass
class Call:
    """One request as a handler sees it (in a worker thread)."""

    route: Route
    params: dict[str, str]
    raw: RawRequest
    principal: ApiPrincipal | None
    query: BaseModel | None = None
    body: BaseModel | None = None

    @property
    def actor(self) -> str:
        return self.principal.actor if self.principal else "anonymous"


def path_segments(path: bytes) -> list[str]:
    """``/api/v1/users/a%2Fb`` → ``["api", "v1", "users", "a/b"]`` (percent-decoded, UTF-8)."""
    try:
        text = path.decode("ascii")
    except UnicodeDecodeError:
        raise Problem(400, "bad_request", "the request path is not ASCII") from None
    if not text.startswith("/"):
        raise Problem(404, "not_found", "no such route")
    try:
        segments = [unquote(segment, errors="strict") for segment in text[1:].split("/")]
    except UnicodeDecodeError:
        raise Problem(400, "bad_request", "the request path is not UTF-8") from None
    if any("\x00" in segment for segment in segments):
        raise Problem(400, "bad_request", "the request path contains a NUL character")
    return segments


class Router:
    def __init__(self, routes: list[Route]):
        self.routes = list(routes)
        seen = set()
        for route in self.routes:
            key = (route.method, route.template)
            if key in seen:
                raise ValueError(f"route {route.method} {route.template} is registered twice")
            seen.add(key)

    def operations(self) -> set[tuple[str, str]]:
        """Every (method, template) served: the OpenAPI document must list exactly these."""
        return {(route.method, route.template) for route in self.routes}

    def match(self, method: str, segments: list[str]) -> tuple[Route, dict[str, str]]:
        """The route for this request; literal segments beat parameters among the routes
        that serve the method. 404 when no template matches, 405 when none has the method."""
        candidates = [(route, params) for route in self.routes
                      if (params := route.match(segments)) is not None]
        if not candidates:
            raise Problem(404, "not_found", "no such route")
        serving = [(route, params) for route, params in candidates if route.method == method]
        if not serving:
            allowed = ", ".join(sorted({route.method for route, _ in candidates}))
            problem = Problem(405, "method_not_allowed", f"this route allows {allowed}", headers=(("Allow", allowed),))
            problem.route = candidates[0][0]
            raise problem
        return max(serving, key=lambda item: item[0].literal_segments)

    def body_limit(self, path: bytes) -> int:
        """The largest body any route of this path takes (``MAX_BODY_BYTES`` unless a route,
        such as the CSV import, says more); read before the method and body are known."""
        try:
            segments = path_segments(path.split(b"?", 1)[0])
        except Problem:
            return MAX_BODY_BYTES
        return max((route.max_body_bytes for route in self.routes if route.match(segments) is not None),
                   default=MAX_BODY_BYTES)
