"""``POST /oauth/token``: OAuth 2.0 client credentials grant (RFC 6749 §4.4, errors §5.2).

The client authenticates with HTTP Basic (RFC 6749 §2.3.1: id and secret form-encoded, then
base64) or with ``client_id``/``client_secret`` form fields, never both. Token requests are
rate-limited per client id by an in-process token bucket (per server process: with
``workers > 1`` only the first process serves the API). Error replies are problem+json that
also carry RFC 6749's ``error`` member, so OAuth client libraries understand them.
"""

from __future__ import annotations

import base64
import binascii
import math
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Callable
from urllib.parse import parse_qsl, unquote_plus

from radiusd.services import Invalid
from radiusd.services.api_clients import ApiClientService

from .problems import Problem
from .reply import Reply
from .router import Call

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
GRANT_TYPE = "client_credentials"
ALLOWED_FIELDS = frozenset({"grant_type", "client_id", "client_secret", "scope"})
BASIC_CHALLENGE = (("WWW-Authenticate", 'Basic realm="radiusd"'),)


def oauth_problem(status: int, error: str, detail: str, headers: tuple = (), **extra) -> Problem:
    return Problem(status, error, detail, headers=headers, error=error, error_description=detail, **extra)


class TokenBucket:
    """``rate`` requests per minute per key, in bursts of up to ``rate``; thread-safe.

    Remembers at most ``max_keys`` keys (the least recently used go first), so made-up client
    ids cannot grow it without bound."""

    def __init__(self, rate_per_minute: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000):
        self.capacity = float(rate_per_minute)
        self.per_second = rate_per_minute / 60.0
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if the request may go ahead, else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.per_second)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.per_second
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


def parse_form(call: Call) -> dict[str, str]:
    if call.raw.content_type != FORM_CONTENT_TYPE:
        raise oauth_problem(400, "invalid_request", f"send the token request as {FORM_CONTENT_TYPE}")
    if call.raw.query:
        raise oauth_problem(400, "invalid_request", "token request parameters go in the body, not the URL")
    try:
        pairs = parse_qsl(call.raw.body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise oauth_problem(400, "invalid_request", "the form body is not valid") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:  # RFC 6749 §3.2
            raise oauth_problem(400, "invalid_request", f"parameter {name} is given twice")
        if name not in ALLOWED_FIELDS:
            raise oauth_problem(400, "invalid_request", f"unsupported parameter {name}")
        form[name] = value
    return form


def client_credentials(call: Call, form: dict[str, str]) -> tuple[str, str]:
    header = call.raw.headers.get("authorization")
    in_form = "client_id" in form or "client_secret" in form
    if header is not None:
        if in_form:
            raise oauth_problem(400, "invalid_request", "authenticate the client one way: Basic or form fields")
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            raise invalid_client()
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise invalid_client() from None
        client_id, separator, secret = decoded.partition(":")
        if not separator:
            raise invalid_client()
        return unquote_plus(client_id), unquote_plus(secret)
    if not in_form:
        raise invalid_client()
    return form.get("client_id", ""), form.get("client_secret", "")


def invalid_client() -> Problem:
    """The same answer for an unknown client, a wrong secret and missing credentials."""
    return oauth_problem(401, "invalid_client", "client authentication failed", headers=BASIC_CHALLENGE)


class TokenEndpoint:
    def __init__(self, clients: Callable[[], ApiClientService], limiter: TokenBucket):
        self.clients = clients
        self.limiter = limiter

    def __call__(self, call: Call) -> Reply:
        form = parse_form(call)
        client_id, secret = client_credentials(call, form)
        wait = self.limiter.take(client_id[:256])
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise Problem(429, "rate_limited", f"too many token requests for this client; retry in {seconds} s",
                          headers=(("Retry-After", str(seconds)),))
        grant = form.get("grant_type")
        if grant is None:
            raise oauth_problem(400, "invalid_request", "grant_type is required")
        if grant != GRANT_TYPE:
            raise oauth_problem(400, "unsupported_grant_type", f"only grant_type={GRANT_TYPE} is supported")
        try:
            token = self.clients().issue_token(client_id, secret, form.get("scope"))
        except Invalid as exc:
            raise oauth_problem(400, "invalid_scope", exc.detail) from None
        if token is None:
            raise invalid_client()
        return replace(Reply.json(token, headers=(("Pragma", "no-cache"),)), client=client_id)
