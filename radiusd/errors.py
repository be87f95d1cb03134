"""Backend failures: the exception a plugin raises when its store cannot answer, and which
backend an exception belongs to (the ``backend`` label of ``radiusd_backend_errors_total``).

Where a failure becomes an outcome: ``Authentication.to_decision`` for authentication, the
admin API's ``guarded`` for HTTP, ``admin_cli.operation`` for the CLI; all three ask
``backend_of``.
"""

from __future__ import annotations


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
