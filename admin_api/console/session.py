"""The console's side of a browser session: the cookie, the CSRF token of its forms, the Origin
check and the headers every console page carries (SPEC §10).

One cookie, ``radiusd_console``, holds ``<session id>.<CSRF token>`` (HttpOnly, SameSite=Strict,
Secure per ``[console] secure_cookies``); before login it holds only ``.<CSRF token>`` so the
login form has a token too. The database keeps digests of both (services/console_sessions.py),
so a state-changing post passes only with the token of the session it comes with.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl

from ..problems import Problem
from ..request import RawRequest
from radiusd.services.console_sessions import TOKEN_BYTES, ConsoleSession, NewSession

COOKIE = "radiusd_console"
COOKIE_PATH = "/console/"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
SECURITY_HEADERS = (
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                "form-action 'self'; base-uri 'none'"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)


def read_cookie(raw: RawRequest) -> tuple[str | None, str | None]:
    """(session id, CSRF token) from the cookie; either may be None."""
    try:
        jar = SimpleCookie(raw.headers.get("cookie", ""))
    except CookieError:
        return None, None
    morsel = jar.get(COOKIE)
    if morsel is None or "." not in morsel.value:
        return None, None
    session_id, csrf = morsel.value.split(".", 1)
    return session_id or None, csrf or None


def cookie_header(value: str, secure: bool, *, clear: bool = False) -> str:
    flags = "; Max-Age=0" if clear else ""
    return f"{COOKIE}={value}; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict{'; Secure' if secure else ''}{flags}"


def parse_form(raw: RawRequest) -> dict[str, str]:
    """A form post's fields (the last of a repeated name); GET and empty bodies give {}."""
    if raw.method != "POST" or not raw.body:
        return {}
    if raw.content_type != FORM_CONTENT_TYPE:
        raise Problem(415, "unsupported_media_type", f"send the form as {FORM_CONTENT_TYPE}")
    try:
        return dict(parse_qsl(raw.body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        raise Problem(400, "bad_request", "the form body is not valid") from None


def same_origin(raw: RawRequest) -> bool:
    """The post came from a page of this site. Chromium sends ``Origin: null`` with
    ``Sec-Fetch-Site: same-origin`` on form posts under ``Referrer-Policy: no-referrer``."""
    origin, site = raw.headers.get("origin"), raw.headers.get("sec-fetch-site")
    expected = f"{'https' if raw.secure else 'http'}://{raw.headers.get('host', '')}"
    if origin in (None, "null"):
        return site == "same-origin"
    return origin == expected


@dataclass
class Visit:
    """One console request as a view sees it (in a worker thread)."""

    raw: RawRequest
    params: dict[str, str]
    secure_cookies: bool
    session: ConsoleSession | None = None
    session_id: str | None = None
    csrf_token: str | None = None  # the cookie's: rendered into every form
    form: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)  # Set-Cookie values of the answer

    @property
    def source(self) -> str:
        return self.raw.peer[0]

    @property
    def operator(self) -> str | None:
        return self.session.operator if self.session else None

    def csrf_valid(self) -> bool:
        """The form's token is the session's (or, before login, the cookie's own)."""
        token = self.form.get("csrf_token")
        if self.session is not None:
            return self.session.csrf_valid(token)
        return bool(token and self.csrf_token and hmac.compare_digest(token, self.csrf_token))

    def ensure_csrf(self) -> str:
        """A CSRF token for a form shown before login, set in the cookie if there was none."""
        if self.csrf_token is None:
            self.csrf_token = secrets.token_urlsafe(TOKEN_BYTES)
            self.cookies.append(cookie_header(f".{self.csrf_token}", self.secure_cookies))
        return self.csrf_token

    def start(self, session: NewSession) -> None:
        """Carry a new session from now on (its id and CSRF token in the cookie)."""
        self.session_id, self.csrf_token = session.id, session.csrf_token
        self.cookies.append(cookie_header(f"{session.id}.{session.csrf_token}", self.secure_cookies))

    def expire(self) -> None:
        """The cookie's session has ended: keep only its CSRF token, as before a login."""
        self.session_id = None
        self.cookies.append(cookie_header(f".{self.csrf_token or ''}", self.secure_cookies))

    def forget(self) -> None:
        self.session = self.session_id = self.csrf_token = None
        self.cookies.append(cookie_header("", self.secure_cookies, clear=True))
