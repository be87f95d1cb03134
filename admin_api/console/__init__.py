"""The web console (SPEC §10), installed as ``radiusd.admin_api.console``: server-rendered pages
under ``/console/`` on the admin site, a third caller of ``radiusd.services`` beside the API and
the CLI.

``resource`` (the console on the API's twisted.web machinery; the role, Origin and CSRF checks),
``session`` (cookie, CSRF token, security headers), ``pages`` (Jinja2 rendering, autoescaped),
one module of views per screen (``login``, ``dashboard``), ``templates/`` and ``static/``.
``build_routes`` below is the role table: every console route names the roles that may use it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from ..problems import Problem
from ..router import Route, Router
from .dashboard import DashboardViews
from .login import LoginViews
from .pages import Page
from .resource import AdminRoot, ConsoleResource

__all__ = ["AdminRoot", "console_resource"]

STATIC = Path(__file__).with_name("static")
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}

PUBLIC = frozenset()  # no session needed
EVERYONE = frozenset({"admin", "helpdesk", "auditor"})


@cache
def static_file(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def static(visit) -> Page:
    name = visit.params["name"]
    content_type = STATIC_TYPES.get(Path(name).suffix)
    if content_type is None or name not in {path.name for path in STATIC.iterdir()}:
        raise Problem(404, "not_found", "no such file")
    return Page(200, static_file(name), content_type)


def build_routes(services, attempts_per_minute: int) -> list[Route]:
    login, dashboard = LoginViews(services, attempts_per_minute), DashboardViews(services)
    table = [
        ("GET", "/console/static/{name}", static, PUBLIC),
        ("GET", "/console/login", login.form, PUBLIC),
        ("POST", "/console/login", login.submit, PUBLIC),
        ("GET", "/console/login/enrol", login.enrol, PUBLIC),  # these three need the
        ("GET", "/console/login/code", login.code_form, PUBLIC),  # password step's session
        ("POST", "/console/login/code", login.code_submit, PUBLIC),
        ("POST", "/console/logout", login.logout, EVERYONE),
        ("GET", "/console/", dashboard.show, EVERYONE),
    ]
    return [Route(method, template, handler, roles, raw=True) for method, template, handler, roles in table]


def console_resource(runtime, reactor, pools: dict) -> ConsoleResource:
    console = runtime.config.console
    return ConsoleResource(Router(build_routes(runtime.services, console.login_attempts_per_minute)),
                           reactor=reactor, pools=pools, metrics=runtime.metrics, services=runtime.services,
                           secure_cookies=console.secure_cookies)
