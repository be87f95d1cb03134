"""radiusd.crypto: the seed key (AES-GCM at rest) and argon2id password hashing."""

from __future__ import annotations

import base64
import os
import stat

import pytest

from radiusd.config import ConfigError, SecretRef, SecuritySection
from radiusd.crypto import DecryptionError, PasswordHasher, SeedKey, create_seed_key_file, hash_scheme


@pytest.fixture(scope="module")
def hasher():
    return PasswordHasher(SecuritySection())


@pytest.fixture
def key():
    return SeedKey(os.urandom(32))


def test_encrypt_then_decrypt_gives_the_plaintext_back(key):
    blob = key.encrypt(b"JBSWY3DPEHPK3PXP", "totp-seed:alice")
    assert b"JBSWY3DPEHPK3PXP" not in blob
    assert key.decrypt(blob, "totp-seed:alice") == b"JBSWY3DPEHPK3PXP"


def test_the_same_plaintext_encrypts_differently_each_time(key):
    assert key.encrypt(b"secret", "p") != key.encrypt(b"secret", "p")


def test_blob_does_not_decrypt_for_another_purpose(key):
    blob = key.encrypt(b"nas secret", "nas-secret:vpn1")
    with pytest.raises(DecryptionError):
        key.decrypt(blob, "nas-secret:vpn2")


def test_blob_does_not_decrypt_with_another_key(key):
    blob = key.encrypt(b"nas secret", "nas-secret:vpn1")
    with pytest.raises(DecryptionError):
        SeedKey(os.urandom(32)).decrypt(blob, "nas-secret:vpn1")


def test_tampered_blob_does_not_decrypt(key):
    blob = bytearray(key.encrypt(b"nas secret", "p"))
    blob[-1] ^= 1
    with pytest.raises(DecryptionError):
        key.decrypt(bytes(blob), "p")


@pytest.mark.parametrize("length", [0, 1, 5, 13, 28])
def test_truncated_blob_is_a_decryption_error(key, length):
    blob = key.encrypt(b"nas secret", "p")[:length]
    with pytest.raises(DecryptionError):
        key.decrypt(blob, "p")


def test_unknown_blob_version_is_a_decryption_error(key):
    blob = key.encrypt(b"nas secret", "p")
    with pytest.raises(DecryptionError, match="version"):
        key.decrypt(b"\x02" + blob[1:], "p")


def test_seed_key_file_is_created_with_mode_0600(tmp_path):
    path = tmp_path / "keys" / "seed.key"
    assert create_seed_key_file(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text().strip(), validate=True)) == 32
    key = SeedKey.load(SecretRef(file=str(path)))
    assert key.decrypt(key.encrypt(b"x", "p"), "p") == b"x"


def test_existing_seed_key_file_is_never_overwritten(tmp_path):
    path = tmp_path / "seed.key"
    create_seed_key_file(path)
    before = path.read_text()
    assert create_seed_key_file(path) is False
    assert path.read_text() == before


def test_two_created_seed_keys_differ(tmp_path):
    create_seed_key_file(tmp_path / "a")
    create_seed_key_file(tmp_path / "b")
    assert (tmp_path / "a").read_text() != (tmp_path / "b").read_text()


def test_seed_key_that_is_not_base64_is_a_config_error():
    with pytest.raises(ConfigError, match="base64"):
        SeedKey.load(SecretRef(value="this is not base64!"))


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_seed_key_of_the_wrong_length_is_a_config_error(size):
    with pytest.raises(ConfigError, match=r"seed_key: the value does not hold a seed key; a seed key is 32 random bytes"):
        SeedKey.load(SecretRef(value=base64.b64encode(os.urandom(size)).decode()))


def test_missing_seed_key_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist; `radiusd-admin db upgrade` creates it"):
        SeedKey.load(SecretRef(file=str(tmp_path / "absent.key")))


def test_password_verifies_against_its_hash(hasher):
    stored = hasher.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert "correct horse battery" not in stored
    assert hasher.verify(stored, b"correct horse battery") is True


def test_wrong_password_does_not_verify(hasher):
    stored = hasher.hash("correct horse battery")
    assert hasher.verify(stored, b"correct horse batterz") is False
    assert hasher.verify(stored, b"") is False


@pytest.mark.parametrize("stored", [None, "", "not-a-hash", "$argon2id$v=19$m=19456,t=2,p=1$garbage",
                                    "$2b$12$abcdefghijklmnopqrstuu"])
def test_missing_or_invalid_stored_hash_verifies_false(hasher, stored):
    assert hasher.verify(stored, b"anything") is False


def test_hash_with_current_parameters_needs_no_rehash(hasher):
    assert hasher.needs_rehash(hasher.hash("correct horse battery")) is False


def test_hash_needs_rehash_when_parameters_change(hasher):
    stored = hasher.hash("correct horse battery")
    stronger = PasswordHasher(SecuritySection(argon2_time_cost=3))
    assert stronger.needs_rehash(stored) is True
    assert stronger.verify(stored, b"correct horse battery") is True  # old hashes still log in
    assert stronger.needs_rehash(stronger.hash("correct horse battery")) is False


def test_invalid_stored_hash_needs_rehash(hasher):
    assert hasher.needs_rehash("not-a-hash") is True


def test_parameters_below_the_owasp_floor_are_refused():
    with pytest.raises(ValueError):
        SecuritySection(argon2_time_cost=1)
    with pytest.raises(ValueError):
        SecuritySection(argon2_memory_kib=1024)


def test_dummy_verify_accepts_any_password_without_raising(hasher):
    hasher.dummy_verify(b"whatever")
    hasher.dummy_verify(None)


# -- hashes imported from other systems (issue 6) ----------------------------------------------------

def test_bcrypt_hashes_verify_and_always_need_a_rehash(hasher):
    import bcrypt

    for prefix in (b"$2b$", b"$2a$", b"$2y$"):
        stored = (prefix + bcrypt.hashpw(b"correct horse battery", bcrypt.gensalt(4))[4:]).decode()
        assert hash_scheme(stored) == "bcrypt"
        assert hasher.verify(stored, b"correct horse battery") is True
        assert hasher.verify(stored, b"wrong horse battery") is False
        assert hasher.needs_rehash(stored) is True


def test_bcrypt_reads_the_first_72_bytes_of_a_long_password_as_other_systems_did(hasher):
    import bcrypt

    long_password = b"x" * 72
    stored = bcrypt.hashpw(long_password, bcrypt.gensalt(4)).decode()
    assert hasher.verify(stored, long_password + b"ignored beyond 72 bytes") is True


def test_hash_scheme_knows_argon2_and_bcrypt_and_nothing_else(hasher):
    assert hash_scheme(hasher.hash("correct horse battery")) == "argon2"
    for stored in ("$argon2id$v=19$m=19456,t=2,p=1$broken", "$2b$04$tooshort", "$1$md5$crypt",
                   "{SSHA}abc", "plaintext"):
        assert hash_scheme(stored) is None, stored
    assert hasher.verify("$2b$04$" + "." * 53, b"anything") is False  # well-formed, matches nothing
