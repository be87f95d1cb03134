"""NAS devices kept in the database (static ones live in ``[[nas]]``): add, list, remove,
rotate the secret. Secrets are stored AES-GCM encrypted with the seed key."""

from __future__ import annotations

import secrets

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from radiusd.clients import NasError, check_secret, nas_from_row, parse_network
from radiusd.config import Config
from radiusd.crypto import SeedKey
from radiusd.db.engine import Database
from radiusd.db.tables import nas_devices, utcnow
from radiusd.model import Nas
from radiusd.services import Conflict, Invalid, NotFound

MFA_MODES = ("challenge", "append")
GENERATED_SECRET_BYTES = 24


def secret_purpose(name: str) -> str:
    return f"nas-secret:{name}"


def generate_secret() -> str:
    return secrets.token_urlsafe(GENERATED_SECRET_BYTES)


class NasService:
    def __init__(self, database: Database, seed_key: SeedKey, config: Config, warn=print):
        self.database = database
        self.seed_key = seed_key
        self.config = config
        self.warn = warn

    def add(self, name: str, address: str, secret: str, *, require_message_authenticator: bool | None = None,
            mfa_mode: str | None = None, coa_port: int = 3799) -> dict:
        if not 1 <= len(name) <= 64 or not name.isprintable():
            raise Invalid("name", "NAS name must be 1 to 64 printable characters")
        if any(section.name == name for section in self.config.nas):
            raise Conflict("name", f"NAS {name} is defined in the configuration file")
        if mfa_mode is not None and mfa_mode not in MFA_MODES:
            raise Invalid("mfa_mode", "mfa_mode must be challenge or append")
        if not 1 <= coa_port <= 65535:
            raise Invalid("coa_port", "coa_port must be 1 to 65535")
        try:
            network = parse_network(address)
        except NasError as exc:
            raise Invalid("address", str(exc)) from None
        self._check_secret(name, secret)
        now = utcnow()
        try:
            with self.database.writer.begin() as conn:
                conn.execute(insert(nas_devices).values(
                    name=name, address=str(network), coa_port=coa_port, mfa_mode=mfa_mode,
                    require_message_authenticator=require_message_authenticator,
                    secret_encrypted=self.seed_key.encrypt(secret.encode(), secret_purpose(name)),
                    created_at=now, updated_at=now))
        except IntegrityError:
            raise Conflict("name", f"NAS {name} already exists") from None
        return self.show(name)

    def show(self, name: str) -> dict:
        with self.database.engine.connect() as conn:
            row = conn.execute(select(nas_devices).where(nas_devices.c.name == name)).first()
        if row is None:
            raise NotFound("NAS", name)
        return _view(row)

    def list(self) -> list[dict]:
        """Configured NAS entries first, then database entries; never a secret."""
        static = [{"name": s.name, "address": str(parse_network(s.address)),
                   "require_message_authenticator": s.require_message_authenticator,
                   "mfa_mode": s.mfa_mode, "coa_port": s.coa_port, "origin": "config"}
                  for s in self.config.nas]
        with self.database.engine.connect() as conn:
            rows = conn.execute(select(nas_devices).order_by(nas_devices.c.name)).all()
        return static + [_view(row) for row in rows]

    def _refuse_static(self, name: str) -> None:
        if any(section.name == name for section in self.config.nas):
            raise Conflict("name", f"NAS {name} is defined in the configuration file; change it there")

    def remove(self, name: str) -> None:
        self._refuse_static(name)
        with self.database.writer.begin() as conn:
            if conn.execute(delete(nas_devices).where(nas_devices.c.name == name)).rowcount == 0:
                raise NotFound("NAS", name)

    def rotate_secret(self, name: str, secret: str) -> None:
        self._refuse_static(name)
        self._check_secret(name, secret)
        with self.database.writer.begin() as conn:
            result = conn.execute(update(nas_devices).where(nas_devices.c.name == name).values(
                secret_encrypted=self.seed_key.encrypt(secret.encode(), secret_purpose(name)),
                updated_at=utcnow()))
            if result.rowcount == 0:
                raise NotFound("NAS", name)

    def _check_secret(self, name: str, secret: str) -> None:
        try:
            check_secret(name, secret.encode(), self.warn)
        except NasError as exc:
            raise Invalid("secret", str(exc)) from None

    def registry_entries(self) -> list[Nas]:
        """Database NAS entries with their secrets decrypted, for the NAS registry."""
        with self.database.engine.connect() as conn:
            rows = conn.execute(select(nas_devices)).all()
        return [nas_from_row(row, self.seed_key.decrypt(row.secret_encrypted, secret_purpose(row.name)),
                             self.config) for row in rows]


def _view(row) -> dict:
    return {"name": row.name, "address": row.address,
            "require_message_authenticator": row.require_message_authenticator,
            "mfa_mode": row.mfa_mode, "coa_port": row.coa_port, "origin": "database"}
