"""NAS devices kept in the database (static ones live in ``[[nas]]``): add, list, remove,
rotate the secret. Secrets are stored AES-GCM encrypted with the seed key."""

from __future__ import annotations

import secrets

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from radiusd.clients import NasError, NasRegistry, check_secret, nas_from_config, nas_from_row, parse_network
from radiusd.config import Config
from radiusd.crypto import SeedKey
from radiusd.db.engine import Database
from radiusd.db.tables import nas_devices, utcnow
from radiusd.model import Nas
from radiusd.services import Conflict, Invalid, NotFound, UnknownField
from radiusd.services.audit import record_event

MFA_MODES = ("challenge", "append")
GENERATED_SECRET_BYTES = 24
UPDATABLE = frozenset({"address", "secret", "mfa_mode", "coa_port", "require_message_authenticator"})


def secret_purpose(name: str) -> str:
    return f"nas-secret:{name}"


def generate_secret() -> str:
    return secrets.token_urlsafe(GENERATED_SECRET_BYTES)


class NasService:
    def __init__(self, database: Database, seed_key: SeedKey, config: Config, warn=print, actor: str = "cli"):
        self.database = database
        self.seed_key = seed_key
        self.config = config
        self.warn = warn
        self.actor = actor

    def _audit(self, action: str, name: str, **detail) -> None:
        record_event(self.database, "admin", client=name, result="ok", reason=action, actor=self.actor,
                     detail=detail)

    def add(self, name: str, address: str, secret: str, *, require_message_authenticator: bool | None = None,
            mfa_mode: str | None = None, coa_port: int = 3799) -> dict:
        if not 1 <= len(name) <= 64 or not name.isprintable():
            raise Invalid("name", "NAS name must be 1 to 64 printable characters")
        if any(section.name == name for section in self.config.nas):
            raise Conflict("name", f"NAS {name} is defined in the configuration file")
        values = self._validated(name, dict(address=address, secret=secret, mfa_mode=mfa_mode, coa_port=coa_port,
                                            require_message_authenticator=require_message_authenticator))
        self._refuse_overlap(name, values["address"])
        now = utcnow()
        try:
            with self.database.writer.begin() as conn:
                conn.execute(insert(nas_devices).values(name=name, created_at=now, updated_at=now, **values))
        except IntegrityError:
            raise Conflict("name", f"NAS {name} already exists") from None
        self._audit("nas.add", name)
        return self.show(name)

    def update(self, name: str, changes: dict) -> dict:
        """Change the given fields of a database NAS (``address``, ``secret``, ``mfa_mode``,
        ``coa_port``, ``require_message_authenticator``; None resets the last two to the default)."""
        self._refuse_static(name)
        unknown = set(changes) - UPDATABLE
        if unknown:
            raise UnknownField(sorted(unknown)[0], f"unknown field {sorted(unknown)[0]}")
        values = self._validated(name, changes)
        if "address" in values:
            self._refuse_overlap(name, values["address"])
        with self.database.writer.begin() as conn:
            if conn.execute(update(nas_devices).where(nas_devices.c.name == name)
                            .values(updated_at=utcnow(), **values)).rowcount == 0:
                raise NotFound("NAS", name)
        self._audit("nas.update", name, fields=sorted(changes))
        return self.show(name)

    def _validated(self, name: str, fields: dict) -> dict:
        """Column values for the given NAS fields; raises Invalid on the first bad one."""
        values = {}
        if "mfa_mode" in fields:
            if fields["mfa_mode"] is not None and fields["mfa_mode"] not in MFA_MODES:
                raise Invalid("mfa_mode", "mfa_mode must be challenge or append")
            values["mfa_mode"] = fields["mfa_mode"]
        if "coa_port" in fields:
            if not isinstance(fields["coa_port"], int) or not 1 <= fields["coa_port"] <= 65535:
                raise Invalid("coa_port", "coa_port must be 1 to 65535")
            values["coa_port"] = fields["coa_port"]
        if "require_message_authenticator" in fields:
            values["require_message_authenticator"] = fields["require_message_authenticator"]
        if "address" in fields:
            try:
                values["address"] = str(parse_network(fields["address"]))
            except NasError as exc:
                raise Invalid("address", str(exc)) from None
        if "secret" in fields:
            self._check_secret(name, fields["secret"])
            values["secret_encrypted"] = self.seed_key.encrypt(fields["secret"].encode(), secret_purpose(name))
        return values

    def show(self, name: str) -> dict:
        for section in self.config.nas:
            if section.name == name:
                return _static_view(section)
        with self.database.engine.connect() as conn:
            row = conn.execute(select(nas_devices).where(nas_devices.c.name == name)).first()
        if row is None:
            raise NotFound("NAS", name)
        return _view(row)

    def list(self, *, after: tuple[int, str] | None = None, limit: int | None = None) -> list[dict]:
        """Configured NAS entries first, then database entries, each by name; never a secret.

        ``after`` is the ``list_key`` of the last entry seen (keyset pagination)."""
        static = sorted((_static_view(section) for section in self.config.nas), key=lambda entry: entry["name"])
        query = select(nas_devices).order_by(nas_devices.c.name)
        if after is not None:
            static = [entry for entry in static if list_key(entry) > after]
            if after[0] == 1:
                query = query.where(nas_devices.c.name > after[1])
        if limit is not None:
            static = static[:limit]
            query = query.limit(max(0, limit - len(static)))
        with self.database.engine.connect() as conn:
            rows = conn.execute(query).all()
        return static + [_view(row) for row in rows]

    def _refuse_overlap(self, name: str, address: str) -> None:
        """Conflict when ``address`` shares an address with another entry (file or database):
        a request from it would go to one of the two, silently."""
        network = parse_network(address)
        for entry in self.list():
            other = parse_network(entry["address"])
            if entry["name"] != name and other.version == network.version and other.overlaps(network):
                where = "the configuration file" if entry["origin"] == "config" else "the database"
                raise Conflict("address", f"address {network} overlaps NAS {entry['name']} ({other}, in {where})")

    def version(self) -> tuple:
        """Changes whenever a database NAS is added, changed or removed: the server polls it, so
        the CLI's changes (from any host, on a shared database) apply without a SIGHUP."""
        with self.database.engine.connect() as conn:
            return tuple(conn.execute(select(func.count(), func.max(nas_devices.c.id),
                                             func.max(nas_devices.c.updated_at))).one())

    def _refuse_static(self, name: str) -> None:
        if any(section.name == name for section in self.config.nas):
            raise Conflict("name", f"NAS {name} is defined in the configuration file; change it there")

    def remove(self, name: str) -> None:
        self._refuse_static(name)
        with self.database.writer.begin() as conn:
            if conn.execute(delete(nas_devices).where(nas_devices.c.name == name)).rowcount == 0:
                raise NotFound("NAS", name)
        self._audit("nas.remove", name)

    def rotate_secret(self, name: str, secret: str) -> None:
        self._refuse_static(name)
        self._check_secret(name, secret)
        with self.database.writer.begin() as conn:
            result = conn.execute(update(nas_devices).where(nas_devices.c.name == name).values(
                secret_encrypted=self.seed_key.encrypt(secret.encode(), secret_purpose(name)),
                updated_at=utcnow()))
            if result.rowcount == 0:
                raise NotFound("NAS", name)
        self._audit("nas.rotate_secret", name)

    def _check_secret(self, name: str, secret: str) -> None:
        try:
            check_secret(name, secret.encode(), self.warn)
        except NasError as exc:
            raise Invalid("secret", str(exc)) from None

    def registry(self, config: Config | None = None) -> NasRegistry:
        """Static ``[[nas]]`` entries plus the database's, as one registry (what the server
        serves); ``config`` is a configuration read again (SIGHUP), else the service's."""
        config = config or self.config
        static = [nas_from_config(section, config, warn=self.warn) for section in config.nas]
        return NasRegistry(static + self.registry_entries(config))

    def registry_entries(self, config: Config | None = None) -> list[Nas]:
        """Database NAS entries with their secrets decrypted, for the NAS registry."""
        with self.database.engine.connect() as conn:
            rows = conn.execute(select(nas_devices)).all()
        return [nas_from_row(row, self.seed_key.decrypt(row.secret_encrypted, secret_purpose(row.name)),
                             config or self.config) for row in rows]


def list_key(entry: dict) -> tuple[int, str]:
    """Where an entry sits in ``NasService.list``: configuration entries first, then by name."""
    return (0 if entry["origin"] == "config" else 1, entry["name"])


def _static_view(section) -> dict:
    return {"name": section.name, "address": str(parse_network(section.address)),
            "require_message_authenticator": section.require_message_authenticator,
            "mfa_mode": section.mfa_mode, "coa_port": section.coa_port, "origin": "config"}


def _view(row) -> dict:
    return {"name": row.name, "address": row.address,
            "require_message_authenticator": row.require_message_authenticator,
            "mfa_mode": row.mfa_mode, "coa_port": row.coa_port, "origin": "database"}
