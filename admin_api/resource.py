"""The admin API as one twisted.web resource over a ``Router``, and its thread dispatch.

The reactor thread only matches the route, refuses oversized bodies and writes replies. All
else — token check, scope check, parsing the query and the JSON body with pydantic, the
handler and its database work — runs in a worker pool (``deferToThreadPool``) and hands back
a frozen ``Reply`` with the body already encoded. Every reply is counted in
``radiusd_admin_http_requests_total{method, route, status}`` with the route's template.
"""

from __future__ import annotations

from dataclasses import replace
from http import HTTPStatus
from typing import Callable
from urllib.parse import parse_qsl

from twisted.internet.defer import CancelledError
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from radiusd.errors import backend_of
from radiusd.polling import poll
from radiusd.services import ServiceError
from radiusd.services.api_clients import ApiPrincipal

from .bearer import authorize
from .problems import Problem, from_service_error
from .reply import Await, Poll, Reply
from .request import RawRequest, parse_body, parse_query
from .router import Call, Route, Router, path_segments
from .streaming import ChunkProducer, Stream

log = Logger(namespace="radiusd.admin_api")

METHOD_LABELS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})  # else "other"
UNMATCHED_ROUTE = "unmatched"


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
        return RawRequest(method, pairs, headers, request.content.read(), peer, request.isSecure())

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
            principal = authorize(route.scopes, raw, self.authenticate)
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
