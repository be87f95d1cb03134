"""The seed key against the database: its check value, and rotation.

The database keeps one ``key_checks`` row: the keyed-digest key (``SeedKey.digest_key``)
sealed with the seed key. Opening it proves the key (AES-GCM authenticates) and yields the
digest key, which therefore outlives a rotation: API client secrets, tokens and activation
codes are stored as digests that cannot be recomputed without their plaintext.

A database without the row (upgraded in-process, or by a release without it) gets it from the
first key that decrypts what is stored (one NAS secret and one TOTP seed), or from any key
while nothing is encrypted yet.
"""

from __future__ import annotations

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from radiusd.config import ConfigError
from radiusd.crypto import DecryptionError, SeedKey
from radiusd.db.engine import Database
from radiusd.db.tables import key_checks, nas_devices, operators, otp_enrolments, utcnow
from radiusd.services import Invalid
from radiusd.services.audit import record_event
from radiusd.services.nas import secret_purpose
from radiusd.services.operators import operator_seed_purpose
from radiusd.services.otp import seed_purpose

CHECK_NAME = "seed_key"
CHECK_PURPOSE = "key-check"


class WrongSeedKey(ConfigError):
    """The seed key does not open this database's key check value."""


def _sealed(table):
    """The query of ``table``'s sealed blobs, and the purpose a row's blob was sealed for."""
    if table is nas_devices:
        return select(nas_devices.c.id, nas_devices.c.secret_encrypted.label("blob"), nas_devices.c.name), \
            lambda row: secret_purpose(row.name)
    if table is operators:  # an operator's seed, once they have enrolled
        return select(operators.c.id, operators.c.secret_encrypted.label("blob"))\
            .where(operators.c.secret_encrypted.is_not(None)), lambda row: operator_seed_purpose(row.id)
    return select(otp_enrolments.c.id, otp_enrolments.c.secret_encrypted.label("blob"), otp_enrolments.c.user_id), \
        lambda row: seed_purpose(row.user_id)


SEALED_TABLES = (nas_devices, otp_enrolments, operators)


def open_seed_key(database: Database, key: SeedKey, source: str = "the seed key") -> SeedKey:
    """``key`` with the database's digest key; raises WrongSeedKey (one line) for another key.
    Writes the check value when the database has none (see the module docstring)."""
    with database.engine.connect() as conn:
        sealed = conn.execute(select(key_checks.c.sealed).where(key_checks.c.name == CHECK_NAME)).scalar()
    if sealed is None:
        _prove(database, key, source)
        try:
            with database.writer.begin() as conn:
                conn.execute(insert(key_checks).values(name=CHECK_NAME, updated_at=utcnow(),
                                                       sealed=key.encrypt(key.digest_key, CHECK_PURPOSE)))
        except IntegrityError:  # another process wrote it first: open that one
            return open_seed_key(database, key, source)
        return key
    try:
        return key.with_digest_key(key.decrypt(sealed, CHECK_PURPOSE))
    except DecryptionError:
        raise WrongSeedKey(f"{source} does not open this database's key check value: it is not the key the "
                           "database was written with") from None


def _prove(database: Database, key: SeedKey, source: str) -> None:
    """Refuse ``key`` unless it decrypts one stored blob of each kind (if any)."""
    with database.engine.connect() as conn:
        for table in SEALED_TABLES:
            query, purpose = _sealed(table)
            row = conn.execute(query.limit(1)).first()
            if row is None:
                continue
            try:
                key.decrypt(row.blob, purpose(row))
            except DecryptionError:
                raise WrongSeedKey(f"{source} does not decrypt the secrets stored in this database: "
                                   "it is not the key they were written with") from None


def rotate_seed_key(database: Database, old: SeedKey, new: SeedKey, actor: str = "cli") -> dict:
    """Re-encrypt every NAS secret and TOTP seed (users' and operators'), and the check value, from ``old`` (opened)
    to ``new`` in one transaction: any failure changes nothing. Returns the counts."""
    counts = {}
    try:
        with database.writer.begin() as conn:
            for table in SEALED_TABLES:
                query, purpose = _sealed(table)
                rows = conn.execute(query).all()
                for row in rows:
                    blob = new.encrypt(old.decrypt(row.blob, purpose(row)), purpose(row))
                    conn.execute(update(table).where(table.c.id == row.id).values(secret_encrypted=blob))
                counts[table.name] = len(rows)
            conn.execute(update(key_checks).where(key_checks.c.name == CHECK_NAME)
                         .values(sealed=new.encrypt(old.digest_key, CHECK_PURPOSE), updated_at=utcnow()))
    except DecryptionError as exc:
        raise Invalid("seed_key", f"{exc}; nothing was re-encrypted") from None
    record_event(database, "admin", result="ok", reason="seed_key.rotate", actor=actor, detail=counts)
    return counts
