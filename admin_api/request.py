"""What the API reads from an HTTP request, and the limits it reads it under.

``ApiRequest`` keeps a body only up to its route's limit (413 past it); ``RawRequest`` is the
copy of a request a handler may read; ``parse_query`` and ``parse_body`` validate the query
string and the body with the route's pydantic models (strict, unknown fields refused) before
the handler runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ValidationError
from twisted.web import server

from radiusd.services import first_error

from .problems import Problem, from_service_error
from .reply import JSON_CONTENT_TYPE

MAX_BODY_BYTES = 1024 * 1024
TEXT_MEDIA_ALIASES = {"text/csv": frozenset({"text/csv", "application/csv", "text/plain"})}


@dataclass(frozen=True)
class RawRequest:
    """The parts of an HTTP request a handler may read, copied off the twisted request."""

    method: str
    query: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    body: bytes
    peer: tuple[str, int]
    secure: bool = False  # came over TLS

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


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
