"""The engine helper: one SQLAlchemy engine per process, with SQLite tuned for concurrent use.

SQLite runs in WAL mode with a busy timeout; writers use ``BEGIN IMMEDIATE`` (through
``Database.writer``) so that two writers queue on the lock instead of failing on upgrade.
PostgreSQL connections have a connect timeout and TCP keepalives, so neither a server that
accepts and never answers nor a dead peer can hold a thread forever.

``Database.probe`` is the health check: a connection of its own (never one from the request
pool, so a busy pool does not fail it and a stale one does not pass it), bounded by the
caller's timeout, that must also be able to write.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError

from radiusd.config import ConfigError
from sqlalchemy.pool import NullPool

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_SECONDS = 5  # libpq counts whole seconds, at least 2
# libpq connection parameters; the URL's query string may set any of them differently.
PG_CONNECT_ARGS = {
    "connect_timeout": PG_CONNECT_TIMEOUT_SECONDS,
    "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
    "tcp_user_timeout": 30_000,  # ms that sent data may stay unacknowledged before the connection dies
}
PROBE_TABLE = "users"  # every login writes it: a lock on it (a migration, a LOCK TABLE) stalls them all


class Database:
    """Engine plus the write-flavoured view of it; thread-safe, shared by every worker thread."""

    def __init__(self, url: str, *, pool_size: int = 8, create: bool = True):
        """``create=False``: a SQLite file that does not exist is a ConfigError, not a new
        empty database (only ``radiusd-admin db upgrade`` creates one)."""
        try:
            self.url = make_url(url)
            if not create and self.is_sqlite and self.url.database not in (None, "", ":memory:") \
                    and not Path(self.url.database).exists():
                raise ConfigError(f"database {self.url.database} does not exist: create it with "
                                  "`radiusd-admin db upgrade`")
            self.engine = _create(url, pool_size=pool_size, create=create)
        except (ArgumentError, ImportError) as exc:  # a malformed URL, a driver not installed
            raise ConfigError(f"[database] url cannot be used: {type(exc).__name__}: {exc}") from None
        self.writer: Engine = self.engine.execution_options(write=True)
        self._probe_engine = _create(url, create=create, poolclass=NullPool)  # a fresh connection per probe

    @property
    def is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def ping(self) -> None:
        """Raise if the database does not answer a trivial query."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def probe(self, timeout: float) -> None:
        """Raise unless the database answers and grants a writer's lock within about ``timeout``
        seconds (and the connect timeout): SQLite's write lock and a rolled-back write (a locked,
        read-only or unwritable file fails), PostgreSQL's lock on the users table in a writable
        transaction (a standby, a read-only session or a held table lock fails)."""
        milliseconds = max(1, int(timeout * 1000))
        with self._probe_engine.connect() as conn:  # closing it rolls the probe's transaction back
            if self.is_sqlite:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={milliseconds}")
                conn.rollback()  # of the plain BEGIN that the pragma auto-began
                conn.execution_options(write=True).begin()  # BEGIN IMMEDIATE: the write lock
                version = conn.exec_driver_sql("PRAGMA user_version").scalar()
                conn.exec_driver_sql(f"PRAGMA user_version={int(version)}")  # a write, never committed
                return
            conn.begin()
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {milliseconds}")
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {milliseconds}")
            if conn.exec_driver_sql("SELECT current_setting('transaction_read_only')").scalar() == "on":
                raise ReadOnlyDatabase("the database accepts no writes (a standby or a read-only session)")
            conn.exec_driver_sql(f"LOCK TABLE {PROBE_TABLE} IN ROW EXCLUSIVE MODE")

    def dispose(self) -> None:
        self.engine.dispose()
        self._probe_engine.dispose()


class ReadOnlyDatabase(Exception):
    """The database answers but refuses writes."""


def _create(url: str, create: bool = True, **options) -> Engine:
    parsed = make_url(url)
    if "pool_size" in options:
        options["max_overflow"] = options["pool_size"]
    if parsed.get_backend_name() != "sqlite":
        connect_args = {key: value for key, value in PG_CONNECT_ARGS.items() if key not in parsed.query}
        pooled = {"pool_pre_ping": True, "pool_timeout": 5} if "pool_size" in options else {}
        return create_engine(url, connect_args=connect_args, hide_parameters=True, **pooled, **options)
    database = parsed.database or ""
    if create and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10},
                           hide_parameters=True, **options)

    @event.listens_for(engine, "connect")
    def _tune(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        immediate = conn.get_execution_options().get("write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
