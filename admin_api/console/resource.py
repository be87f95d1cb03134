"""The console on the admin API's machinery: ``ConsoleResource`` is an ``ApiResource`` (route
matching, the API pool, access log and metrics) whose handlers are console views, and
``AdminRoot`` puts it beside the API on one site (``/`` → ``/console/``).

Every route names the roles that may use it (``Route.scopes``; empty: no login needed), and
``ConsoleResource.handle`` enforces them, the Origin check and the CSRF token, in one place,
before any view runs.
"""

from __future__ import annotations

import json

from twisted.web.resource import Resource

from radiusd.services.audit import record_event
from radiusd.services.operators import operator_actor

from ..problems import CONTENT_TYPE as PROBLEM_CONTENT_TYPE
from ..reply import Reply
from ..resource import ApiResource
from ..router import Route
from .pages import Page, redirect, render
from .session import SECURITY_HEADERS, Visit, parse_form, read_cookie, same_origin

CONSOLE = b"/console/"


class ConsoleResource(ApiResource):
    def __init__(self, router, *, reactor, pools: dict, metrics, services, secure_cookies):
        super().__init__(router, reactor=reactor, pools=pools, authenticate=lambda token: None, metrics=metrics)
        self.services = services  # the server's Services
        self.secure_cookies = secure_cookies  # "auto", True or False

    # -- worker thread -------------------------------------------------------------------------------

    def execute(self, route: Route, params: dict[str, str], raw) -> Reply:
        return self.guarded(lambda: self.handle(route, params, raw))

    def handle(self, route: Route, params: dict[str, str], raw) -> Reply:
        secure = raw.secure if self.secure_cookies == "auto" else bool(self.secure_cookies)
        visit = Visit(raw, params, secure)
        visit.session_id, visit.csrf_token = read_cookie(raw)
        visit.session = self.services.console_sessions.validate(visit.session_id)
        if visit.session is None and visit.session_id:
            visit.expire()  # ended or timed out
        visit.form = parse_form(raw)
        if raw.method == "POST":
            refusal = "origin" if not same_origin(raw) else "csrf" if not visit.csrf_valid() else None
            if refusal:
                record_event(self.services.resources.database, "console", result="reject", reason=refusal,
                             actor=operator_actor(visit.operator or "anonymous"),
                             detail={"route": route.template, "source": visit.source})
                return render("error.html", visit, status=403, heading="Request refused",
                              message="This form has expired or came from another site. Go back, reload the "
                                      "page and try again.")
        if route.scopes:  # the role table: a full (MFA-completed) session with one of these roles
            if visit.session is None or visit.session.mfa_pending:
                return redirect("/console/login", visit)
            if visit.session.role not in route.scopes:
                return render("error.html", visit, status=403, heading="Not allowed",
                              message=f"The {visit.session.role} role cannot use this page.")
        return route.handler(visit)

    # -- reactor thread ------------------------------------------------------------------------------

    def _write(self, reply: Reply, request, method: str, template: str, received: float) -> None:
        if reply.content_type == PROBLEM_CONTENT_TYPE:  # a routing or service error, as a page
            reply = error_page(reply)
        for name, value in SECURITY_HEADERS:
            request.setHeader(name.encode(), value.encode())
        for cookie in getattr(reply, "cookies", ()):
            request.responseHeaders.addRawHeader(b"set-cookie", cookie.encode("latin-1"))
        super()._write(reply, request, method, template, received)


def error_page(reply: Reply) -> Page:
    detail = json.loads(reply.body).get("detail", "")
    page = render("error.html", None, status=reply.status, heading="Something went wrong", message=detail)
    return Page(page.status, page.body, page.content_type, reply.headers, client=reply.client)


class AdminRoot(Resource):
    """The admin site's root: ``/console/...`` to the console, ``/`` redirected there, the
    rest to the API."""

    isLeaf = True

    def __init__(self, api: ApiResource, console: ConsoleResource | None):
        super().__init__()
        self.api = api
        self.console = console
        self.router = api.router  # ApiSite reads the body limits from it

    def render(self, request):
        if self.console is not None:
            if request.path in (b"/", b"/console") and request.method in (b"GET", b"HEAD"):
                request.setResponseCode(302)
                request.setHeader(b"location", CONSOLE)
                return b""
            if request.path.startswith(CONSOLE):
                return self.console.render(request)
        return self.api.render(request)
