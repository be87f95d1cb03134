"""Bulk operations on local users, shared by ``radiusd-admin`` and the admin API (SPEC §5): CSV
import (``csv_import``: a dry run, then one transaction) and export (``csv_export``) in the
format of ``cells``, bulk password reset and bulk expiration. Passwords are hashed on a pool of
threads (``hashing``).

Nothing secret is ever put in a report, an error message, an audit event or a log line.
"""

from __future__ import annotations

import secrets
import threading
from typing import Callable, Iterable, Iterator

from sqlalchemy import bindparam, select, update

from radiusd.crypto import PasswordHasher
from radiusd.db.engine import Database
from radiusd.db.tables import users, utcnow
from radiusd.dictionary import RadiusDictionary
from radiusd.services import Invalid, NotFound
from radiusd.services.audit import record_event
from radiusd.services.csv_export import EXPORT_PAGE_ROWS, write_csv
from radiusd.services.csv_import import ImportPlan, Importer
from radiusd.services.hashing import default_hash_threads, hash_passwords
from radiusd.services.users import DEFAULT_PHONE_REGION, Status, chunks, filter_users, parse_fields, to_view

GENERATED_PASSWORD_LENGTH = 20
PASSWORD_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/l/I


def generate_password() -> str:
    """A random password from ``secrets`` (20 characters of 57: about 116 bits)."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


class BulkService:
    """Import, export, bulk password reset and bulk expiration (SPEC §5)."""

    def __init__(self, database: Database, hasher: PasswordHasher, dictionary: RadiusDictionary,
                 actor: str = "cli", *, hash_threads: int | None = None, sessions=None,
                 phone_region: str = DEFAULT_PHONE_REGION):
        self.database = database
        self.phone_region = phone_region
        self.hasher = hasher
        self.dictionary = dictionary
        self.actor = actor
        self.hash_threads = hash_threads or default_hash_threads()
        self.sessions = sessions  # a SessionService: users expired here have their sessions ended

    def _audit(self, action: str, **detail) -> None:
        record_event(self.database, "admin", result="ok", reason=action, actor=self.actor, detail=detail)

    # -- import ------------------------------------------------------------------------------------

    def import_users(self, data: bytes, *, apply: bool = False, on_conflict: str = "fail",
                     progress: Callable[[int], None] | None = None) -> dict:
        """Validate ``data``; with ``apply``, write it all in one transaction (or nothing)."""
        plan = self.plan_import(data, on_conflict)
        return self.apply_import(plan, progress=progress) if apply else plan.report(dry_run=True, applied=False)

    def plan_import(self, data: bytes, on_conflict: str = "fail") -> ImportPlan:
        return self._importer().plan(data, on_conflict)

    def apply_import(self, plan: ImportPlan, *, progress: Callable[[int], None] | None = None,
                     stop: threading.Event | None = None) -> dict:
        """Write a plan without errors in one transaction; a plan with errors writes nothing."""
        report = self._importer().apply(plan, progress=progress, stop=stop)
        if report["applied"]:
            self._audit("user.import", rows=plan.row_count, created=report["created"], updated=report["updated"],
                        skipped=report["skipped"], passwords_hashed=plan.to_hash, on_conflict=plan.on_conflict)
        return report

    def _importer(self) -> Importer:
        return Importer(self.database, self.hasher, self.dictionary, self.hash_threads, self.phone_region)

    # -- export ------------------------------------------------------------------------------------

    def export_csv(self, progress: Callable[[int], None] | None = None,
                   page_rows: int = EXPORT_PAGE_ROWS) -> Iterator[bytes]:
        """The CSV export in chunks (``csv_export.write_csv``), audited once it is complete."""
        count = yield from write_csv(self.database, progress, page_rows)
        self._audit("user.export", count=count)

    # -- bulk password reset -------------------------------------------------------------------------

    def reset_passwords(self, usernames: list[str] | None = None, *, status: Status | None = None,
                        q: str | None = None, max_users: int | None = None,
                        progress: Callable[[int], None] | None = None) -> dict:
        """New random passwords for the named users, or for the local users a filter selects;
        each is returned this once, and the old ones stop working at once."""
        if usernames is not None and (status or q):
            raise Invalid("usernames", "give usernames or a filter (status, q), not both")
        now = utcnow()
        with self.database.engine.connect() as conn:
            if usernames is not None:
                names = _unique(usernames)
                if not names:
                    raise Invalid("usernames", "name at least one user")
                found = {}
                for chunk in chunks(names):
                    found.update((row.username, row) for row in conn.execute(
                        select(users.c.id, users.c.username, users.c.source).where(users.c.username.in_(chunk))))
                for name in names:
                    if name not in found:
                        raise NotFound("user", name)
                    if found[name].source != "local":
                        raise Invalid("usernames", f"{name} is a directory user: its password lives in the directory")
                targets = [found[name] for name in names]
            else:
                if not status and not q:
                    raise Invalid("usernames", "give usernames or a filter (status, q)")
                query = filter_users(select(users.c.id, users.c.username).where(users.c.source == "local"),
                                     now, q=q, status=status).order_by(users.c.username)
                targets = conn.execute(query).all()
                if max_users is not None and len(targets) > max_users:
                    raise Invalid("status" if status else "q", f"the filter selects {len(targets)} users; "
                                                               f"at most {max_users} at once: narrow it")
        passwords = [generate_password() for _ in targets]
        hashes = hash_passwords(self.hasher, passwords, self.hash_threads, progress)
        if targets:
            with self.database.writer.begin() as conn:
                conn.execute(update(users).where(users.c.id == bindparam("match_id"))
                             .values(password_hash=bindparam("new_hash"), updated_at=now),
                             [{"match_id": row.id, "new_hash": hashed} for row, hashed in zip(targets, hashes)])
        selection = {"usernames": len(targets)} if usernames is not None else \
            {name: value for name, value in (("status", status), ("q", q)) if value}
        self._audit("user.bulk_password_reset", count=len(targets), selection=selection)
        items = [{"username": row.username, "password": password} for row, password in zip(targets, passwords)]
        return {"count": len(targets), "items": items}

    # -- bulk expiration -----------------------------------------------------------------------------

    def set_expiration(self, usernames: list[str], expires_at) -> dict:
        """Set ``expires_at`` (None: never) for every named user, all or none; users whose new
        date has passed are expired at once and their open sessions are terminated."""
        when = parse_fields({"expires_at": expires_at}, partial=True)["expires_at"]
        names = _unique(usernames)
        if not names:
            raise Invalid("usernames", "name at least one user")
        now = utcnow()
        with self.database.writer.begin() as conn:
            found = set()
            for chunk in chunks(names):
                found.update(conn.execute(select(users.c.username).where(users.c.username.in_(chunk))).scalars())
            for name in names:
                if name not in found:
                    raise NotFound("user", name)
            for chunk in chunks(names):
                conn.execute(update(users).where(users.c.username.in_(chunk)).values(expires_at=when, updated_at=now))
        expired = when is not None and when <= now
        if expired:
            self.terminate_sessions_of_expired(names)
        self._audit("user.bulk_expiration", count=len(names), expires_at=when.isoformat() if when else None,
                    expired=expired)
        with self.database.engine.connect() as conn:
            rows = []
            for chunk in chunks(names):
                rows.extend(conn.execute(select(users).where(users.c.username.in_(chunk))).all())
        views = sorted((to_view(row) for row in rows), key=lambda view: view["username"])
        return {"count": len(names), "expires_at": when, "expired": expired, "items": views}

    def terminate_sessions_of_expired(self, usernames: list[str]) -> None:
        """SPEC §4: expiring a user terminates that user's open sessions. With the server's
        sessions service, each user's expiry is noticed now (audit event ``expired``, then a
        Disconnect-Request per open session); without one, the server's periodic expiry
        sweep does the same shortly after."""
        if self.sessions is None:
            return
        for name in usernames:
            self.sessions.notice_expiry(name)
