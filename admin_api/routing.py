"""The HTTP layer of the admin API: a route table served by one twisted.web resource.

The reactor thread only matches the route, refuses oversized bodies and writes replies. All
else — token check, scope check, parsing the query and the JSON body with pydantic, the
handler and its database work — runs in a worker pool (``deferToThreadPool``) and hands back
a frozen ``Reply`` with the body already encoded. Every reply is counted in
``radiusd_admin_http_requests_total{method, route, status}`` with the route's template.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from http import HTTPStatus
from typing import Callable
from urllib.parse import parse_qsl, unquote

from pydantic import BaseModel, ValidationError
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from radiusd.errors import backend_of
from radiusd.polling import poll
from radiusd.services import ServiceError, first_error
from radiusd.services.api_clients import ApiPrincipal

from .problems import CONTENT_TYPE as PROBLEM_CONTENT_TYPE
from .problems import Problem, from_service_error, insufficient_scope, invalid_token, missing_token
from .streaming import ChunkProducer, Stream

log = Logger(namespace="radiusd.admin_api")

MAX_BODY_BYTES = 1024 * 1024
JSON_CONTENT_TYPE = "application/json"
METHOD_LABELS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})  # else "other"
UNMATCHED_ROUTE = "unmatched"

PUBLIC: frozenset[str] = frozenset()
ADMIN = frozenset({"admin"})
AGENT = frozenset({"agent"})
USER = frozenset({"user"})
DEVICE = frozenset({"device"})  # authenticator apps, with the device token of /mobile/activate


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
class Poll:
    """A handler's "not yet" (long polls, a held push): ``attempt`` runs again in the route's
    pool every ``interval`` seconds, on reactor timers, until it returns a Reply; after
    ``within`` seconds (None: no limit) ``expired`` is answered. No thread waits in between."""

    attempt: Callable[[], "Reply | None"]
    interval: float
    within: float | None = None
    expired: "Reply | None" = None
    client: str = ""


@dataclass(frozen=True)
class Await:
    """A handler's "the reactor decides": ``start()`` runs on the reactor once the handler
    returned and gives a Deferred of the Reply (``POST /auth``, decided by
    ``Authentication.decide`` like any Access-Request). No thread waits for it."""

    start: Callable[[], "Deferred"]
    client: str = ""


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
        object.__setattr__(self, "segments", tuple(self.template.strip("/").split("/")))

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


@dataclass(frozen=True)
class RawRequest:
    """The parts of an HTTP request a handler may read, copied off the twisted request."""

    method: str
    query: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


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


class ApiRequest(server.Request):
    """A request whose body is kept only up to its route's limit (``MAX_BODY_BYTES`` for
    JSON); past that it is discarded as it arrives and the request is answered 413. Form
    bodies are not parsed by twisted."""

    _parsePOSTFormSubmission = False
    body_too_large = False
    body_limit = MAX_BODY_BYTES

    def gotLength(self, length):
        site_limit = getattr(getattr(self.channel, "site", None), "body_limit", None)
        if site_limit is not None:  # the channel knows the path before the request does
            self.body_limit = site_limit(getattr(self.channel, "_path", b""))
        if length is not None and length > self.body_limit:
            self.body_too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self.body_too_large:
            return
        if self.content.tell() + len(data) > self.body_limit:
            self.body_too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


class ApiSite(server.Site):
    requestFactory = ApiRequest
    noisy = False

    def log(self, request):
        """The API resource writes its own access line (route template, never the query)."""

    def body_limit(self, path: bytes) -> int:
        router = getattr(self.resource, "router", None)
        return router.body_limit(path) if router is not None else MAX_BODY_BYTES


def parse_query(model: type[BaseModel] | None, pairs: tuple[tuple[str, str], ...]) -> BaseModel | None:
    data: dict[str, str] = {}
    for name, value in pairs:
        if "\x00" in name or "\x00" in value:
            raise Problem(400, "bad_request", "the query string contains a NUL character")
        if name in data:
            raise Problem(422, "invalid", f"query parameter {name} is given twice", field=name)
        data[name] = value
    if model is None:
        if data:
            name = sorted(data)[0]
            raise Problem(422, "unknown_field", f"unknown query parameter {name}", field=name)
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_service_error(first_error(exc)) from None


TEXT_MEDIA_ALIASES = {"text/csv": frozenset({"text/csv", "application/csv", "text/plain"})}


def parse_body(model: type[BaseModel] | None, raw: RawRequest,
               media_type: str = JSON_CONTENT_TYPE) -> BaseModel | None:
    """JSON body → validated model (strict types, unknown fields refused). A route of another
    media type (text/csv) gets its body checked for presence and type, and reads it itself."""
    if media_type != JSON_CONTENT_TYPE:
        if not raw.body.strip():
            raise Problem(422, "invalid", f"a {media_type} request body is required", field="body")
        if raw.content_type not in TEXT_MEDIA_ALIASES.get(media_type, {media_type}):
            raise Problem(415, "unsupported_media_type", f"send the request body as {media_type}")
        return None
    if model is None:
        if raw.body.strip() not in (b"", b"{}"):
            raise Problem(422, "invalid", "this route takes no request body")
        return None
    if not raw.body.strip():
        raise Problem(422, "invalid", "a JSON request body is required", field="body")
    if raw.content_type != JSON_CONTENT_TYPE and not raw.content_type.endswith("+json"):
        raise Problem(415, "unsupported_media_type", "send the request body as application/json")
    if b"\\u0000" in raw.body:  # no text we store may hold NUL (PostgreSQL refuses it)
        raise Problem(422, "invalid", "text must not contain NUL characters")
    try:
        return model.model_validate_json(raw.body, strict=True)
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            raise Problem(400, "invalid_json", "the request body is not valid JSON") from None
        raise from_service_error(first_error(exc)) from None


class ApiResource(Resource):
    """The whole admin API as one leaf resource over a ``Router``."""

    isLeaf = True

    def __init__(self, router: Router, *, reactor, pools: dict, authenticate: Callable[[str], ApiPrincipal | None],
                 metrics):
        super().__init__()
        self.router = router
        self.reactor = reactor
        self.pools = pools
        self.authenticate = authenticate
        self.metrics = metrics

    # -- reactor thread ----------------------------------------------------------------------------

    def render(self, request):
        received = self.reactor.seconds()
        method = request.method.decode("ascii", "replace").upper()
        template = UNMATCHED_ROUTE
        try:
            route, params = self.router.match(method, path_segments(request.path))
            template = route.template
            if request.body_too_large:
                raise Problem(413, "payload_too_large", f"request bodies are limited to {request.body_limit} bytes")
            raw = self._copy(request, method)
        except Problem as problem:
            template = getattr(getattr(problem, "route", None), "template", template)
            self._send(Reply.problem(problem), request, method, template, received)
            return server.NOT_DONE_YET
        done = deferToThreadPool(self.reactor, self.pools["api"], self.execute, route, params, raw)
        done.addCallback(self._poll, request)
        done.addErrback(self._crashed)
        done.addCallback(self._send, request, method, template, received)
        done.addErrback(lambda failure: log.failure("could not send an API reply", failure=failure))
        return server.NOT_DONE_YET

    def _copy(self, request, method: str) -> RawRequest:
        query = request.uri.split(b"?", 1)[1] if b"?" in request.uri else b""
        try:
            pairs = tuple(parse_qsl(query.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            raise Problem(400, "bad_request", "the query string is not UTF-8") from None
        headers = {name.decode("latin-1").lower(): values[-1].decode("latin-1")
                   for name, values in request.requestHeaders.getAllRawHeaders()}
        address = request.getClientAddress()
        peer = (getattr(address, "host", ""), getattr(address, "port", 0))
        return RawRequest(method, pairs, headers, request.content.read(), peer)

    def _poll(self, reply, request):
        """A Reply as is; an ``Await`` started; a ``Poll`` asked again on reactor timers
        (stopped if the client leaves)."""
        if isinstance(reply, Await):
            client = reply.client
            return reply.start().addCallback(lambda answer: replace(answer, client=client))
        if not isinstance(reply, Poll):
            return reply
        expired, client = reply.expired, reply.client
        deadline = None if reply.within is None else self.reactor.seconds() + reply.within
        waiting = poll(self.reactor, self.pools["api"], lambda: self.guarded(reply.attempt, client),
                       reply.interval, deadline=deadline,
                       expired=None if expired is None else lambda: replace(expired, client=client))
        request.notifyFinish().addErrback(lambda _: waiting.cancel())
        return waiting

    def _crashed(self, failure) -> Reply:
        if failure.check(CancelledError):  # the client went away during a long poll: never written
            return Reply.empty(204)
        log.failure("API handler failed", failure=failure)
        return Reply.problem(Problem(500, "internal_error", "internal error"))

    def _send(self, reply: Reply, request, method: str, template: str, received: float) -> None:
        delay = received + reply.hold_seconds - self.reactor.seconds()
        if delay > 0:
            self.reactor.callLater(delay, self._write, reply, request, method, template, received)
        else:
            self._write(reply, request, method, template, received)

    def _write(self, reply: Reply, request, method: str, template: str, received: float) -> None:
        self.metrics.admin_http_requests.labels(
            method=method if method in METHOD_LABELS else "other", route=template, status=str(reply.status)).inc()
        log.info("API {method} {route} {status} {duration_ms:.1f}ms {client}", method=method, route=template,
                 status=reply.status, duration_ms=(self.reactor.seconds() - received) * 1000, client=reply.client)
        if request._disconnected:
            return
        request.setResponseCode(reply.status, HTTPStatus(reply.status).phrase.encode())
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        for name, value in reply.headers:
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        if reply.content_type:
            request.setHeader(b"content-type", reply.content_type.encode())
        if isinstance(reply, Stream):  # no length: chunked, produced in the API pool as the client reads
            ChunkProducer(self.reactor, self.pools["api"], request, reply.chunks).start()
            return
        if reply.status != 204:
            request.setHeader(b"content-length", str(len(reply.body)).encode())
        if reply.body:
            request.write(reply.body)
        request.finish()

    # -- worker thread -------------------------------------------------------------------------------

    def execute(self, route: Route, params: dict[str, str], raw: RawRequest) -> Reply | Poll:
        principal = None

        def handle():
            nonlocal principal
            principal = self.authorize(route, raw)
            call = Call(route, params, raw, principal) if route.raw else \
                Call(route, params, raw, principal, parse_query(route.query, raw.query),
                     parse_body(route.body, raw, route.media_type))
            return route.handler(call)

        reply = self.guarded(handle)
        if principal is not None:
            reply = replace(reply, client=principal.client_id)
        return reply

    def guarded(self, handler: Callable[[], "Reply | Poll | None"], client: str = ""):
        """``handler()``, with service and database errors as problem replies."""
        try:
            reply = handler()
        except Problem as problem:
            reply = Reply.problem(problem)
        except ServiceError as error:
            reply = Reply.problem(from_service_error(error))
        except Exception as error:
            if backend_of(error) != "db":
                raise
            log.error("API request failed: database error {error}", error=type(error).__name__)
            reply = Reply.problem(Problem(503, "backend_error", "the database is not available; try again"))
        return replace(reply, client=client) if client and reply is not None else reply

    def authorize(self, route: Route, raw: RawRequest) -> ApiPrincipal | None:
        """RFC 6750: the token from the Authorization header only; then the route's scopes."""
        if not route.scopes:
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
        principal = self.authenticate(token)
        if principal is None:
            raise invalid_token()
        if principal.type not in route.scopes:
            raise insufficient_scope(route.scopes)
        return principal
