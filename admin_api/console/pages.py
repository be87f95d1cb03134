"""What console views answer: a ``Page`` (a ``Reply`` that may set the session cookie),
rendered from the Jinja2 templates (autoescaped) or a redirect."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from ..reply import Reply
from .session import Visit

HERE = Path(__file__).parent
HTML = "text/html; charset=utf-8"
templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

# The left navigation: (path, label, roles that see it). Part 2 adds the other screens here.
NAVIGATION = (("/console/", "Dashboard", frozenset({"admin", "helpdesk", "auditor"})),)


@dataclass(frozen=True, slots=True)
class Page(Reply):
    cookies: tuple[str, ...] = ()


def render(template: str, visit: Visit | None, *, status: int = 200, **context) -> Page:
    role = visit.session.role if visit and visit.session and not visit.session.mfa_pending else None
    body = templates.get_template(template).render(
        operator=visit.operator if role else None, role=role, csrf_token=visit.csrf_token if visit else None,
        navigation=[(path, label) for path, label, roles in NAVIGATION if role in roles], **context)
    return Page(status, body.encode(), HTML, cookies=tuple(visit.cookies) if visit else ())


def redirect(location: str, visit: Visit | None = None) -> Page:
    return Page(303, b"", None, (("Location", location),), cookies=tuple(visit.cookies) if visit else ())
