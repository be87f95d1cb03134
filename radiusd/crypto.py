"""Secrets at rest and password hashing.

The seed key (32 random bytes, base64, in ``[security] seed_key``) encrypts TOTP seeds and NAS
secrets with AES-256-GCM; the associated data names what a blob is for, so a blob copied into
another row or column does not decrypt. Passwords are hashed with argon2id (argon2-cffi); bcrypt
hashes imported from another system (``$2a$``/``$2b$``/``$2y$``) are verified too, and upgraded
to argon2id on the next successful login like any hash with outdated parameters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from functools import cached_property
from pathlib import Path

import bcrypt
from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from radiusd.config import ConfigError, SecretRef, SecuritySection

BLOB_VERSION = b"\x01"
NONCE_LENGTH = 12
ARGON2_PREFIXES = ("$argon2id$", "$argon2i$", "$argon2d$")
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
BCRYPT_MAX_PASSWORD_BYTES = 72  # bcrypt reads no further; other systems truncated silently


def hash_scheme(stored: str) -> str | None:
    """``argon2`` or ``bcrypt`` for a well-formed hash this server can verify, else None."""
    if stored.startswith(ARGON2_PREFIXES):
        try:
            extract_parameters(stored)
        except (InvalidHashError, ValueError):
            return None
        return "argon2"
    if BCRYPT_HASH.fullmatch(stored):
        return "bcrypt"
    return None


SEED_KEY_FORM = ("a seed key is 32 random bytes, base64-encoded, on one line "
                 "(`radiusd-admin db upgrade` writes one where none exists)")


class DecryptionError(Exception):
    """A blob does not decrypt with this seed key (wrong key, corrupted, or moved)."""


class SeedKey:
    """The key of secrets at rest. ``digest_key`` (keyed digests) is derived from the seed key
    until the database's key check gives the one it keeps (``services/keys.py``): so a seed
    key rotation re-encrypts seeds and secrets while stored digests stay valid."""

    def __init__(self, key: bytes, digest_key: bytes | None = None):
        if len(key) != 32:
            raise ConfigError("seed key must be 32 bytes (base64-encoded)")
        self._key = key
        self._aead = AESGCM(key)
        self.digest_key = digest_key or hmac.new(key, b"radiusd keyed digests", hashlib.sha256).digest()

    def with_digest_key(self, digest_key: bytes) -> "SeedKey":
        return SeedKey(self._key, digest_key)

    @classmethod
    def load(cls, reference: SecretRef) -> "SeedKey":
        """The key ``[security] seed_key`` refers to; ConfigError naming the key and the fix."""
        if reference.file is not None and not Path(reference.file).exists():
            raise ConfigError(f"[security] seed_key: the seed key file {reference.file} does not exist; "
                              "`radiusd-admin db upgrade` creates it")
        try:
            text = reference.reveal()
        except ConfigError as exc:
            raise ConfigError(f"[security] seed_key: {exc}; {SEED_KEY_FORM}") from None
        try:
            key = base64.b64decode(text, validate=True)
        except binascii.Error:
            key = b""
        if len(key) != 32:
            where = f"the file {reference.file}" if reference.file is not None else "the value"
            raise ConfigError(f"[security] seed_key: {where} does not hold a seed key; {SEED_KEY_FORM}")
        return cls(key)

    def encrypt(self, plaintext: bytes, purpose: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_LENGTH)
        return BLOB_VERSION + nonce + self._aead.encrypt(nonce, plaintext, purpose.encode())

    def digest(self, value: bytes, purpose: str) -> str:
        """A keyed digest (HMAC-SHA256, hex): short codes stored this way resist brute force
        by whoever reads the database without the seed key."""
        return hmac.new(self.digest_key, purpose.encode() + b"\0" + value, hashlib.sha256).hexdigest()

    def decrypt(self, blob: bytes, purpose: str) -> bytes:
        if blob[:1] != BLOB_VERSION:
            raise DecryptionError("unknown blob version")
        if len(blob) < 1 + NONCE_LENGTH + 16:  # version, nonce, GCM tag
            raise DecryptionError(f"{purpose} is truncated")
        nonce = blob[1:1 + NONCE_LENGTH]
        try:
            return self._aead.decrypt(nonce, blob[1 + NONCE_LENGTH:], purpose.encode())
        except InvalidTag:
            raise DecryptionError(f"{purpose} does not decrypt with this seed key") from None


def create_seed_key_file(path: str | Path) -> bool:
    """Write a new seed key (mode 0600) if the file does not exist; True if one was written.
    ``radiusd-admin db upgrade`` and ``db rotate-seed-key`` create theirs with it."""
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    return True


class PasswordHasher:
    """argon2id with the configured parameters; tells when a stored hash needs upgrading."""

    def __init__(self, security: SecuritySection):
        self._hasher = Argon2Hasher(
            time_cost=security.argon2_time_cost,
            memory_cost=security.argon2_memory_kib,
            parallelism=security.argon2_parallelism,
            type=Type.ID,
        )

    def hash(self, password: str | bytes) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: bytes) -> bool:
        if not stored:
            return False
        if stored.startswith("$2"):
            try:
                return bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD_BYTES], stored.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                return False
        try:
            return self._hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """True for a hash that is not argon2id with the configured parameters (bcrypt included)."""
        try:
            return self._hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    @cached_property
    def _dummy(self) -> str:
        return self._hasher.hash(secrets.token_urlsafe(16))

    def dummy_verify(self, password: bytes | None) -> None:
        """Spend what a real verify costs, so unknown users answer as slowly as known ones."""
        self.verify(self._dummy, password or b"")
