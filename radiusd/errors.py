"""Where failures become protocol outcomes: exactly one function, ``to_decision``."""

from __future__ import annotations

from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.logger import Logger
from twisted.python.failure import Failure

from radiusd.decisions import BackendFailure
from radiusd.logs import FailureLog

log = Logger(namespace="radiusd.pipeline")
failures = FailureLog(log)


class BackendError(Exception):
    """A backend (db, ldap, sms, plugin) could not answer; the request fails closed."""

    def __init__(self, backend: str, detail: str = ""):
        super().__init__(f"{backend}: {detail}" if detail else backend)
        self.backend = backend
        self.detail = detail


def backend_of(error: BaseException) -> str:
    if isinstance(error, BackendError):
        return error.backend
    module = type(error).__module__
    if module.startswith(("sqlalchemy", "sqlite3", "psycopg")):
        return "db"
    if module.startswith("ldap3"):
        return "ldap"
    return "plugin"


def to_decision(failure: Failure) -> BackendFailure:
    """Any exception or timeout out of the pipeline: never an Accept, always a BackendFailure."""
    error = failure.value
    if isinstance(error, DeferredTimeout):
        backend = "plugin"
        log.error("pipeline timed out")
    else:
        backend = backend_of(error)
        failures.failure("pipeline failed in backend {backend}", failure, backend=backend)
    return BackendFailure(backend=backend, detail=type(error).__name__)
