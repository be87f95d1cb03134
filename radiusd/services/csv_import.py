"""CSV import of users (SPEC §5): a dry run that reports every error, then one transaction.

``password`` is hashed with argon2id on import; ``password_hash`` (an argon2 or bcrypt hash) is
stored as is and upgraded to argon2id at the first successful login. Nothing secret is ever put
in a report or an error message.
"""

from __future__ import annotations

import csv
import io
import re
import threading
from dataclasses import dataclass, field
from typing import Callable

from pydantic import ValidationError
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from radiusd.crypto import PasswordHasher, hash_scheme
from radiusd.db.engine import Database
from radiusd.db.tables import users, utcnow
from radiusd.dictionary import RadiusDictionary, UnknownAttribute
from radiusd.services import Conflict, Invalid
from radiusd.services.cells import (
    EXPORT_COLUMNS,
    IMPORT_COLUMNS,
    ISO_DATE,
    PROFILE_COLUMNS,
    SECRET_COLUMNS,
    parse_bool,
    parse_reply_attributes,
    unescape_formula,
)
from radiusd.services.hashing import hash_passwords
from radiusd.services.users import DEFAULT_PHONE_REGION, FRAMED_IP_KEYWORDS, PHONE_REGION, UserFields, check_password, check_username, chunks

ON_CONFLICT = ("fail", "skip", "update")
MAX_IMPORT_ROWS = 100_000
MAX_REPORTED_ERRORS = 1000  # the count is always exact; the list stops here
INTEGER_TYPES = frozenset({"integer", "short", "byte", "signed", "integer64", "date"})


def errors_in(report: dict) -> str:
    count = report["error_count"]
    return f"{count} error{'' if count == 1 else 's'}"


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


class Importer:
    """Plans an import (every error of the file and of the database found at once) and applies
    a plan without errors in one transaction."""

    def __init__(self, database: Database, hasher: PasswordHasher, dictionary: RadiusDictionary,
                 hash_threads: int, phone_region: str = DEFAULT_PHONE_REGION):
        self.database = database
        self.phone_region = phone_region
        self.hasher = hasher
        self.dictionary = dictionary
        self.hash_threads = hash_threads

    def plan(self, data: bytes, on_conflict: str = "fail") -> ImportPlan:
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
            values = UserFields.model_validate(given, context={PHONE_REGION: self.phone_region}).model_dump()
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
                                                            "(on conflict: fail; skip or update would go on)")
                                   for name, line in plan.named.items() if name in existing and line not in valid_lines)
            kept = []
            for row in plan.rows:
                source = existing.get(row.username)
                if source is None:
                    kept.append(row)
                    continue
                if plan.on_conflict == "fail":
                    plan.errors.append(_error(row.line, "username", f"user {row.username} exists already "
                                                                    "(on conflict: fail; skip or update would go on)"))
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
            for chunk in chunks(list(file_ip)):
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
        for chunk in chunks(names):
            found.update(conn.execute(select(users.c.username, users.c.source)
                                      .where(users.c.username.in_(chunk))).all())
        return found

    def apply(self, plan: ImportPlan, *, progress: Callable[[int], None] | None = None,
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
        return plan.report(dry_run=False, applied=True)
