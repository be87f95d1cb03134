"""radiusd.services.keys: the seed key's check value refuses another key; rotation re-encrypts
every seed and secret in one transaction (a failure midway changes nothing) and keeps the
stored digests (API client secrets) valid."""

from __future__ import annotations

import base64
import secrets

import pyotp
import pytest
from sqlalchemy import select, update

from radiusd.config import Config
from radiusd.crypto import SeedKey
from radiusd.db.tables import operators, otp_enrolments, users
from radiusd.services import Invalid
from radiusd.services.factory import Resources, Services
from radiusd.services.keys import WrongSeedKey, open_seed_key, rotate_seed_key

SECRET = "nas-secret-0123456789"


def new_key() -> SeedKey:
    return SeedKey(secrets.token_bytes(32))


def services_with(database, key: SeedKey) -> Services:
    return Services(Resources(Config(), database, seed_key=open_seed_key(database, key)), actor="cli")


def populate(database, key: SeedKey) -> dict:
    """Two NAS secrets, two TOTP enrolments and an API client sealed or digested with ``key``."""
    services = services_with(database, key)
    for name, address in (("nas-a", "10.0.0.5/32"), ("nas-b", "10.0.1.0/24")):
        services.nas.add(name, address, SECRET)
    for name in ("ann", "bob"):
        services.users.create(name, {})
        services.otp.enroll(name)
    for name in ("root", "eve"):  # an operator's seed is sealed once they enrol; eve has not
        services.operators.add(name, "admin", SECRET)
    services.operators.begin_enrolment("root")
    return services.api_clients.create("admin", "ops")


def test_first_open_writes_the_check_value_and_another_key_is_refused(database):
    key = new_key()
    open_seed_key(database, key)
    assert open_seed_key(database, key).digest_key == key.digest_key
    with pytest.raises(WrongSeedKey, match="does not open this database's key check value"):
        open_seed_key(database, new_key())


def test_without_a_check_value_a_key_that_cannot_decrypt_the_stored_secrets_is_refused(database):
    key = new_key()
    populate(database, key)
    with database.writer.begin() as conn:  # a database from a release without the check value
        conn.exec_driver_sql("DELETE FROM key_checks")
    with pytest.raises(WrongSeedKey, match="does not decrypt the secrets stored"):
        open_seed_key(database, new_key())
    open_seed_key(database, key)  # the right key writes it again
    with pytest.raises(WrongSeedKey):
        open_seed_key(database, new_key())


def test_rotation_re_encrypts_seeds_and_secrets_and_keeps_digests(database):
    old = new_key()
    client = populate(database, old)
    counts = rotate_seed_key(database, open_seed_key(database, old), new := new_key())
    assert counts == {"nas_devices": 2, "otp_enrolments": 2, "operators": 1}

    with pytest.raises(WrongSeedKey):
        open_seed_key(database, old)
    services = services_with(database, new)
    assert {nas.name: nas.secret for nas in services.nas.registry_entries()} == \
        {"nas-a": SECRET.encode(), "nas-b": SECRET.encode()}
    assert services.api_clients.issue_token(client["client_id"], client["client_secret"]) is not None
    enrolment = otp_row(database, "ann")
    seed = new.decrypt(enrolment.secret_encrypted, f"totp-seed:{enrolment.user_id}")
    assert services.otp.verify("ann", pyotp.TOTP(base64.b32encode(seed).decode()).now())
    root = operator_row(database, "root")
    seed = new.decrypt(root.secret_encrypted, f"operator-totp-seed:{root.id}")
    assert services.operators.verify_totp("root", pyotp.TOTP(base64.b32encode(seed).decode()).now(), "test").valid


def operator_row(database, name: str):
    with database.engine.connect() as conn:
        return conn.execute(select(operators).where(operators.c.name == name)).first()


def otp_row(database, username: str):
    with database.engine.connect() as conn:
        return conn.execute(select(otp_enrolments).join(users, users.c.id == otp_enrolments.c.user_id)
                            .where(users.c.username == username)).one()


def test_a_failure_midway_through_rotation_changes_nothing(database):
    old = new_key()
    populate(database, old)
    damaged = otp_row(database, "bob")  # the last blob rotated: NAS secrets and ann's seed come first
    with database.writer.begin() as conn:
        conn.execute(update(otp_enrolments).where(otp_enrolments.c.id == damaged.id)
                     .values(secret_encrypted=b"\x01" + bytes(40)))
    before = {nas.name: nas.secret for nas in services_with(database, old).nas.registry_entries()}

    with pytest.raises(Invalid, match="nothing was re-encrypted"):
        rotate_seed_key(database, open_seed_key(database, old), new_key())

    opened = open_seed_key(database, old)  # the check value is still the old key's
    assert {nas.name: nas.secret for nas in services_with(database, old).nas.registry_entries()} == before
    ann = otp_row(database, "ann")
    opened.decrypt(ann.secret_encrypted, f"totp-seed:{ann.user_id}")
