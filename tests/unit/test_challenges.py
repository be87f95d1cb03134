"""The challenge State store (SPEC §3.1): single use, expiry, NAS and user checks, the per-user cap."""

from __future__ import annotations

import hashlib
import os

import pytest
from sqlalchemy import select

from radiusd.challenges import STATE_BYTES, ChallengeStore, PendingChallenge, state_hash
from radiusd.config import MfaSection, SecuritySection
from radiusd.crypto import PasswordHasher
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import challenges
from radiusd.decisions import Challenge, Reason
from radiusd.dictionary import RadiusDictionary
from radiusd.metrics import Metrics
from radiusd.services.users import UserService, find_user
from tests.fakes import Clock, race

T0 = 1_800_000_000.0


def open_store(url: str, clock: Clock):
    database = Database(url, pool_size=8)
    migrate.upgrade(database)
    service = UserService(database, PasswordHasher(SecuritySection()), RadiusDictionary(), actor="test")
    for name in ("bob", "carol"):
        service.create(name, {})
    return database, ChallengeStore(database, clock, Metrics())


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def setup(sqlite_url, clock):
    database, store = open_store(sqlite_url, clock)
    yield database, store
    database.dispose()


@pytest.fixture
def store(setup):
    return setup[1]


@pytest.fixture
def database(setup):
    return setup[0]


@pytest.fixture
def bob(database):
    return find_user(database, "bob")


def rows(database):
    with database.engine.connect() as conn:
        return conn.execute(select(challenges)).all()


def test_a_state_is_random_and_taken_once(store, database, bob):
    state = store.create(bob, "nas1", "totp", 120)
    assert isinstance(state, bytes) and len(state) == STATE_BYTES >= 16
    assert store.create(bob, "nas1", "totp", 120) != state
    pending = store.take(state, nas="nas1", username="bob")
    assert isinstance(pending, PendingChallenge)
    assert (pending.user_id, pending.username, pending.nas, pending.factor, pending.code_hash) == \
        (bob.id, "bob", "nas1", "totp", None)
    assert pending.expires_at.timestamp() == T0 + 120
    assert store.take(state, nas="nas1", username="bob") is Reason.BAD_STATE  # single use
    assert len(rows(database)) == 1  # only the other State remains


def test_an_expired_state_is_refused_as_challenge_expired(store, clock, bob):
    state = store.create(bob, "nas1", "totp", 120)
    clock.now += 120
    assert store.take(state, nas="nas1", username="bob") is Reason.CHALLENGE_EXPIRED
    assert store.take(state, nas="nas1", username="bob") is Reason.BAD_STATE  # and it is gone
    live = store.create(bob, "nas1", "totp", 120)
    clock.now += 119.5
    assert isinstance(store.take(live, nas="nas1", username="bob"), PendingChallenge)


def test_creating_a_state_purges_expired_ones(store, database, clock, bob):
    store.create(bob, "nas1", "totp", 10)
    clock.now += 11
    store.create(bob, "nas1", "totp", 10)
    assert len(rows(database)) == 1


@pytest.mark.parametrize("nas,username", [("nas2", "bob"), ("nas1", "carol"), ("nas1", None), ("NAS1", "bob")])
def test_a_state_from_another_nas_or_for_another_user_is_a_bad_state_and_burnt(store, bob, nas, username):
    state = store.create(bob, "nas1", "totp", 120)
    assert store.take(state, nas=nas, username=username) is Reason.BAD_STATE
    # a misused State is consumed: it cannot be answered afterwards by anyone
    assert store.take(state, nas="nas1", username="bob") is Reason.BAD_STATE


def test_a_forged_state_is_a_bad_state(store, bob):
    state = store.create(bob, "nas1", "totp", 120)
    for forged in (os.urandom(STATE_BYTES), b"", b"\x00" * 16, state[:-1], state + b"\x00",
                   bytes([state[0] ^ 1]) + state[1:], state_hash(state).encode(),
                   bytes.fromhex(state_hash(state))):
        assert store.take(forged, nas="nas1", username="bob") is Reason.BAD_STATE, forged
    assert isinstance(store.take(state, nas="nas1", username="bob"), PendingChallenge)  # untouched


def test_only_a_sha256_of_the_state_is_stored(store, database, bob):
    state = store.create(bob, "nas1", "sms", 300, code_hash="c" * 64)
    [row] = rows(database)
    assert row.state_hash == hashlib.sha256(state).hexdigest()
    assert row.code_hash == "c" * 64
    for value in row:
        text = value if isinstance(value, (bytes, str)) else str(value)
        data = text if isinstance(text, bytes) else text.encode()
        assert state not in data and state.hex().encode() not in data
    pending = store.take(state, nas="nas1", username="bob")
    assert pending.code_hash == "c" * 64 and pending.factor == "sms"


def test_issue_counts_the_challenge_by_factor_and_returns_its_state(store, bob):
    before = store.metrics.challenges.labels(factor="totp")._value.get()
    decision = store.issue(bob, "nas1", "totp", 120, "Enter the code")
    assert isinstance(decision, Challenge)
    assert (decision.prompt, decision.factor, decision.reason) == ("Enter the code", "totp", Reason.CHALLENGE)
    assert repr(decision.state) not in repr(decision)  # the State is never logged with the decision
    assert store.metrics.challenges.labels(factor="totp")._value.get() == before + 1
    assert isinstance(store.take(decision.state, nas="nas1", username="bob"), PendingChallenge)


def test_eight_threads_taking_one_state_get_it_exactly_once(database_url, clock):
    database, store = open_store(database_url, clock)
    try:
        state = store.create(find_user(database, "bob"), "nas1", "totp", 120)
        results, errors = race(8, lambda _: store.take(state, nas="nas1", username="bob"))
        assert not errors, errors
        assert sum(isinstance(result, PendingChallenge) for result in results) == 1
        assert results.count(Reason.BAD_STATE) == 7
    finally:
        database.dispose()


# -- the per-user cap on pending challenges ----------------------------------------------------------

def test_a_challenge_beyond_the_cap_replaces_the_users_oldest(database_url, clock):
    database, _ = open_store(database_url, clock)
    store = ChallengeStore(database, clock, Metrics(), max_pending=3)
    try:
        bob, carol = find_user(database, "bob"), find_user(database, "carol")
        theirs = store.create(carol, "nas1", "totp", 120)
        states = []
        for _ in range(5):
            clock.now += 1
            states.append(store.create(bob, "nas1", "totp", 120))
        with database.engine.connect() as conn:
            kept = set(conn.execute(select(challenges.c.state_hash).where(challenges.c.user_id == bob.id)).scalars())
        assert kept == {state_hash(state) for state in states[2:]}  # the newest three
        for state in states[:2]:
            assert store.take(state, nas="nas1", username="bob") is Reason.BAD_STATE
        for state in states[2:]:
            assert isinstance(store.take(state, nas="nas1", username="bob"), PendingChallenge)
        assert isinstance(store.take(theirs, nas="nas1", username="carol"), PendingChallenge)  # another user's
    finally:
        database.dispose()


def test_instances_creating_challenges_for_one_user_at_once_keep_to_the_cap(database_url, clock):
    first, _ = open_store(database_url, clock)
    second = Database(database_url, pool_size=8)  # another instance sharing the database
    stores = [ChallengeStore(database, clock, Metrics(), max_pending=2) for database in (first, second)]
    try:
        bob = find_user(first, "bob")
        created, seen = [], []

        def create(index: int) -> None:
            for _ in range(10):
                created.append(stores[index % 2].create(bob, "nas1", "totp", 120))
                seen.append(len(rows(second)))  # what any reader sees between commits

        assert not race(8, create).errors
        assert len(created) == 80 and max(seen) == len(rows(first)) == 2
    finally:
        first.dispose()
        second.dispose()


def test_the_cap_defaults_to_the_configured_default(store):
    assert store.max_pending == MfaSection().max_pending_challenges == 5
