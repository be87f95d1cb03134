"""OtpService (SPEC §3.1, issue 3) on SQLite and PostgreSQL: enrolment and its expiry, the
first-code verification, replay protection (also under a thread race) and seeds at rest."""

from __future__ import annotations

import base64
import os
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest
from sqlalchemy import select, update

from radiusd.config import MfaSection, SecuritySection
from radiusd.crypto import DecryptionError, PasswordHasher, SeedKey
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import otp_enrolments
from radiusd.dictionary import RadiusDictionary
from radiusd.services import Conflict, Invalid, NotFound
from radiusd.services.otp import CodeCheck, OtpService, is_code, matching_step
from radiusd.services.users import UserService, find_user
from tests.fakes import Clock, race

T0 = 1_800_000_015.0  # 15 s into a 30 s step, so ±1 step arithmetic below never straddles a boundary


@pytest.fixture(scope="module")
def hasher():
    return PasswordHasher(SecuritySection())


def open_database(url: str) -> Database:
    database = Database(url, pool_size=8)
    migrate.upgrade(database)
    return database


def make_otp(database: Database, hasher: PasswordHasher, clock: Clock) -> OtpService:
    users = UserService(database, hasher, RadiusDictionary(), actor="test")
    for name in ("bob", "carol"):
        users.create(name, {})
    return OtpService(database, SeedKey(os.urandom(32)), MfaSection(enrollment_ttl_seconds=600, totp_window=1),
                      clock, actor="test")


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def database(database_url):
    """SQLite and PostgreSQL (a fresh PostgreSQL database per test costs about a second, so the
    checks that do not depend on the database run on SQLite only)."""
    database = open_database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def otp(database, hasher, clock):
    return make_otp(database, hasher, clock)


@pytest.fixture
def sqlite_database(sqlite_url):
    database = open_database(sqlite_url)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_otp(sqlite_database, hasher, clock):
    return make_otp(sqlite_database, hasher, clock)


def secret_of(enrolment: dict) -> str:
    return parse_qs(urlparse(enrolment["otpauth_uri"]).query)["secret"][0]


def totp_of(enrolment: dict) -> pyotp.TOTP:
    return pyotp.TOTP(secret_of(enrolment))


def code_at(enrolment: dict, moment: float) -> str:
    return totp_of(enrolment).at(moment)


def user_id(database, username: str) -> int:
    return find_user(database, username).id


def row_of(database, username: str):
    with database.engine.connect() as conn:
        return conn.execute(select(otp_enrolments)
                            .where(otp_enrolments.c.user_id == user_id(database, username))).first()


def verified(otp: OtpService, clock: Clock, username: str = "bob") -> dict:
    """An enrolment verified with the code of the step before T0 (so T0's step is still fresh)."""
    enrolment = otp.enroll(username)
    assert otp.verify(username, code_at(enrolment, clock.now - 30))
    return enrolment


# -- enrolment -----------------------------------------------------------------------------------

def test_enrolment_is_unverified_until_a_good_code_verifies_it_and_a_wrong_one_does_not(otp, database, clock):
    enrolment = otp.enroll("bob")
    uri = urlparse(enrolment["otpauth_uri"])
    assert (uri.scheme, uri.netloc, uri.path) == ("otpauth", "totp", "/radiusd:bob")
    assert parse_qs(uri.query)["issuer"] == ["radiusd"]
    assert len(base64.b32decode(secret_of(enrolment))) == 20  # 160-bit seed
    assert enrolment["qr_svg"].startswith("data:image/svg+xml")
    assert enrolment["activation_code"]
    assert enrolment["expires_at"] == otp.now() + timedelta(seconds=600)
    row = row_of(database, "bob")
    assert (row.verified, row.verified_at, row.last_step) == (False, None, None)
    assert otp.verified_enrolment(row.user_id) is None  # not a usable factor yet
    [listed] = otp.list()
    assert (listed["username"], listed["verified"], listed["verified_at"]) == ("bob", False, None)

    good = code_at(enrolment, clock.now)
    for wrong in {f"{(int(good) + 1) % 10**6:06d}", "12345", code_at(enrolment, clock.now + 90)} - window_codes(
            enrolment, clock.now):
        assert otp.verify("bob", wrong) is False, wrong  # wrong digits, too short, outside ±1 step
    row = row_of(database, "bob")
    assert (row.verified, row.verified_at, row.last_step) == (False, None, None)

    clock.now += 7
    assert otp.verify("bob", code_at(enrolment, clock.now)) is True
    row = row_of(database, "bob")
    assert row.verified is True
    assert row.verified_at == otp.now()
    assert row.last_step == int(clock.now) // 30
    assert otp.verified_enrolment(row.user_id) is not None
    [listed] = otp.list()
    assert (listed["verified"], listed["verified_at"], listed["enrolment_expires_at"]) == (True, otp.now(), None)


def test_an_expired_enrolment_cannot_be_verified(sqlite_otp, sqlite_database, clock):
    otp, database = sqlite_otp, sqlite_database
    for enrolled_at, verified_at in [(T0, T0 + 600), (T0, T0 + 601), (T0, T0 + 86_400),
                                     (T0 - 3600, T0)]:  # enrolled an hour ago with a 600 s ttl
        clock.now = enrolled_at
        enrolment = otp.enroll("bob")
        clock.now = verified_at
        with pytest.raises(Invalid, match="expired"):
            otp.verify("bob", code_at(enrolment, clock.now))
        assert row_of(database, "bob").verified is False
    clock.now = T0
    enrolment = otp.enroll("bob")  # re-enrolling is the way out
    clock.now = T0 + 599
    assert otp.verify("bob", code_at(enrolment, clock.now)) is True


def test_enrolling_again_replaces_a_pending_enrolment_but_not_a_verified_one_until_reset(otp, database, clock):
    first = otp.enroll("bob")
    first_row = row_of(database, "bob")
    second = otp.enroll("bob")
    assert secret_of(first) != secret_of(second)
    assert second["activation_code"] != first["activation_code"]
    second_row = row_of(database, "bob")
    assert second_row.id == first_row.id and second_row.secret_encrypted != first_row.secret_encrypted
    if code_at(first, clock.now) not in window_codes(second, clock.now):
        assert otp.verify("bob", code_at(first, clock.now)) is False  # the replaced seed is dead
    assert otp.verify("bob", code_at(second, clock.now)) is True

    with pytest.raises(Conflict):
        otp.enroll("bob")
    assert row_of(database, "bob").verified is True  # untouched
    assert row_of(database, "bob").secret_encrypted == second_row.secret_encrypted
    otp.reset("bob")
    assert row_of(database, "bob") is None
    assert otp.list() == []
    third = otp.enroll("bob")
    assert secret_of(third) != secret_of(second)
    assert row_of(database, "bob").verified is False


def window_codes(enrolment: dict, moment: float) -> set[str]:
    return {code_at(enrolment, moment + 30 * k) for k in (-1, 0, 1)}


def test_unknown_users_and_missing_enrolments_are_not_found(sqlite_otp):
    otp = sqlite_otp
    with pytest.raises(NotFound):
        otp.enroll("nobody")
    with pytest.raises(NotFound):
        otp.verify("nobody", "123456")
    with pytest.raises(NotFound):
        otp.verify("carol", "123456")  # known user, no enrolment
    with pytest.raises(NotFound):
        otp.reset("carol")


def test_enrolments_are_per_user(sqlite_otp, clock):
    otp = sqlite_otp
    bob = verified(otp, clock, "bob")
    carol = otp.enroll("carol")
    assert secret_of(bob) != secret_of(carol)
    code = code_at(bob, clock.now)
    if code not in window_codes(carol, clock.now):  # one chance in ~300 000 of a collision
        assert otp.verify("carol", code) is False
    assert [(row["username"], row["verified"]) for row in otp.list()] == [("bob", True), ("carol", False)]


# -- checks and replay protection -----------------------------------------------------------------

def test_a_code_is_accepted_once_and_no_older_step_after_a_newer_one(otp, database, clock):
    enrolment = verified(otp, clock)  # verified with step T0-1
    stored = otp.verified_enrolment(user_id(database, "bob"))
    code = code_at(enrolment, clock.now)
    assert otp.check(stored, code) is CodeCheck.OK
    assert otp.check(stored, code) is CodeCheck.REPLAY
    clock.now += 10  # same step, a bit later
    assert otp.check(stored, code) is CodeCheck.REPLAY
    clock.now -= 10
    assert otp.check(stored, code_at(enrolment, clock.now + 30)) is CodeCheck.OK  # step +1 (clock skew)
    assert otp.check(stored, code_at(enrolment, clock.now)) is CodeCheck.REPLAY  # older than the one used
    assert otp.check(stored, code_at(enrolment, clock.now - 30)) is CodeCheck.REPLAY
    assert row_of(database, "bob").last_step == int(clock.now) // 30 + 1
    # the guard lives in the database: a new service instance (a restart) still refuses
    other = OtpService(database, otp.seed_key, otp.mfa, clock)
    assert other.check(other.verified_enrolment(stored.user_id), code_at(enrolment, clock.now + 30)) \
        is CodeCheck.REPLAY
    clock.now += 60  # two steps later the next step's code is new again
    assert otp.check(stored, code_at(enrolment, clock.now)) is CodeCheck.OK


def test_the_verification_code_cannot_be_replayed_for_a_login(sqlite_otp, sqlite_database, clock):
    otp = sqlite_otp
    enrolment = otp.enroll("bob")
    code = code_at(enrolment, clock.now)
    assert otp.verify("bob", code) is True
    stored = otp.verified_enrolment(user_id(sqlite_database, "bob"))
    assert otp.check(stored, code) is CodeCheck.REPLAY
    assert otp.verify("bob", code) is False  # verify of a verified enrolment consumes like a login
    assert otp.verify("bob", code_at(enrolment, clock.now + 30)) is True


FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")
NOT_CODES = ["", "12345", "1234567", "12 345", " 123456", "123456 ", "abcdef", "12345a", "+12345", "-12345",
             "١٢٣٤٥٦", "12345\n", "123456789012", "１２３４５６"]


def test_full_width_digits_and_anything_but_six_ascii_digits_are_bad(sqlite_otp, sqlite_database, clock):
    otp, database = sqlite_otp, sqlite_database
    enrolment = verified(otp, clock)
    stored = otp.verified_enrolment(user_id(database, "bob"))
    code = code_at(enrolment, clock.now)
    full_width = code.translate(FULL_WIDTH)
    assert totp_of(enrolment).verify(full_width, for_time=clock.now)  # pyotp alone would take it (NFKC)
    assert otp.check(stored, full_width) is CodeCheck.BAD
    for text in NOT_CODES + [code + "0", "0" + code, code[:5], f" {code}"]:
        assert otp.check(stored, text) is CodeCheck.BAD, repr(text)
        assert is_code(text) is False, repr(text)
    assert otp.check(stored, code) is CodeCheck.OK  # the refused attempts consumed nothing


def test_a_code_of_another_users_seed_is_bad(sqlite_otp, sqlite_database, clock):
    otp = sqlite_otp
    bob = verified(otp, clock, "bob")
    carol = verified(otp, clock, "carol")
    stored = otp.verified_enrolment(user_id(sqlite_database, "bob"))
    code = code_at(carol, clock.now)
    if code not in window_codes(bob, clock.now):  # one chance in ~300 000 of a collision
        assert otp.check(stored, code) is CodeCheck.BAD
    assert otp.check(stored, code_at(bob, clock.now)) is CodeCheck.OK


def test_eight_threads_checking_one_valid_code_get_exactly_one_ok(otp, database, clock):
    enrolment = verified(otp, clock)
    code = code_at(enrolment, clock.now)
    stored = otp.verified_enrolment(user_id(database, "bob"))
    results, errors = race(8, lambda _: otp.check(stored, code))
    assert not errors, errors
    assert sorted(result.value for result in results) == ["ok"] + ["replay"] * 7
    assert row_of(database, "bob").last_step == int(clock.now) // 30


def test_a_step_is_guarded_by_the_stored_row_not_by_process_memory(sqlite_otp, sqlite_database, clock):
    otp, database = sqlite_otp, sqlite_database
    enrolment = verified(otp, clock)
    code = code_at(enrolment, clock.now)
    stored = otp.verified_enrolment(user_id(database, "bob"))
    assert otp.check(stored, code) is CodeCheck.OK
    with database.writer.begin() as conn:
        conn.execute(update(otp_enrolments).where(otp_enrolments.c.id == stored.id).values(last_step=0))
    assert otp.check(stored, code) is CodeCheck.OK
    assert otp.check(stored, code) is CodeCheck.REPLAY


# -- seeds at rest -----------------------------------------------------------------------------------

def test_the_seed_is_not_stored_in_plaintext(otp, database, database_url, clock):
    enrolment = verified(otp, clock)
    secret = secret_of(enrolment)
    seed = base64.b32decode(secret)
    needles = [seed, secret.encode(), secret.lower().encode(), base64.b64encode(seed), seed.hex().encode()]
    blob = bytes(row_of(database, "bob").secret_encrypted)
    for needle in needles:
        assert needle not in blob
    # the blob opens only with the seed key, and only as this user's seed
    bob_id, carol_id = user_id(database, "bob"), user_id(database, "carol")
    assert otp.seed_key.decrypt(blob, f"totp-seed:{bob_id}") == seed
    with pytest.raises(DecryptionError):
        SeedKey(os.urandom(32)).decrypt(blob, f"totp-seed:{bob_id}")
    with pytest.raises(DecryptionError):
        otp.seed_key.decrypt(blob, f"totp-seed:{carol_id}")
    if database_url.startswith("sqlite"):
        path = Path(database_url.removeprefix("sqlite:///"))
        files = [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-journal")) if p.exists()]
        assert path in files
        for file in files:  # the main file and the write-ahead log as they are on disk
            raw = file.read_bytes()
            for needle in needles:
                assert needle not in raw, file


# -- pure helpers ------------------------------------------------------------------------------------

def test_matching_step_uses_integer_unix_time_and_the_window():
    seed = os.urandom(20)
    totp = pyotp.TOTP(base64.b32encode(seed).decode())
    now = int(time.time())
    step = now // 30
    assert matching_step(seed, totp.at(now), now, 0) == step
    assert matching_step(seed, totp.at(now - 30), now, 1) == step - 1
    assert matching_step(seed, totp.at(now + 30), now, 1) == step + 1
    if totp.at(now + 60) not in {totp.at(now + 30 * k) for k in (-1, 0, 1)}:
        assert matching_step(seed, totp.at(now + 60), now, 1) is None
    if totp.at(now - 30) != totp.at(now):
        assert matching_step(seed, totp.at(now - 30), now, 0) is None


def test_is_code_takes_six_ascii_digits_only():
    assert is_code("000000") and is_code("123456")
    for text in NOT_CODES:
        assert not is_code(text), repr(text)
