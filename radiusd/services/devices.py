"""The authenticator app's device (SPEC §5 ``/mobile/*``, §6): activation, device tokens and
remote configuration sync.

The app activates with the enrolment's activation code and a current TOTP code: the enrolment
becomes verified, the activation code is spent (its digest cleared in the same conditional
UPDATE, so two racing activations cannot both win), and a device is registered with a random
token returned once. Only the token's keyed digest is stored; the device row belongs to the
enrolment and is deleted with it (``ON DELETE CASCADE``), so resetting or re-enrolling the
user revokes the token. A wrong code of a live activation code counts as a failed attempt of
its user, like a wrong OTP at login.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Callable

from sqlalchemy import delete, insert, select, update

from radiusd.crypto import SeedKey
from radiusd.db.engine import Database
from radiusd.db.tables import devices, fitted, otp_enrolments, users
from radiusd.services import Clocked, Conflict, NotFound, ServiceError
from radiusd.services.api_clients import ApiPrincipal
from radiusd.services.audit import record_event
from radiusd.services.blocks import BlockService
from radiusd.services.otp import ACTIVATION_PURPOSE, CodeCheck, Enrolment, OtpService
from radiusd.services.users import find_user

DEVICE_TOKEN_PREFIX = "rdv_"  # tells device tokens from API access tokens without a lookup
DEVICE_TOKEN_BYTES = 32
DEVICE_TOKEN_PURPOSE = "device-token"
MAX_TOKEN_LENGTH = 256
DEVICE_TYPE = "device"  # the scope of device routes
PIN_POLICY = {"min_length": 4, "max_length": 6, "max_attempts": 3}  # SPEC §6, fixed


class ActivationRefused(ServiceError):
    """The activation code is unknown, used or expired, the account may not log in, or the
    one-time code is wrong. ``locked``: this failure blocked the user."""

    code = "activation_refused"

    def __init__(self, field: str, detail: str, locked: bool = False):
        super().__init__(field, detail)
        self.locked = locked


@dataclass(frozen=True, slots=True)
class DevicePrincipal(ApiPrincipal):
    """Who a valid device token speaks for: ``client_id`` is the public device id, ``name``
    the user's name, ``type`` is always ``device``."""

    user_id: int = 0
    device_row: int = 0
    enrolment_id: int = 0

    @property
    def actor(self) -> str:
        return f"device:{self.client_id}"


def config_document(row) -> dict:
    """SPEC §6's remote configuration document of one enrolment."""
    return {"version": row.config_version,
            "pin": {"required": row.pin_required, **PIN_POLICY},
            "biometric": {"required": row.biometric_required}}


class DeviceService(Clocked):
    def __init__(self, database: Database, seed_key: SeedKey, otp: OtpService, clock: Callable[[], float],
                 actor: str = "api"):
        self.database = database
        self.seed_key = seed_key
        self.otp = otp  # checks the activation's code like a login's (the replay guard included)
        self.clock = clock
        self.actor = actor


    # -- activation ----------------------------------------------------------------------------

    def activate(self, activation_code: str, otp: str, *, device_name: str, platform: str,
                 blocks: BlockService) -> dict:
        """Register the app's device; the returned ``device_token`` is the only copy."""
        digest = self.seed_key.digest(activation_code.encode(), ACTIVATION_PURPOSE)
        with self.database.engine.connect() as conn:
            row = conn.execute(select(otp_enrolments, users.c.username)
                               .join(users, users.c.id == otp_enrolments.c.user_id)
                               .where(otp_enrolments.c.activation_code_hash == digest)).first()
        if row is None:
            raise ActivationRefused("activation_code", "the activation code is unknown or already used")
        now = self.now()
        if row.expires_at <= now:
            self._audit(row.username, "reject", "activation_code_expired")
            raise ActivationRefused("activation_code", "the activation code expired; ask for a new enrolment")
        user = find_user(self.database, row.username)
        if user is None or user.status(now) != "active":
            self._audit(row.username, "reject", "account_refused")
            raise ActivationRefused("activation_code", "this account may not activate a device now")
        enrolment = Enrolment(row.id, row.user_id, row.verified, row.expires_at, row.last_step, row.secret_encrypted)
        result = self.otp.check(enrolment, otp)
        if result is not CodeCheck.OK:
            locked = blocks.record_failure(user.id, user.username)
            self._audit(row.username, "reject", "bad_otp" if result is CodeCheck.BAD else "otp_replay")
            raise ActivationRefused("otp", "the one-time code is wrong", locked=locked)
        token = DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(DEVICE_TOKEN_BYTES)
        device_id = "dev_" + secrets.token_hex(8)
        with self.database.writer.begin() as conn:
            claimed = conn.execute(
                update(otp_enrolments)
                .where(otp_enrolments.c.id == row.id, otp_enrolments.c.activation_code_hash == digest)
                .values(activation_code_hash=None, verified=True, verified_at=row.verified_at or now)).rowcount
            if claimed != 1:  # another activation spent the code first
                raise ActivationRefused("activation_code", "the activation code is unknown or already used")
            conn.execute(delete(devices).where(devices.c.enrolment_id == row.id))
            conn.execute(insert(devices).values(fitted(devices, dict(
                device_id=device_id, enrolment_id=row.id, user_id=user.id, name=device_name, platform=platform,
                token_hash=self._digest(token), created_at=now))))
        blocks.clear_failures(user.id)
        self._audit(row.username, "ok", "otp.activated", device_id=device_id, platform=platform)
        return {"device_id": device_id, "device_token": token, "username": user.username}

    # -- device tokens ---------------------------------------------------------------------------

    def authenticate(self, token: str) -> DevicePrincipal | None:
        """The device a token was issued to; None for unknown or revoked tokens."""
        if not token.startswith(DEVICE_TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
            return None
        digest = self._digest(token)
        with self.database.engine.connect() as conn:
            row = conn.execute(select(devices.c.id, devices.c.device_id, devices.c.token_hash, devices.c.user_id,
                                      devices.c.enrolment_id, users.c.username)
                               .join(users, users.c.id == devices.c.user_id)
                               .where(devices.c.token_hash == digest)).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        return DevicePrincipal(row.device_id, row.username, DEVICE_TYPE, row.user_id, row.id, row.enrolment_id)

    def device_of(self, user_id: int) -> int | None:
        """The row id of the user's activated device, if any."""
        with self.database.engine.connect() as conn:
            return conn.execute(select(devices.c.id).where(devices.c.user_id == user_id)).scalar()

    # -- remote configuration (SPEC §6) -----------------------------------------------------------

    def config(self, device: DevicePrincipal) -> dict:
        with self.database.engine.connect() as conn:
            row = conn.execute(select(otp_enrolments).where(otp_enrolments.c.id == device.enrolment_id)).first()
        if row is None:
            raise NotFound("enrolment", device.name)
        return config_document(row)

    def acknowledge(self, device: DevicePrincipal, version: int) -> dict:
        """Record that the app applied ``version``; only the current version is accepted."""
        now = self.now()
        with self.database.writer.begin() as conn:
            applied = conn.execute(
                update(otp_enrolments)
                .where(otp_enrolments.c.id == device.enrolment_id, otp_enrolments.c.config_version == version)
                .values(applied_version=version, last_sync_at=now)).rowcount
        if applied != 1:
            current = self.config(device)["version"]
            raise Conflict("version", f"version {version} is not the current configuration (version {current}); "
                                      "fetch it again")
        return {"version": version, "applied_version": version, "last_sync_at": now}

    # -- helpers -----------------------------------------------------------------------------------

    def _digest(self, token: str) -> str:
        return self.seed_key.digest(token.encode(), DEVICE_TOKEN_PURPOSE)

    def _audit(self, username: str, result: str, reason: str, **detail) -> None:
        record_event(self.database, "device", username=username, result=result, reason=reason, actor=self.actor,
                     detail=detail)
