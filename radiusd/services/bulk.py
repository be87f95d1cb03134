"""Bulk operations on local users: CSV import (dry run, then one transaction), CSV export,
bulk password reset and bulk expiration, shared by ``radiusd-admin`` and the admin API.

The CSV format (RFC 4180, a header row, UTF-8 with or without a BOM) has one column per user
field of SPEC §5, named as in the API. Empty cells mean "not set" (on ``--on-conflict update``:
cleared to the default). ``mfa_exempt`` and ``enabled`` take true/false (also 1/0, yes/no);
``expires_at`` an ISO 8601 date or date-time (UTC unless it carries an offset); and
``reply_attributes`` ``Name=Value;Name=Value`` with ``\\;`` and ``\\\\`` for a literal ``;`` or
``\\`` in a value. ``password`` (hashed with argon2id on import) or ``password_hash`` (an argon2
or bcrypt hash, stored as is and upgraded to argon2id at the first successful login) are
import-only: the export has no secret. The export's read-only columns (``status``, ``blocked``,
``created_at``, ``updated_at``, ``last_login_at``) are accepted and ignored by the import, so an
export imports as it is.

Cells that a spreadsheet would run as a formula (first character ``=``, ``+``, ``-``, ``@``, tab
or CR) are exported with a ``'`` in front; the import removes exactly one such ``'`` (before
any run of quotes and one of those characters), so an export → import round trip is exact.

Nothing secret is ever put in a report, an error message, an audit event or a log line.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Iterator

from pydantic import ValidationError
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from radiusd.crypto import PasswordHasher, hash_scheme
from radiusd.db.engine import Database
from radiusd.db.tables import users, utcnow
from radiusd.dictionary import RadiusDictionary, UnknownAttribute
from radiusd.services import Conflict, Invalid, NotFound
from radiusd.services.audit import record_event
from radiusd.services.users import (
    FRAMED_IP_KEYWORDS,
    Status,
    UserFields,
    check_password,
    check_username,
    filter_users,
    parse_fields,
    to_view,
)

PROFILE_COLUMNS = ("first_name", "last_name", "email", "phone", "expires_at", "framed_ip_address",
                   "sponsor_name", "sponsor_email", "description", "mfa_exempt", "reply_attributes")
SECRET_COLUMNS = ("password", "password_hash")
READ_ONLY_COLUMNS = ("status", "blocked", "created_at", "updated_at", "last_login_at")
EXPORT_COLUMNS = ("username", *PROFILE_COLUMNS, "enabled", *READ_ONLY_COLUMNS)
IMPORT_COLUMNS = frozenset(EXPORT_COLUMNS) | frozenset(SECRET_COLUMNS)
ON_CONFLICT = ("fail", "skip", "update")

MAX_IMPORT_ROWS = 100_000
MAX_REPORTED_ERRORS = 1000  # the count is always exact; the list stops here
EXPORT_PAGE_ROWS = 500
LOOKUP_CHUNK = 500  # names per IN (...) query
GENERATED_PASSWORD_LENGTH = 20
PASSWORD_ALPHABET = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/l/I

TRUE_WORDS = frozenset({"true", "t", "yes", "y", "1", "on"})
FALSE_WORDS = frozenset({"false", "f", "no", "n", "0", "off"})
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?([Zz]|[+-]\d{2}:?\d{2})?)?")
FORMULA_ESCAPED = re.compile(r"'+[=+\-@\t\r]")
FORMULA_LIKE = re.compile(r"'*[=+\-@\t\r]")
INTEGER_TYPES = frozenset({"integer", "short", "byte", "signed", "integer64", "date"})


class ImportCancelled(Exception):
    """The import was stopped (server shutting down) before anything was written."""


# -- cell formats ------------------------------------------------------------------------------------

def escape_formula(cell: str) -> str:
    """A cell as exported: a ``'`` in front of anything a spreadsheet would evaluate."""
    return "'" + cell if FORMULA_LIKE.match(cell) else cell


def unescape_formula(cell: str) -> str:
    """The inverse of ``escape_formula``: one leading ``'`` before quotes and a formula character."""
    return cell[1:] if FORMULA_ESCAPED.match(cell) else cell


def format_reply_attributes(attributes: Iterable[dict]) -> str:
    return ";".join(f"{item['name']}={str(item['value']).replace(chr(92), chr(92) * 2).replace(';', chr(92) + ';')}"
                    for item in attributes)


def parse_reply_attributes(cell: str) -> list[dict]:
    """``Name=Value;Name=Value`` (``\\;`` and ``\\\\`` escape) → ``[{name, value}]``; ValueError."""
    items, current, escaped = [], [], False
    for char in cell:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ";":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise ValueError("a backslash must be followed by ; or \\")
    items.append("".join(current))
    attributes = []
    for position, item in enumerate(items, 1):
        if not item.strip():
            continue
        name, separator, value = item.partition("=")
        if not separator or not name.strip():
            raise ValueError(f"item {position} is not Name=Value")
        attributes.append({"name": name.strip(), "value": value.strip()})
    return attributes


def parse_bool(cell: str) -> bool:
    word = cell.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError("must be true or false")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return format_reply_attributes(value)
    return str(value)


def _chunks(items: list, size: int = LOOKUP_CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def errors_in(report: dict) -> str:
    count = report["error_count"]
    return f"{count} error{'' if count == 1 else 's'}"


def generate_password() -> str:
    """A random password from ``secrets`` (20 characters of 57: about 116 bits)."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(GENERATED_PASSWORD_LENGTH))


def default_hash_threads() -> int:
    return max(1, os.cpu_count() or 1)


def hash_passwords(hasher: PasswordHasher, passwords: list[str], threads: int,
                   progress: Callable[[int], None] | None = None, stop: threading.Event | None = None) -> list[str]:
    """argon2id hashes of ``passwords`` (same order) on ``threads`` threads: argon2-cffi releases
    the GIL, so they use as many cores. At most two tasks per thread are queued, so a stop or
    an error leaves nothing long to drain; ``progress(1)`` is called (in this thread) per hash."""
    results: list[str | None] = [None] * len(passwords)
    if not passwords:
        return []
    pending_inputs = iter(enumerate(passwords))
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(passwords))),
                            thread_name_prefix="radiusd-import-hash") as pool:
        def submit_next() -> bool:
            item = next(pending_inputs, None)
            if item is None:
                return False
            index, password = item
            running.add(pool.submit(lambda: (index, hasher.hash(password))))
            return True

        running: set = set()
        try:
            for _ in range(2 * threads):
                if not submit_next():
                    break
            while running:
                done, running = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                if stop is not None and stop.is_set():
                    raise ImportCancelled("stopped before anything was written")
                for future in done:
                    index, hashed = future.result()
                    results[index] = hashed
                    if progress is not None:
                        progress(1)
                    submit_next()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    return results


# -- reading CSV -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    line: int  # the physical line the record starts on (a quoted cell may span lines)
    cells: list[str]


def _error(line: int, column: str | None, message: str) -> dict:
    return {"line": line, "column": column, "message": message}


def read_csv(data: bytes) -> tuple[list[Record], list[dict]]:
    """RFC 4180 records with their line numbers, and fatal errors (not UTF-8, broken quoting,
    too many rows): after one of those nothing further is read."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], [_error(data[:exc.start].count(b"\n") + 1, None, "the file is not UTF-8 text")]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[Record] = []
    last_line = 0
    try:
        for cells in reader:
            start, last_line = last_line + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # blank lines and rows of empty cells
            if len(records) > MAX_IMPORT_ROWS:
                return records, [_error(start, None, f"more than {MAX_IMPORT_ROWS} rows; split the file")]
            records.append(Record(start, cells))
    except csv.Error as exc:
        return records, [_error(last_line + 1, None, f"not valid CSV (in the record starting here): {exc}")]
    return records, []


# -- import plan -------------------------------------------------------------------------------------

@dataclass
class ImportRow:
    line: int
    username: str
    values: dict  # the profile (and enabled) as validated, with defaults for empty cells
    password: str | None = field(default=None, repr=False)  # plaintext: hashed when applied
    password_hash: str | None = field(default=None, repr=False)
    action: str = "create"  # create, update or skip


@dataclass
class ImportPlan:
    """A validated file: what an apply would write, and every error found."""

    on_conflict: str
    columns: list[str]
    rows: list[ImportRow]
    row_count: int
    errors: list[dict]
    existing: frozenset[str] = frozenset()
    named: dict[str, int] = field(default_factory=dict)  # every username in the file → its line

    @property
    def writes(self) -> list[ImportRow]:
        return [row for row in self.rows if row.action != "skip"]

    @property
    def to_hash(self) -> int:
        """Plaintext passwords an apply has to hash."""
        return sum(1 for row in self.writes if row.password is not None)

    def count(self, action: str) -> int:
        return sum(1 for row in self.rows if row.action == action)

    def report(self, *, dry_run: bool, applied: bool) -> dict:
        errors = sorted(self.errors, key=lambda error: (error["line"], error["column"] or ""))
        return {"dry_run": dry_run, "applied": applied, "on_conflict": self.on_conflict, "rows": self.row_count,
                "valid": len(self.rows), "created": self.count("create"), "updated": self.count("update"),
                "skipped": self.count("skip"), "passwords_to_hash": self.to_hash, "error_count": len(errors),
                "errors": errors[:MAX_REPORTED_ERRORS], "errors_truncated": len(errors) > MAX_REPORTED_ERRORS}


def _pydantic_errors(line: int, exc: ValidationError) -> list[dict]:
    found = []
    for error in exc.errors():
        column = str(error["loc"][0]) if error["loc"] else None
        found.append(_error(line, column, f"{column}: {error['msg'].removeprefix('Value error, ')}"))
    return found


class BulkService:
    """Import, export, bulk password reset and bulk expiration (SPEC §5)."""

    def __init__(self, database: Database, hasher: PasswordHasher, dictionary: RadiusDictionary,
                 actor: str = "cli", *, hash_threads: int | None = None, sessions=None):
        self.database = database
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
        if on_conflict not in ON_CONFLICT:
            raise Invalid("on_conflict", f"on_conflict must be one of {', '.join(ON_CONFLICT)}")
        records, errors = read_csv(data)
        if not records:
            return ImportPlan(on_conflict, [], [], 0, errors or [_error(1, None, "the file has no header row")])
        header, body = records[0], records[1:]
        columns = [name.strip().lower() for name in header.cells]
        errors.extend(self._header_errors(header.line, columns))
        plan = ImportPlan(on_conflict, columns, [], len(body), errors)
        if "username" not in columns or len(set(columns)) != len(columns):
            return plan
        for record in body:
            row = self._validate_record(record, columns, errors)
            username = unescape_formula(record.cells[columns.index("username")]) \
                if len(record.cells) == len(columns) else ""
            if username in plan.named:
                errors.append(_error(record.line, "username",
                                     f"duplicate username {username} (first on line {plan.named[username]})"))
                continue
            if username.strip():
                plan.named[username] = record.line
            if row is not None:
                plan.rows.append(row)
        self._check_duplicate_addresses(plan)
        self._check_database(plan)
        return plan

    @staticmethod
    def _header_errors(line: int, columns: list[str]) -> list[dict]:
        errors, seen = [], set()
        for position, name in enumerate(columns, 1):
            if not name:
                errors.append(_error(line, None, f"column {position} has no name"))
            elif name not in IMPORT_COLUMNS:
                errors.append(_error(line, name, f"unknown column {name}; columns are: "
                                                 f"{', '.join(EXPORT_COLUMNS + SECRET_COLUMNS)}"))
            elif name in seen:
                errors.append(_error(line, name, f"column {name} appears twice"))
            seen.add(name)
        if "username" not in seen:
            errors.append(_error(line, "username", "the header has no username column"))
        return errors

    def _validate_record(self, record: Record, columns: list[str], errors: list[dict]) -> ImportRow | None:
        line = record.line
        if len(record.cells) != len(columns):
            errors.append(_error(line, None, f"{len(record.cells)} cells where the header has {len(columns)}"))
            return None
        cells = {name: (value if name in SECRET_COLUMNS else unescape_formula(value))
                 for name, value in zip(columns, record.cells) if name in IMPORT_COLUMNS}
        found = [_error(line, name, f"{name} contains a NUL character")
                 for name, value in cells.items() if "\x00" in value]
        if found:
            errors.extend(found)
            return None
        username = cells["username"]
        if not username.strip():
            found.append(_error(line, "username", "username is missing"))
        else:
            try:
                check_username(username)
            except Invalid as exc:
                found.append(_error(line, "username", exc.detail))
        given, enabled = {}, True
        for name in PROFILE_COLUMNS:
            value = cells.get(name, "")
            if not value.strip():
                continue
            try:
                if name == "reply_attributes":
                    value = parse_reply_attributes(value)
                elif name == "mfa_exempt":
                    value = parse_bool(value)
                elif name == "expires_at":
                    value = value.strip()
                    if not ISO_DATE.fullmatch(value):
                        raise ValueError("must be an ISO 8601 date or date-time, e.g. 2030-01-31 or "
                                         "2030-01-31T17:00:00Z")
            except ValueError as exc:
                found.append(_error(line, name, f"{name}: {exc}"))
                continue
            given[name] = value
        if cells.get("enabled", "").strip():
            try:
                enabled = parse_bool(cells["enabled"])
            except ValueError as exc:
                found.append(_error(line, "enabled", f"enabled: {exc}"))
        values = None
        try:
            values = UserFields.model_validate(given).model_dump()
        except ValidationError as exc:
            found.extend(_pydantic_errors(line, exc))
        if values is not None:
            values["reply_attributes"] = [dict(item) for item in values["reply_attributes"]]
            try:
                values["reply_attributes"] = self._typed_attributes(values["reply_attributes"])
            except ValueError as exc:
                found.append(_error(line, "reply_attributes", f"reply_attributes: {exc}"))
            values["enabled"] = enabled
        password, password_hash = cells.get("password", ""), cells.get("password_hash", "")
        if password and password_hash:
            found.append(_error(line, "password_hash", "give password or password_hash, not both"))
        elif password:
            try:
                check_password(password)
            except Invalid as exc:
                found.append(_error(line, "password", exc.detail))
        elif password_hash and hash_scheme(password_hash.strip()) is None:
            found.append(_error(line, "password_hash", "password_hash is not an argon2 or bcrypt hash"))
        if found:
            errors.extend(found)
            return None
        return ImportRow(line, username, values, password=password or None,
                         password_hash=password_hash.strip() or None)

    def _typed_attributes(self, attributes: list[dict]) -> list[dict]:
        """Validated against the dictionary; numbers of integer attributes stored as numbers
        (as the API stores them), so an export → import round trip keeps their type."""
        typed = []
        for item in attributes:
            name, value = item["name"], item["value"]
            try:
                self.dictionary.validate(name, value)
                kind = self.dictionary.attribute(name).type
            except UnknownAttribute:
                raise ValueError(f"unknown attribute {name}") from None
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{name}: {exc}") from None
            if kind in INTEGER_TYPES and isinstance(value, str) and re.fullmatch(r"-?\d+", value):
                value = int(value)
            typed.append({"name": name, "value": value})
        return typed

    @staticmethod
    def _check_duplicate_addresses(plan: ImportPlan) -> None:
        """The same Framed-IP-Address twice in the file."""
        ip_of: dict[str, int] = {}
        kept = []
        for row in plan.rows:
            address = row.values["framed_ip_address"]
            if address and address not in FRAMED_IP_KEYWORDS:
                if address in ip_of:
                    plan.errors.append(_error(row.line, "framed_ip_address", f"duplicate Framed-IP-Address {address} "
                                                                             f"(first on line {ip_of[address]})"))
                    continue
                ip_of[address] = row.line
            kept.append(row)
        plan.rows = kept

    def _check_database(self, plan: ImportPlan) -> None:
        """Usernames that exist (an error, skipped or updated per ``on_conflict``) and
        Framed-IP-Addresses that another user keeps after the import."""
        valid_lines = {row.line for row in plan.rows}
        with self.database.engine.connect() as conn:
            existing = self._existing(conn, list(plan.named))
            if plan.on_conflict == "fail":  # lines with other errors too: the report is complete
                plan.errors.extend(_error(line, "username", f"user {name} exists already "
                                                            "(choose --on-conflict skip or update)")
                                   for name, line in plan.named.items() if name in existing and line not in valid_lines)
            kept = []
            for row in plan.rows:
                source = existing.get(row.username)
                if source is None:
                    kept.append(row)
                    continue
                if plan.on_conflict == "fail":
                    plan.errors.append(_error(row.line, "username", f"user {row.username} exists already "
                                                                    "(choose --on-conflict skip or update)"))
                    continue
                if plan.on_conflict == "update" and source != "local" and (row.password or row.password_hash):
                    plan.errors.append(_error(row.line, "password" if row.password else "password_hash",
                                              f"{row.username} is a directory user: its password lives in "
                                              "the directory"))
                    continue
                row.action = "skip" if plan.on_conflict == "skip" else "update"
                kept.append(row)
            plan.rows = kept
            plan.existing = frozenset(existing)
            file_ip = {row.values["framed_ip_address"]: row for row in plan.writes
                       if row.values["framed_ip_address"] and row.values["framed_ip_address"] not in FRAMED_IP_KEYWORDS}
            # users updated with a framed_ip_address column give theirs up; everyone else keeps theirs
            giving_up = {row.username for row in plan.writes if row.action == "update"} \
                if "framed_ip_address" in plan.columns else set()
            holders = {}
            for chunk in _chunks(list(file_ip)):
                for username, address in conn.execute(select(users.c.username, users.c.framed_ip_address)
                                                      .where(users.c.framed_ip_address.in_(chunk))):
                    if username not in giving_up:
                        holders.setdefault(address, username)
        failed = set()
        for address, row in file_ip.items():
            holder = holders.get(address)
            if holder is not None and holder != row.username:
                plan.errors.append(_error(row.line, "framed_ip_address",
                                          f"Framed-IP-Address {address} is assigned to user {holder} already"))
                failed.add(row.line)
        plan.rows = [row for row in plan.rows if row.line not in failed]

    @staticmethod
    def _existing(conn, names: list[str]) -> dict[str, str]:
        """username → source, for those of ``names`` that exist."""
        found = {}
        for chunk in _chunks(names):
            found.update(conn.execute(select(users.c.username, users.c.source)
                                      .where(users.c.username.in_(chunk))).all())
        return found

    def apply_import(self, plan: ImportPlan, *, progress: Callable[[int], None] | None = None,
                     stop: threading.Event | None = None) -> dict:
        """Write a plan without errors in one transaction; a plan with errors writes nothing."""
        if plan.errors:
            return plan.report(dry_run=False, applied=False)
        writes = plan.writes
        plaintext = [row for row in writes if row.password is not None]
        hashed = dict(zip((row.line for row in plaintext),
                          hash_passwords(self.hasher, [row.password for row in plaintext], self.hash_threads,
                                         progress, stop)))
        now = utcnow()
        creates, updates = [], {}
        for row in writes:
            password_hash = hashed.get(row.line, row.password_hash)
            if row.action == "create":
                creates.append({**row.values, "username": row.username, "password_hash": password_hash,
                                "source": "local", "created_at": now, "updated_at": now})
                continue
            changes = {name: row.values[name] for name in (*PROFILE_COLUMNS, "enabled") if name in plan.columns}
            if password_hash is not None:
                changes["password_hash"] = password_hash
            changes["updated_at"] = now
            updates.setdefault(tuple(sorted(changes)), []).append(
                {"match_username": row.username, **{f"new_{name}": value for name, value in changes.items()}})
        try:
            with self.database.writer.begin() as conn:
                if frozenset(self._existing(conn, list(plan.named))) != plan.existing:
                    raise Conflict("username", "users were added or deleted while the import was prepared; "
                                               "nothing was imported: run it again")
                if creates:
                    conn.execute(insert(users), creates)
                for names, parameters in updates.items():
                    conn.execute(update(users).where(users.c.username == bindparam("match_username"))
                                 .values({name: bindparam(f"new_{name}") for name in names}), parameters)
        except IntegrityError:
            raise Conflict("username", "a user of the file was created meanwhile; nothing was imported: "
                                       "run it again") from None
        report = plan.report(dry_run=False, applied=True)
        self._audit("user.import", rows=plan.row_count, created=report["created"], updated=report["updated"],
                    skipped=report["skipped"], passwords_hashed=len(plaintext), on_conflict=plan.on_conflict)
        return report

    # -- export ------------------------------------------------------------------------------------

    def export_csv(self, progress: Callable[[int], None] | None = None,
                   page_rows: int = EXPORT_PAGE_ROWS) -> Iterator[bytes]:
        """The CSV export in chunks (header, then one chunk per page of users by username),
        read page by page so that no connection stays open between chunks; ``progress(n)``
        after each page of ``n`` users."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")

        def take() -> bytes:
            text = buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            return text.encode("utf-8")

        writer.writerow(EXPORT_COLUMNS)
        yield take()
        after, count = None, 0
        while True:
            query = select(users).order_by(users.c.username).limit(page_rows)
            if after is not None:
                query = query.where(users.c.username > after)
            with self.database.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                break
            now = utcnow()
            for row in rows:
                view = {**to_view(row, now), "enabled": row.enabled}
                writer.writerow([escape_formula(_cell(view[name])) for name in EXPORT_COLUMNS])
            count += len(rows)
            after = rows[-1].username
            if progress is not None:
                progress(len(rows))
            yield take()
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
                for chunk in _chunks(names):
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
            for chunk in _chunks(names):
                found.update(conn.execute(select(users.c.username).where(users.c.username.in_(chunk))).scalars())
            for name in names:
                if name not in found:
                    raise NotFound("user", name)
            for chunk in _chunks(names):
                conn.execute(update(users).where(users.c.username.in_(chunk)).values(expires_at=when, updated_at=now))
        expired = when is not None and when <= now
        if expired:
            self.terminate_sessions_of_expired(names)
        self._audit("user.bulk_expiration", count=len(names), expires_at=when.isoformat() if when else None,
                    expired=expired)
        with self.database.engine.connect() as conn:
            rows = []
            for chunk in _chunks(names):
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
