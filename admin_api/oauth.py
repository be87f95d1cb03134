"""``POST /oauth/token``: OAuth 2.0 client credentials grant (RFC 6749 §4.4, errors §5.2).

The client authenticates with HTTP Basic (RFC 6749 §2.3.1: id and secret form-encoded, then
base64) or with ``client_id``/``client_secret`` form fields, never both. Unknown parameters
are ignored (RFC 6749 §3.2).

Only failed authentications are limited (in-process token buckets; with ``workers > 1`` only
the first process serves the API): past ``token_requests_per_minute`` failures from one source
address the answer is 429 with Retry-After, and past as many against one client id the failure
answers are held back (slowed) up to ``MAX_FAILURE_HOLD_SECONDS``. The secret is checked first
(a keyed digest, no slow hash), so a correct secret is never refused because of others'
failures: client ids appear in access logs, and anyone could otherwise lock a client out.
Error replies are problem+json that also carry RFC 6749's ``error`` member, so OAuth client
libraries understand them.
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
MAX_FAILURE_HOLD_SECONDS = 2.0
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
        if name in form:  # RFC 6749 §3.2: "MUST NOT be included more than once"
            raise oauth_problem(400, "invalid_request", f"parameter {name} is given twice")
        form[name] = value  # unrecognised ones too: §3.2 says to ignore them, and nothing reads them
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
    """``failures_by_address`` and ``failures_by_client`` count failed authentications only."""

    def __init__(self, clients: Callable[[], ApiClientService], failures_by_address: TokenBucket,
                 failures_by_client: TokenBucket):
        self.clients = clients
        self.failures_by_address = failures_by_address
        self.failures_by_client = failures_by_client

    def __call__(self, call: Call) -> Reply:
        form = parse_form(call)
        grant = form.get("grant_type")
        if grant is None:
            raise oauth_problem(400, "invalid_request", "grant_type is required")
        if grant != GRANT_TYPE:
            raise oauth_problem(400, "unsupported_grant_type", f"only grant_type={GRANT_TYPE} is supported")
        try:
            client_id, secret = client_credentials(call, form)
        except Problem as problem:
            if problem.status != 401:
                raise
            return self._failed(call, "", problem)
        try:
            token = self.clients().issue_token(client_id, secret, form.get("scope"))
        except Invalid as exc:
            raise oauth_problem(400, "invalid_scope", exc.detail) from None
        if token is None:
            return self._failed(call, client_id, invalid_client())
        return replace(Reply.json(token, headers=(("Pragma", "no-cache"),)), client=client_id)

    def _failed(self, call: Call, client_id: str, problem: Problem) -> Reply:
        """A failed authentication: counted against its source address (429 once past the
        limit) and its client id (the answer held back once past it)."""
        wait = self.failures_by_address.take(call.raw.peer[0])
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            problem = Problem(429, "rate_limited", f"too many failed token requests from this address; retry in "
                              f"{seconds} s", headers=(("Retry-After", str(seconds)),))
        hold = min(MAX_FAILURE_HOLD_SECONDS, self.failures_by_client.take(client_id[:256])) if client_id else 0.0
        return replace(Reply.problem(problem), hold_seconds=hold, client=client_id)
