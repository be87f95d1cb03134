"""Operators of the web console (SPEC §10): people with a role, a password and a TOTP.

Login is two steps: ``authenticate_password`` says whether the operator must enrol a TOTP
first (no verified seed yet: ``begin_enrolment`` then ``verify_totp``) or give a code; then
``verify_totp``. Both count failures and block exactly as users' logins do (the stored lockout
settings, the statements of services/blocks.py), a blocked operator is refused without a check,
and an unknown name costs what a known one does. A TOTP code is accepted once (services/otp.py's
conditional UPDATE of ``last_step``). The last admin can be neither removed nor demoted, so the
console always has someone who can manage operators. Every action is an audit event.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Callable

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from radiusd.config import LockoutSection, MfaSection
from radiusd.crypto import PasswordHasher, SeedKey
from radiusd.db.engine import Database
from radiusd.db.tables import operators
from radiusd.decisions import Reason
from radiusd.services import Clocked, Conflict, Invalid, NotFound, check_name
from radiusd.services.audit import record_event
from radiusd.services.blocks import blocked_clause, clear_failures, count_failure
from radiusd.services.console_sessions import ConsoleSessionService
from radiusd.services.otp import SEED_BYTES, claim_step, is_code, matching_step, provisioning
from radiusd.services.users import check_password

ROLES = ("admin", "helpdesk", "auditor")
ADMIN = "admin"
MAX_NAME_LENGTH = 64


def operator_seed_purpose(operator_id: int) -> str:
    return f"operator-totp-seed:{operator_id}"


def operator_actor(name: str) -> str:
    """How audit events name an operator acting in the console."""
    return f"console:{name}"


def check_role(role: str) -> str:
    if role not in ROLES:
        raise Invalid("role", f"role must be one of {', '.join(ROLES)}")
    return role


class LoginStep(Enum):
    ENROL = "enrol"  # password right, no verified TOTP: enrol one before anything else
    CODE = "code"  # password right: the TOTP code next
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class PasswordCheck:
    step: LoginStep
    reason: Reason  # ok, unknown_user, bad_password or blocked
    operator_id: int | None = None  # when the password was right
    locked: bool = False  # this failure blocked the operator


@dataclass(frozen=True, slots=True)
class CodeCheck:
    valid: bool
    reason: Reason  # ok, unknown_user, blocked, otp_required (no seed), bad_otp or otp_replay
    operator_id: int | None = None  # when valid
    locked: bool = False


def is_blocked(row, now: datetime) -> bool:
    return bool(row.block_permanent) or (row.blocked_until is not None and row.blocked_until > now)


def _view(row, now: datetime) -> dict:
    blocked = is_blocked(row, now)
    mfa = "verified" if row.totp_verified else "pending" if row.secret_encrypted is not None else "none"
    return {"name": row.name, "role": row.role, "mfa": mfa, "status": "blocked" if blocked else "active",
            "failed_attempts": row.failed_attempts,
            "blocked_until": None if not blocked or row.block_permanent else row.blocked_until,
            "created_at": row.created_at, "last_login_at": row.last_login_at}


class OperatorService(Clocked):
    """``seed_key`` and ``lockout`` are called when needed: managing operators needs no seed key."""

    def __init__(self, database: Database, hasher: PasswordHasher, seed_key: Callable[[], SeedKey],
                 lockout: Callable[[], LockoutSection], mfa: MfaSection, clock: Callable[[], float],
                 sessions: ConsoleSessionService, actor: str = "cli"):
        self.database = database
        self.hasher = hasher
        self.seed_key = seed_key
        self.lockout = lockout
        self.mfa = mfa
        self.clock = clock
        self.sessions = sessions
        self.actor = actor

    # -- administration --------------------------------------------------------------------------

    def add(self, name: str, role: str, password: str) -> dict:
        name, role = check_name(name, "name", MAX_NAME_LENGTH), check_role(role)
        password_hash = self.hasher.hash(check_password(password))
        try:
            with self.database.writer.begin() as conn:
                conn.execute(insert(operators).values(name=name, role=role, password_hash=password_hash,
                                                      created_at=self.now()))
        except IntegrityError:
            raise Conflict("name", f"operator {name} exists") from None
        self._audit("operator.add", name, role=role)
        return self.show(name)

    def list(self) -> list[dict]:
        now = self.now()
        with self.database.engine.connect() as conn:
            return [_view(row, now) for row in conn.execute(select(operators).order_by(operators.c.name))]

    def show(self, name: str) -> dict:
        return _view(self._row(name), self.now())

    def remove(self, name: str) -> None:
        """Delete the operator (their sessions end with them); never the last admin."""
        with self.database.writer.begin() as conn:
            self._keep_an_admin(conn, name, "remove")
            if conn.execute(delete(operators).where(operators.c.name == name)).rowcount == 0:
                raise NotFound("operator", name)
        self._audit("operator.remove", name)

    def set_role(self, name: str, role: str) -> dict:
        role = check_role(role)
        with self.database.writer.begin() as conn:
            if role != ADMIN:
                self._keep_an_admin(conn, name, "demote")
            if conn.execute(update(operators).where(operators.c.name == name).values(role=role)).rowcount == 0:
                raise NotFound("operator", name)
        self._audit("operator.role", name, role=role)
        return self.show(name)

    def reset_mfa(self, name: str) -> dict:
        """Forget the operator's TOTP: they enrol a new one at their next login. Their sessions end."""
        with self.database.writer.begin() as conn:
            operator_id = conn.execute(update(operators).where(operators.c.name == name)
                                       .values(secret_encrypted=None, totp_verified=False, last_step=None)
                                       .returning(operators.c.id)).scalar()
        if operator_id is None:
            raise NotFound("operator", name)
        self.sessions.end_all_for_operator(operator_id)
        self._audit("operator.reset_mfa", name)
        return self.show(name)

    def unblock(self, name: str) -> dict:
        """Remove the operator's block and clear their failure count."""
        with self.database.writer.begin() as conn:
            if conn.execute(update(operators).where(operators.c.name == name, blocked_clause(self.now(), operators))
                            .values(blocked_at=None, blocked_until=None, block_permanent=False, block_reason="",
                                    failed_attempts=0, first_failure_at=None)).rowcount == 0:
                self._row(name)  # NotFound("operator") when there is no such operator
                raise NotFound("block", name)
        self._audit("operator.unblock", name)
        return self.show(name)

    # -- login -----------------------------------------------------------------------------------

    def authenticate_password(self, name: str, password: str, source: str) -> PasswordCheck:
        """The first login step. The password is checked only for a known, unblocked operator;
        otherwise a dummy verify spends the same time."""
        row, now = self._find(name), self.now()
        secret = password.encode()
        if row is None or is_blocked(row, now):
            self.hasher.dummy_verify(secret)
            check = PasswordCheck(LoginStep.REFUSED, Reason.UNKNOWN_USER if row is None else Reason.BLOCKED)
        elif not self.hasher.verify(row.password_hash, secret):
            check = PasswordCheck(LoginStep.REFUSED, Reason.BAD_PASSWORD, locked=self._failed(row))
        else:
            if self.hasher.needs_rehash(row.password_hash):
                self._rehash(row, password)
            check = PasswordCheck(LoginStep.CODE if row.totp_verified else LoginStep.ENROL, Reason.OK, row.id)
        self._audit_login(name, source, "password", check.reason)
        return check

    def begin_enrolment(self, name: str) -> dict:
        """A new TOTP seed for an operator without a verified one (replacing an unverified one):
        the otpauth URI, its QR code and the key to type by hand, shown this once."""
        row = self._row(name)
        if row.totp_verified:
            raise Conflict("name", f"operator {name} has a verified TOTP; reset it first")
        seed = secrets.token_bytes(SEED_BYTES)
        with self.database.writer.begin() as conn:
            conn.execute(update(operators).where(operators.c.id == row.id, operators.c.totp_verified.is_(False))
                         .values(secret_encrypted=self.seed_key().encrypt(seed, operator_seed_purpose(row.id)),
                                 last_step=None))
        self._audit("operator.enrol", name, actor=operator_actor(name))
        return {"name": name, **provisioning(seed, name, f"{self.mfa.issuer} console"),
                "secret": base64.b32encode(seed).decode()}

    def verify_totp(self, name: str, code: str, source: str) -> CodeCheck:
        """The second login step (the first valid code of an enrolment verifies it). A wrong or
        replayed code counts as a failure; a valid one clears the count and is the login."""
        row, now = self._find(name), self.now()
        if row is None:
            check = CodeCheck(False, Reason.UNKNOWN_USER)
        elif is_blocked(row, now):
            check = CodeCheck(False, Reason.BLOCKED)
        elif row.secret_encrypted is None:
            check = CodeCheck(False, Reason.OTP_REQUIRED)
        else:
            reason = self._check_code(row, code)
            if reason is Reason.OK:
                clear_failures(self.database, operators, row.id)
                with self.database.writer.begin() as conn:
                    conn.execute(update(operators).where(operators.c.id == row.id)
                                 .values(totp_verified=True, last_login_at=now))
                check = CodeCheck(True, reason, row.id)
            else:
                check = CodeCheck(False, reason, locked=self._failed(row))
        self._audit_login(name, source, "totp", check.reason)
        return check

    # -- helpers ---------------------------------------------------------------------------------

    def _check_code(self, row, code: str) -> Reason:
        if not is_code(code):
            return Reason.BAD_OTP
        seed = self.seed_key().decrypt(row.secret_encrypted, operator_seed_purpose(row.id))
        step = matching_step(seed, code, int(self.clock()), self.mfa.totp_window)
        if step is None:
            return Reason.BAD_OTP
        return Reason.OK if claim_step(self.database, operators, row.id, step) else Reason.OTP_REPLAY

    def _failed(self, row) -> bool:
        """Count a failed login step; True if it blocked the operator."""
        blocked, until = count_failure(self.database, operators, row.id, self.lockout(), self.now())
        if blocked:
            record_event(self.database, "block", result="blocked", reason="automatic", actor="lockout",
                         detail={"operator": row.name, "until": until.isoformat() if until else None,
                                 "permanent": until is None})
        return blocked

    def _rehash(self, row, password: str) -> None:
        with self.database.writer.begin() as conn:
            conn.execute(update(operators)
                         .where(operators.c.id == row.id, operators.c.password_hash == row.password_hash)
                         .values(password_hash=self.hasher.hash(password)))

    def _keep_an_admin(self, conn, name: str, action: str) -> None:
        """Refuse to take ``name`` out of the admins if they are the last one. The admin rows
        stay locked until the transaction ends (PostgreSQL; SQLite writers are serial), so
        two admins demoting each other cannot both succeed."""
        admins = conn.execute(select(operators.c.name).where(operators.c.role == ADMIN)
                              .with_for_update()).scalars().all()
        if admins == [name]:
            raise Conflict("role", f"cannot {action} {name}: the last admin operator")

    def _find(self, name: str):
        with self.database.engine.connect() as conn:
            return conn.execute(select(operators).where(operators.c.name == name)).first()

    def _row(self, name: str):
        row = self._find(name)
        if row is None:
            raise NotFound("operator", name)
        return row

    def _audit(self, action: str, name: str, *, actor: str | None = None, **detail) -> None:
        record_event(self.database, "admin", result="ok", reason=action, actor=actor or self.actor,
                     detail={"operator": name, **detail})

    def _audit_login(self, name: str, source: str, factor: str, reason: Reason) -> None:
        """A login step's event (the name as typed, cut to what a name can be)."""
        record_event(self.database, "console", result="accept" if reason is Reason.OK else "reject",
                     reason=str(reason), actor=operator_actor(name),
                     detail={"operator": name[:MAX_NAME_LENGTH], "source": source, "factor": factor})
