"""SoftOTP (TOTP, RFC 6238) enrolments: enrol, first-code verification, checks with replay
protection, reset, list. Used by the ``totp`` plugin, ``radiusd-admin otp`` and the API.

A seed is 160 random bits, stored AES-GCM encrypted with the seed key. A code is accepted at
most once: the matched time step is written with one conditional UPDATE
(``last_step < :step``) committed before the caller answers, so a replay loses on every
thread, process and instance sharing the database.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Callable

import pyotp
import segno
from pyotp.exceptions import OTPVerificationError
from sqlalchemy import Table, and_, delete, insert, or_, select, update

from radiusd.config import MfaSection
from radiusd.crypto import SeedKey
from radiusd.db.engine import Database
from radiusd.db.tables import otp_enrolments, users
from radiusd.decisions import Reason
from radiusd.services import Clocked, Conflict, Invalid, NotFound
from radiusd.services.audit import record_event
from radiusd.services.blocks import BlockService
from radiusd.services.users import find_user

SEED_BYTES = 20  # 160 bits, RFC 4226 §4's recommendation
DIGITS = 6
PERIOD = 30
ACTIVATION_CODE_BYTES = 10
ACTIVATION_PURPOSE = "activation-code"  # keyed digest of the activation code (``/mobile/activate``)
NAME_TOTP = "totp"


class CodeCheck(Enum):
    OK = "ok"
    BAD = "bad"
    REPLAY = "replay"


@dataclass(frozen=True, slots=True)
class UserCodeCheck:
    valid: bool
    reason: Reason
    locked: bool  # this failure blocked the user


def is_code(text: str) -> bool:
    """Six ASCII digits; pyotp would also take full-width digits, which we refuse."""
    return len(text) == DIGITS and text.isascii() and text.isdigit()


def seed_purpose(user_id: int) -> str:
    return f"totp-seed:{user_id}"


@dataclass(frozen=True, slots=True)
class Enrolment:
    id: int
    user_id: int
    verified: bool
    expires_at: datetime
    last_step: int | None
    secret_encrypted: bytes


class OtpService(Clocked):
    def __init__(self, database: Database, seed_key: SeedKey, mfa: MfaSection,
                 clock: Callable[[], float], actor: str = "cli"):
        self.database = database
        self.seed_key = seed_key
        self.mfa = mfa
        self.clock = clock
        self.actor = actor


    # -- administration --------------------------------------------------------------------------

    def enroll(self, username: str) -> dict:
        """A new seed for the user; shown once as otpauth URI, QR code and activation code."""
        user_id = self._user_id(username)
        seed = secrets.token_bytes(SEED_BYTES)
        activation_code = base64.b32encode(secrets.token_bytes(ACTIVATION_CODE_BYTES)).decode()
        now = self.now()
        expires_at = now + timedelta(seconds=self.mfa.enrollment_ttl_seconds)
        values = dict(secret_encrypted=self.seed_key.encrypt(seed, seed_purpose(user_id)), verified=False,
                      enrolled_at=now, expires_at=expires_at, verified_at=None, last_step=None,
                      activation_code_hash=self.seed_key.digest(activation_code.encode(), ACTIVATION_PURPOSE))
        with self.database.writer.begin() as conn:
            existing = conn.execute(select(otp_enrolments.c.verified)
                                    .where(otp_enrolments.c.user_id == user_id)).first()
            if existing is not None and existing.verified:
                raise Conflict("username", f"{username} has a verified enrolment; reset it first")
            if existing is None:
                conn.execute(insert(otp_enrolments).values(user_id=user_id, **values))
            else:
                conn.execute(update(otp_enrolments).where(otp_enrolments.c.user_id == user_id).values(**values))
        record_event(self.database, "admin", username=username, result="ok", reason="otp.enroll", actor=self.actor)
        return {"username": username, **provisioning(seed, username, self.mfa.issuer),
                "activation_code": activation_code, "expires_at": expires_at}

    def verify(self, username: str, code: str) -> bool:
        """The first-code check (makes the enrolment verified), or a check that consumes the
        step like a login. An expired unverified enrolment cannot be verified: re-enrol."""
        user_id = self._user_id(username)
        enrolment = self.enrolment(user_id)
        if enrolment is None:
            raise NotFound("enrolment", username)
        if not enrolment.verified and enrolment.expires_at <= self.now():
            raise Invalid("otp", f"the enrolment of {username} expired; enrol again")
        result = self.check(enrolment, code)
        if result is CodeCheck.OK and not enrolment.verified:
            with self.database.writer.begin() as conn:
                conn.execute(update(otp_enrolments).where(otp_enrolments.c.id == enrolment.id)
                             .values(verified=True, verified_at=self.now()))
            record_event(self.database, "admin", username=username, result="ok", reason="otp.verified",
                         actor=self.actor)
        return result is CodeCheck.OK

    def reset(self, username: str) -> None:
        user_id = self._user_id(username)
        with self.database.writer.begin() as conn:
            if conn.execute(delete(otp_enrolments).where(otp_enrolments.c.user_id == user_id)).rowcount == 0:
                raise NotFound("enrolment", username)
        record_event(self.database, "admin", username=username, result="ok", reason="otp.reset", actor=self.actor)

    def list(self, *, after: str | None = None, limit: int | None = None,
             usernames: list[str] | None = None) -> list[dict]:
        """SoftOTP users by username (those after ``after``), with their remote configuration."""
        query = (select(users.c.username, otp_enrolments)
                 .join(users, users.c.id == otp_enrolments.c.user_id).order_by(users.c.username))
        if after is not None:
            query = query.where(users.c.username > after)
        if usernames is not None:
            query = query.where(users.c.username.in_(usernames))
        if limit is not None:
            query = query.limit(limit)
        with self.database.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [{"username": row.username, "verified": row.verified, "enrolled_at": row.enrolled_at,
                 "verified_at": row.verified_at,
                 "enrolment_expires_at": None if row.verified else row.expires_at,
                 "pin_required": row.pin_required, "biometric_required": row.biometric_required,
                 "config_version": row.config_version, "applied_version": row.applied_version,
                 "last_sync_at": row.last_sync_at} for row in rows]

    def show(self, username: str) -> dict:
        """One user's SoftOTP entry (as ``list`` shows it)."""
        found = self.list(usernames=[username])
        if not found:
            self._user_id(username)  # NotFound("user") when there is no such user
            raise NotFound("enrolment", username)
        return found[0]

    # -- remote configuration (SPEC §6) ------------------------------------------------------------

    def set_remote_config(self, username: str, *, pin_required: bool, biometric_required: bool) -> dict:
        """Replace one user's app settings; a change bumps ``config_version``."""
        self.set_remote_config_bulk([username], pin_required=pin_required, biometric_required=biometric_required)
        return self.show(username)

    def set_remote_config_bulk(self, usernames: list[str], *, pin_required: bool | None = None,
                               biometric_required: bool | None = None) -> list[dict]:
        """Set the given settings for every named user, all or none: every user must exist and
        be enrolled. Only enrolments whose settings change get a new ``config_version``."""
        changes = {name: value for name, value in (("pin_required", pin_required),
                                                    ("biometric_required", biometric_required))
                   if value is not None}
        if not changes:
            raise Invalid("pin_required", "give pin_required, biometric_required or both")
        wanted = sorted(set(usernames))
        if not wanted:
            raise Invalid("usernames", "give at least one username")
        with self.database.writer.begin() as conn:
            found = dict(conn.execute(
                select(users.c.username, otp_enrolments.c.user_id)
                .select_from(users.outerjoin(otp_enrolments, otp_enrolments.c.user_id == users.c.id))
                .where(users.c.username.in_(wanted))).all())
            unknown = [name for name in wanted if name not in found]
            if unknown:
                raise NotFound("user", ", ".join(unknown))
            unenrolled = [name for name in wanted if found[name] is None]
            if unenrolled:
                raise NotFound("enrolment", ", ".join(unenrolled))
            changed = conn.execute(
                update(otp_enrolments)
                .where(otp_enrolments.c.user_id.in_(list(found.values())),
                       or_(*(otp_enrolments.c[name] != value for name, value in changes.items())))
                .values(config_version=otp_enrolments.c.config_version + 1, **changes)
                .returning(otp_enrolments.c.user_id, otp_enrolments.c.config_version)).all()
        by_id = {user_id: name for name, user_id in found.items()}
        for user_id, version in changed:
            record_event(self.database, "admin", username=by_id[user_id], result="ok", reason="otp.remote_config",
                         actor=self.actor, detail={**changes, "config_version": version})
        return self.list(usernames=wanted)

    # -- checks for applications (API ``/otp/verify``) -----------------------------------------------

    def check_user_code(self, username: str, code: str, blocks: BlockService, client: str) -> "UserCodeCheck":
        """A one-time code of a user, checked like a login's second factor: refused for unknown,
        disabled, blocked and expired users and users without a verified enrolment; replay
        protected; a wrong or replayed code counts as a failed attempt (and may block), a valid
        one clears the count. Every check is an audit event."""
        user = find_user(self.database, username)
        now = self.now()
        locked = False
        if user is None:
            reason = Reason.UNKNOWN_USER
        elif not user.enabled:
            reason = Reason.DISABLED
        elif user.is_blocked(now):
            reason = Reason.BLOCKED
        elif user.is_expired(now):
            reason = Reason.EXPIRED
        else:
            enrolment = self.verified_enrolment(user.id)
            result = self.check(enrolment, code) if enrolment is not None else None
            reason = {None: Reason.OTP_REQUIRED, CodeCheck.OK: Reason.OK, CodeCheck.BAD: Reason.BAD_OTP,
                      CodeCheck.REPLAY: Reason.OTP_REPLAY}[result]
            if reason is Reason.OK:
                blocks.clear_failures(user.id)
            elif reason in (Reason.BAD_OTP, Reason.OTP_REPLAY):
                locked = blocks.record_failure(user.id, user.username)
        record_event(self.database, "auth", username=username, client=client,
                     result="accept" if reason is Reason.OK else "reject", reason=str(reason), actor=self.actor,
                     detail={"factor": NAME_TOTP})
        return UserCodeCheck(reason is Reason.OK, reason, locked)

    # -- authentication --------------------------------------------------------------------------

    def enrolment(self, user_id: int) -> Enrolment | None:
        with self.database.engine.connect() as conn:
            row = conn.execute(select(otp_enrolments).where(otp_enrolments.c.user_id == user_id)).first()
        if row is None:
            return None
        return Enrolment(row.id, row.user_id, row.verified, row.expires_at, row.last_step, row.secret_encrypted)

    def verified_enrolment(self, user_id: int) -> Enrolment | None:
        """The enrolment a login may use: only a verified one is a usable factor."""
        enrolment = self.enrolment(user_id)
        return enrolment if enrolment is not None and enrolment.verified else None

    def check(self, enrolment: Enrolment, code: str) -> CodeCheck:
        """Check a code and, if it matches, claim its time step atomically (replay guard)."""
        if not is_code(code):
            return CodeCheck.BAD
        seed = self.seed_key.decrypt(enrolment.secret_encrypted, seed_purpose(enrolment.user_id))
        step = matching_step(seed, code, int(self.clock()), self.mfa.totp_window)
        if step is None:
            return CodeCheck.BAD
        return CodeCheck.OK if claim_step(self.database, otp_enrolments, enrolment.id, step) else CodeCheck.REPLAY

    # -- helpers -----------------------------------------------------------------------------------

    def _user_id(self, username: str) -> int:
        with self.database.engine.connect() as conn:
            user_id = conn.execute(select(users.c.id).where(users.c.username == username)).scalar()
        if user_id is None:
            raise NotFound("user", username)
        return user_id


def matching_step(seed: bytes, code: str, now: int, window: int) -> int | None:
    """The RFC 6238 time step within ±window whose code is ``code``, or None."""
    totp = pyotp.TOTP(base64.b32encode(seed).decode(), digits=DIGITS, interval=PERIOD)
    try:
        return totp.verify_and_get_timecode(code, for_time=now, valid_window=window)
    except OTPVerificationError:
        return None


def claim_step(database: Database, table: Table, row_id: int, step: int) -> bool:
    """Record ``step`` as the newest accepted on the row of ``table`` (a user's enrolment or an
    operator) unless it is not newer: one conditional UPDATE, so a replay loses everywhere."""
    with database.writer.begin() as conn:
        return conn.execute(update(table).where(and_(table.c.id == row_id,
                                                     or_(table.c.last_step.is_(None), table.c.last_step < step)))
                            .values(last_step=step)).rowcount == 1


def provisioning(seed: bytes, name: str, issuer: str) -> dict:
    """What an authenticator app scans or is typed: the otpauth URI, its QR code (SVG data URI)."""
    uri = pyotp.TOTP(base64.b32encode(seed).decode(), digits=DIGITS, interval=PERIOD).provisioning_uri(
        name=name, issuer_name=issuer)
    return {"otpauth_uri": uri, "qr_svg": segno.make(uri, error="m").svg_data_uri()}
