"""Local users: validation, storage and the queries the pipeline, CLI and API share."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from datetime import datetime, timezone
from typing import Iterator, Literal

import phonenumbers
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from radiusd.crypto import PasswordHasher
from radiusd.db.engine import Database
from radiusd.db.tables import users, utcnow
from radiusd.dictionary import RadiusDictionary, UnknownAttribute
from radiusd.model import User
from radiusd.services import Conflict, Invalid, NotFound, check_name, first_error
from radiusd.services.audit import record_event
from radiusd.services.blocks import blocked_clause, not_blocked_clause

DEFAULT_PHONE_REGION = "TR"  # [sms] default_region's default
# One rule, in bytes of UTF-8 everywhere (API, CLI, import): RFC 2865 §5.2 limits User-Password to 128 octets.
MIN_PASSWORD_BYTES = 8
MAX_PASSWORD_BYTES = 128
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
FRAMED_IP_KEYWORDS = ("user-selects", "nas-assigns")
LOOKUP_CHUNK = 500  # names per IN (...) query
NO_RECORD = 0  # the id of a User the pipeline holds before its record exists (a directory user's first login)
Status = Literal["active", "disabled", "expired", "blocked"]


# phonenumbers' reasons a number is not possible, as words ("too short", "invalid country code")
PHONE_REASONS = {value: name.lower().replace("_", " ") for name, value in vars(phonenumbers.ValidationResult).items()
                 if name.isupper()}
PHONE_REGION = "phone_region"  # validation context: the region of numbers given in national form


def normalise_phone(value: str, region: str = DEFAULT_PHONE_REGION) -> str:
    """E.164 of a number given internationally (+ or the region's international prefix) or in
    ``region``'s national form (``[sms] default_region``); ValueError with phonenumbers' reason
    for anything else."""
    text = value.strip()
    if not text:
        return ""
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number: {exc._msg}") from None
    if not phonenumbers.is_valid_number(number):
        possible = phonenumbers.is_possible_number_with_reason(number)
        reason = "no such number in its numbering plan" if possible == phonenumbers.ValidationResult.IS_POSSIBLE \
            else PHONE_REASONS.get(possible, "invalid")
        raise ValueError(f"not a valid phone number for region {region} ({reason})")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class ReplyAttribute(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    value: str | int


class UserFields(BaseModel):
    """The writable profile fields of a user (SPEC §5), without username and password."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    first_name: str = Field("", max_length=128)
    last_name: str = Field("", max_length=128)
    email: str = Field("", max_length=254)
    phone: str = Field("", max_length=32)
    expires_at: datetime | None = None
    framed_ip_address: str | None = None
    sponsor_name: str = Field("", max_length=128)
    sponsor_email: str = Field("", max_length=254)
    description: str = Field("", max_length=1000)
    mfa_exempt: bool = False
    reply_attributes: list[ReplyAttribute] = Field(default_factory=list, max_length=64)

    @field_validator("email", "sponsor_email")
    @classmethod
    def _email(cls, value: str) -> str:
        if value and not EMAIL.match(value):
            raise ValueError("not an email address")
        return value

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str, info: ValidationInfo) -> str:
        """Normalised with the configured region, given in the context (``parse_fields``);
        without one (the API's edge parse) it is checked later, by the service."""
        region = (info.context or {}).get(PHONE_REGION)
        return value if region is None else normalise_phone(value, region)

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc) if value else None

    @field_validator("framed_ip_address")
    @classmethod
    def _framed_ip(cls, value: str | None) -> str | None:
        if not value:
            return None
        if value in FRAMED_IP_KEYWORDS:
            return value
        try:
            return str(ipaddress.IPv4Address(value))
        except ValueError:
            raise ValueError("Framed-IP-Address must be an IPv4 address, user-selects or nas-assigns") from None


def check_username(username: str) -> str:
    return check_name(username, "username", 64)


def check_password(password: str, confirmation: str | None = None) -> str:
    if confirmation is not None and password != confirmation:
        raise Invalid("password_confirmation", "password and confirmation differ")
    if not MIN_PASSWORD_BYTES <= len(password.encode()) <= MAX_PASSWORD_BYTES:
        raise Invalid("password", f"password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes "
                                  "(UTF-8: a character other than ASCII takes 2 to 4)")
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise Invalid("password", "password must not contain control characters")
    return password


def parse_fields(data: dict, *, partial: bool = False, phone_region: str = DEFAULT_PHONE_REGION) -> dict:
    """Validate profile fields; with ``partial``, only the given ones. Raises Invalid."""
    try:
        model = UserFields.model_validate(data, context={PHONE_REGION: phone_region})
    except ValidationError as exc:
        raise first_error(exc) from None
    values = model.model_dump(exclude_unset=partial)
    if "reply_attributes" in values:
        values["reply_attributes"] = [dict(item) for item in values["reply_attributes"]]
    return values


def check_reply_attributes(dictionary: RadiusDictionary, attributes: list[dict]) -> None:
    for item in attributes:
        try:
            dictionary.validate(item["name"], item["value"])
        except UnknownAttribute:
            raise Invalid("reply_attributes", f"unknown attribute {item['name']}") from None
        except (ValueError, TypeError) as exc:
            raise Invalid("reply_attributes", f"{item['name']}: {exc}") from None


def user_from_row(row) -> User:
    return User(
        id=row.id,
        username=row.username,
        password_hash=row.password_hash,
        enabled=row.enabled,
        expires_at=row.expires_at,
        framed_ip_address=row.framed_ip_address,
        mfa_exempt=row.mfa_exempt,
        reply_attributes=tuple((item["name"], item["value"]) for item in row.reply_attributes or ()),
        phone=row.phone,
        source=row.source,
        blocked_until=row.blocked_until,
        failed_attempts=row.failed_attempts,
        block_permanent=row.block_permanent,
    )


_FIND_USER = select(users).where(users.c.username == bindparam("username"))


def find_user(database: Database, username: str) -> User | None:
    with database.engine.connect() as conn:
        row = conn.execute(_FIND_USER, {"username": username}).first()
    return user_from_row(row) if row else None


def chunks(items: list, size: int = LOOKUP_CHUNK) -> Iterator[list]:
    """``items`` in slices of ``size``: one IN (...) query each."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def to_view(row, now: datetime | None = None) -> dict:
    """A user as the CLI and API show it: every field but secrets, plus derived status."""
    now = now or utcnow()
    user = user_from_row(row)
    return {
        "username": row.username,
        "first_name": row.first_name,
        "last_name": row.last_name,
        "email": row.email,
        "phone": row.phone,
        "expires_at": row.expires_at,
        "framed_ip_address": row.framed_ip_address,
        "sponsor_name": row.sponsor_name,
        "sponsor_email": row.sponsor_email,
        "description": row.description,
        "mfa_exempt": row.mfa_exempt,
        "reply_attributes": list(row.reply_attributes or []),
        "status": user.status(now),
        "blocked": user.is_blocked(now),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_login_at": row.last_login_at,
    }


def filter_users(query, now: datetime, *, q: str | None = None, status: Status | None = None,
                 expires_before: datetime | None = None):
    """``query`` (over the users table) narrowed by the list filters of ``GET /users``."""
    if q:
        pattern = f"%{q.lower()}%"
        query = query.where(or_(*(func.lower(column).like(pattern) for column in (
            users.c.username, users.c.first_name, users.c.last_name, users.c.email))))
    if expires_before is not None:
        query = query.where(users.c.expires_at < expires_before)
    if status == "disabled":
        query = query.where(users.c.enabled.is_(False))
    elif status == "blocked":
        query = query.where(users.c.enabled.is_(True), blocked_clause(now))
    elif status == "expired":
        query = query.where(users.c.enabled.is_(True), not_blocked_clause(now), users.c.expires_at <= now)
    elif status == "active":
        query = query.where(users.c.enabled.is_(True), not_blocked_clause(now),
                            or_(users.c.expires_at.is_(None), users.c.expires_at > now))
    return query


class UserService:
    """Use-cases on local users, shared by ``radiusd-admin`` and the admin API."""

    def __init__(self, database: Database, hasher: PasswordHasher, dictionary: RadiusDictionary,
                 actor: str = "cli", sessions=None, phone_region: str = DEFAULT_PHONE_REGION):
        self.database = database
        self.phone_region = phone_region
        self.hasher = hasher
        self.dictionary = dictionary
        self.actor = actor
        self.sessions = sessions  # a SessionService: disabling or expiring terminates sessions (SPEC §4)

    def _audit(self, action: str, username: str, **detail) -> None:
        record_event(self.database, "admin", username=username, result="ok", reason=action,
                     actor=self.actor, detail=detail)

    def create(self, username: str, fields: dict, password: str | None = None,
               confirmation: str | None = None) -> dict:
        check_username(username)
        values = parse_fields(fields, phone_region=self.phone_region)
        check_reply_attributes(self.dictionary, values["reply_attributes"])
        self._refuse_taken_address(username, values["framed_ip_address"])
        password_hash = self.hasher.hash(check_password(password, confirmation)) if password else None
        now = utcnow()
        try:
            with self.database.writer.begin() as conn:
                conn.execute(insert(users).values(
                    username=username, password_hash=password_hash, enabled=True,
                    created_at=now, updated_at=now, **values))
        except IntegrityError:
            raise Conflict("username", f"user {username} already exists") from None
        self._audit("user.create", username)
        return self.show(username)

    def _refuse_taken_address(self, username: str, address: str | None) -> None:
        """Conflict when another user has this Framed-IP-Address (as the import refuses it):
        two sessions with one address break both."""
        if not address or address in FRAMED_IP_KEYWORDS:
            return
        with self.database.engine.connect() as conn:
            holder = conn.execute(select(users.c.username).where(users.c.framed_ip_address == address,
                                                                 users.c.username != username).limit(1)).scalar()
        if holder is not None:
            raise Conflict("framed_ip_address", f"Framed-IP-Address {address} is already assigned to user {holder}")

    def create_record(self, username: str, source: str, at: datetime) -> bool:
        """The local record of a user whose password lives elsewhere (a directory); False when
        a concurrent first login created it first."""
        try:
            with self.database.writer.begin() as conn:
                conn.execute(insert(users).values(username=username, password_hash=None, enabled=True, source=source,
                                                  reply_attributes=[], created_at=at, updated_at=at))
        except IntegrityError:
            return False
        self._audit("user.create", username, source=source)
        return True

    def record_login(self, user: User, at: datetime) -> None:
        """``last_login_at`` after an Accept; a record created during the request (the user
        still ``NO_RECORD``) is found by name and source."""
        match = (users.c.id == user.id,) if user.id != NO_RECORD else \
            (users.c.username == user.username, users.c.source == user.source)
        with self.database.writer.begin() as conn:
            conn.execute(update(users).where(*match).values(last_login_at=at))

    def upgrade_hash(self, user: User, password: bytes) -> None:
        """Replace the stored hash (older argon2 parameters, or bcrypt) by an argon2id hash of
        ``password`` with the current parameters, unless it changed meanwhile."""
        with self.database.writer.begin() as conn:
            conn.execute(update(users)
                         .where(users.c.id == user.id, users.c.password_hash == user.password_hash)
                         .values(password_hash=self.hasher.hash(password)))

    def show(self, username: str) -> dict:
        with self.database.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.username == username)).first()
        if row is None:
            raise NotFound("user", username)
        return to_view(row)

    def update(self, username: str, fields: dict) -> dict:
        values = parse_fields(fields, partial=True, phone_region=self.phone_region)
        if "reply_attributes" in values:
            check_reply_attributes(self.dictionary, values["reply_attributes"])
        if "framed_ip_address" in values:
            self._refuse_taken_address(username, values["framed_ip_address"])
        changed = self._change(username, "user.update", fields=sorted(values), **values)
        if values.get("expires_at") is not None and values["expires_at"] <= utcnow() and self.sessions is not None:
            self.sessions.notice_expiry(username)  # at once, not at the next sweep
        return changed

    def set_enabled(self, username: str, enabled: bool) -> dict:
        changed = self._change(username, "user.enable" if enabled else "user.disable", enabled=enabled)
        if not enabled and self.sessions is not None:
            self.sessions.terminate_user_later(username, "disabled")
        return changed

    def set_password(self, username: str, password: str, confirmation: str | None = None) -> dict:
        return self._change(username, "user.password",
                            password_hash=self.hasher.hash(check_password(password, confirmation)))

    def delete(self, username: str) -> None:
        with self.database.writer.begin() as conn:
            if conn.execute(delete(users).where(users.c.username == username)).rowcount == 0:
                raise NotFound("user", username)
        self._audit("user.delete", username)

    def list(self, *, q: str | None = None, status: Status | None = None,
             expires_before: datetime | None = None, limit: int = 100,
             cursor: str | None = None) -> tuple[list[dict], str | None]:
        """A page of users ordered by username; the cursor is the last username shown."""
        now = utcnow()
        query = filter_users(select(users).order_by(users.c.username), now, q=q, status=status,
                             expires_before=expires_before)
        if cursor:
            query = query.where(users.c.username > cursor)
        with self.database.engine.connect() as conn:
            rows = conn.execute(query.limit(limit + 1)).all()
        page = [to_view(row, now) for row in rows[:limit]]
        return page, (rows[limit - 1].username if len(rows) > limit else None)

    def _change(self, username: str, action: str, fields: list[str] | None = None, **values) -> dict:
        with self.database.writer.begin() as conn:
            result = conn.execute(update(users).where(users.c.username == username)
                                  .values(updated_at=utcnow(), **values))
            if result.rowcount == 0:
                raise NotFound("user", username)
        self._audit(action, username, **({"fields": fields} if fields is not None else {}))
        return self.show(username)


def stored_attribute_problems(database: Database, dictionary: RadiusDictionary) -> list[str]:
    """Users' reply attributes that the current dictionary cannot send (for check-config)."""
    problems = []
    with database.engine.connect() as conn:
        rows = conn.execute(select(users.c.username, users.c.reply_attributes)).all()
    for username, attributes in rows:
        try:
            check_reply_attributes(dictionary, list(attributes or []))
        except Invalid as exc:
            problems.append(f"user {username}: {exc.detail}")
    return problems
