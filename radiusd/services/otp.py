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
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Callable

import pyotp
import segno
from pyotp.exceptions import OTPVerificationError
from sqlalchemy import and_, delete, insert, or_, select, update

from radiusd.config import MfaSection
from radiusd.crypto import SeedKey
from radiusd.db.engine import Database
from radiusd.db.tables import otp_enrolments, users
from radiusd.services import Conflict, Invalid, NotFound
from radiusd.services.audit import record_event

SEED_BYTES = 20  # 160 bits, RFC 4226 §4's recommendation
DIGITS = 6
PERIOD = 30
ACTIVATION_CODE_BYTES = 10


class CodeCheck(Enum):
    OK = "ok"
    BAD = "bad"
    REPLAY = "replay"


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


class OtpService:
    def __init__(self, database: Database, seed_key: SeedKey, mfa: MfaSection,
                 clock: Callable[[], float], actor: str = "cli"):
        self.database = database
        self.seed_key = seed_key
        self.mfa = mfa
        self.clock = clock
        self.actor = actor

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

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
                      activation_code_hash=self.seed_key.digest(activation_code.encode(), "activation-code"))
        with self.database.writer.begin() as conn:
            existing = conn.execute(select(otp_enrolments.c.verified)
                                    .where(otp_enrolments.c.user_id == user_id)).first()
            if existing is not None and existing.verified:
                raise Conflict("username", f"{username} has a verified enrolment; reset it first")
            if existing is None:
                conn.execute(insert(otp_enrolments).values(user_id=user_id, **values))
            else:
                conn.execute(update(otp_enrolments).where(otp_enrolments.c.user_id == user_id).values(**values))
        uri = self._totp(seed, username).provisioning_uri(name=username, issuer_name=self.mfa.issuer)
        record_event(self.database, "admin", username=username, result="ok", reason="otp.enroll", actor=self.actor)
        return {"username": username, "otpauth_uri": uri, "qr_svg": segno.make(uri, error="m").svg_data_uri(),
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

    def list(self) -> list[dict]:
        query = (select(users.c.username, otp_enrolments.c.verified, otp_enrolments.c.enrolled_at,
                        otp_enrolments.c.verified_at, otp_enrolments.c.expires_at)
                 .join(users, users.c.id == otp_enrolments.c.user_id).order_by(users.c.username))
        with self.database.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [{"username": row.username, "verified": row.verified, "enrolled_at": row.enrolled_at,
                 "verified_at": row.verified_at,
                 "enrolment_expires_at": None if row.verified else row.expires_at} for row in rows]

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
        with self.database.writer.begin() as conn:
            claimed = conn.execute(
                update(otp_enrolments)
                .where(and_(otp_enrolments.c.id == enrolment.id,
                            or_(otp_enrolments.c.last_step.is_(None), otp_enrolments.c.last_step < step)))
                .values(last_step=step)).rowcount
        return CodeCheck.OK if claimed == 1 else CodeCheck.REPLAY

    # -- helpers -----------------------------------------------------------------------------------

    def _totp(self, seed: bytes, username: str) -> pyotp.TOTP:
        return pyotp.TOTP(base64.b32encode(seed).decode(), digits=DIGITS, interval=PERIOD, name=username,
                          issuer=self.mfa.issuer)

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
