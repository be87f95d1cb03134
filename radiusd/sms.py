"""SMS gateways: ``file`` (one line per message in a spool file; development and tests) and
``http`` (a provider's REST endpoint). Both run in the worker pool; any failure raises
``BackendError("sms")`` so the login fails closed. Codes are never logged."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from urllib.parse import quote, quote_plus

from radiusd.errors import BackendError

if TYPE_CHECKING:  # the plugin imports this module
    from radiusd.plugins.sms_otp import SmsSection


class FileGateway:
    """Appends ``<UTC time> <E.164 phone> <message>`` to the spool file."""

    def __init__(self, settings: SmsSection):
        self.path = settings.spool_path
        self._lock = threading.Lock()

    def send(self, phone: str, message: str) -> None:
        line = f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} {phone} {message}\n"
        try:
            with self._lock:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                with os.fdopen(descriptor, "a") as spool:
                    spool.write(line)
        except OSError as exc:
            raise BackendError("sms", f"spool not writable: {exc.strerror}") from None


def _escape_body(value: str, content_type: str) -> str:
    if "json" in content_type:
        return json.dumps(value)[1:-1]
    if "x-www-form-urlencoded" in content_type:
        return quote_plus(value)
    return value


def fill(template: str, phone: str, message: str, escape) -> str:
    return template.replace("{phone}", escape(phone)).replace("{message}", escape(message))


class HttpGateway:
    """One HTTP request per message; a status outside ``success_statuses``, a connection
    error or no answer within ``timeout_seconds`` is a failure."""

    def __init__(self, settings: SmsSection):
        self.settings = settings

    def send(self, phone: str, message: str) -> None:
        settings = self.settings
        url = fill(settings.url, phone, message, lambda value: quote(value, safe=""))
        data = None
        if settings.method != "GET":
            data = fill(settings.body, phone, message,
                        lambda value: _escape_body(value, settings.content_type)).encode()
        request = urllib.request.Request(url, data=data, method=settings.method)
        if data is not None:
            request.add_header("Content-Type", settings.content_type)
        for name, value in settings.headers.items():
            request.add_header(name, value.reveal())
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout_seconds) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (urllib.error.URLError, OSError) as exc:
            raise BackendError("sms", f"gateway unreachable: {type(exc).__name__}") from None
        if status not in settings.success_statuses:
            raise BackendError("sms", f"gateway answered HTTP {status}")


def make_gateway(settings: SmsSection):
    return HttpGateway(settings) if settings.gateway == "http" else FileGateway(settings)
