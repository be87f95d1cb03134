"""Blocking (SPEC §3.2, issue 4): BlockService on SQLite and PostgreSQL with a controlled clock,
the lockout settings, the user status it shows, and counting races between threads and between
processes. Failure counting by the ``account_state`` plugin is tests/plugins/test_account_state.py."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select

from radiusd.config import LockoutSection, SecuritySection
from radiusd.crypto import PasswordHasher
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.db.tables import audit_events, settings, users
from radiusd.dictionary import RadiusDictionary
from radiusd.services import Invalid, NotFound
from radiusd.services.blocks import AUTOMATIC_REASON, BlockService
from radiusd.services.users import UserService, find_user
from tests.fakes import Clock, race

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0
POLICY = LockoutSection(max_failures=5, window_seconds=600, block_seconds=1800, permanent=False)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


@pytest.fixture
def clock():
    return Clock(T0)


@pytest.fixture
def database(database_url):
    database = Database(database_url, pool_size=12)
    migrate.upgrade(database)
    service = UserService(database, PasswordHasher(SecuritySection()), RadiusDictionary(), actor="test")
    for name in ("bob", "carol", "dave"):
        service.create(name, {})
    yield database
    database.dispose()


@pytest.fixture
def user_service(database):
    return UserService(database, PasswordHasher(SecuritySection()), RadiusDictionary(), actor="test")


@pytest.fixture
def blocks(database, clock):
    """The service with the [lockout] defaults 5 failures / 600 s window / 1800 s block."""
    return BlockService(database, POLICY, clock, actor="test")


def uid(database, username: str = "bob") -> int:
    return find_user(database, username).id


def row(database, username: str = "bob"):
    with database.engine.connect() as conn:
        return conn.execute(select(users).where(users.c.username == username)).first()


def block_events(database, username: str = "bob") -> list:
    with database.engine.connect() as conn:
        return conn.execute(select(audit_events).where(audit_events.c.type == "block",
                                                       audit_events.c.username == username)
                            .order_by(audit_events.c.id)).all()


def fail(blocks: BlockService, database, times: int, username: str = "bob") -> list[bool]:
    user_id = uid(database, username)
    return [blocks.record_failure(user_id, username) for _ in range(times)]


# -- counting and automatic blocks -----------------------------------------------------------------

def test_failures_are_counted_and_the_user_is_blocked_exactly_at_max_failures(blocks, database, clock):
    assert fail(blocks, database, 4) == [False] * 4
    current = row(database)
    assert current.failed_attempts == 4 and current.first_failure_at == at(T0)
    assert current.blocked_until is None and blocks.list_blocked() == []
    assert block_events(database) == []

    clock.advance(10)
    assert fail(blocks, database, 1) == [True]
    current = row(database)
    assert current.failed_attempts == 5
    assert (current.blocked_at, current.blocked_until) == (at(T0 + 10), at(T0 + 10 + 1800))
    assert current.block_permanent is False and current.block_reason == AUTOMATIC_REASON
    [event] = block_events(database)
    assert (event.result, event.reason, event.actor) == ("blocked", "automatic", "lockout")
    assert event.detail["permanent"] is False
    assert row(database, "carol").failed_attempts == 0  # another user is not touched


def test_the_failure_series_restarts_when_its_first_failure_leaves_the_window(blocks, database, clock):
    fail(blocks, database, 4)
    clock.advance(600)  # the first failure is now exactly window_seconds old: the series is over
    assert fail(blocks, database, 1) == [False]
    assert (row(database).failed_attempts, row(database).first_failure_at) == (1, at(T0 + 600))
    clock.advance(599)
    assert fail(blocks, database, 3) == [False] * 3
    assert row(database).failed_attempts == 4
    assert fail(blocks, database, 1) == [True]  # five within the window of the new series


def test_a_timed_block_ends_by_itself_and_the_next_failure_starts_a_fresh_series(blocks, database, clock):
    fail(blocks, database, 5)
    clock.advance(1799)
    assert [entry["username"] for entry in blocks.list_blocked()] == ["bob"]
    assert blocks.count_blocked() == 1
    clock.advance(1)  # blocked_until reached: the stored UTC time ends it, no timer
    assert blocks.list_blocked() == [] and blocks.count_blocked() == 0
    assert fail(blocks, database, 1) == [False]
    assert (row(database).failed_attempts, row(database).first_failure_at) == (1, at(T0 + 1800))
    assert fail(blocks, database, 3) == [False] * 3
    assert fail(blocks, database, 1) == [True]  # a full new series blocks again
    assert [event.reason for event in block_events(database)] == ["automatic", "automatic"]


def test_failures_counted_while_blocked_start_no_series_that_outlives_the_block(blocks, database, clock):
    """Requests already past the account check when the block lands still fail and count; once
    the block ends, one more failure must not block again at once."""
    assert fail(blocks, database, 20)[4] is True  # blocks at the fifth, the other 15 raced in
    assert row(database).failed_attempts == 20
    clock.advance(1800)
    assert fail(blocks, database, 1) == [False]
    assert row(database).failed_attempts == 1 and blocks.list_blocked() == []
    assert len(block_events(database)) == 1


def test_permanent_setting_blocks_without_an_end_until_an_administrator_removes_it(blocks, database, clock):
    blocks.set_lockout_settings({"permanent": True})
    assert fail(blocks, database, 5)[-1] is True
    current = row(database)
    assert current.block_permanent is True and current.blocked_until is None
    assert block_events(database)[-1].detail == {"until": None, "permanent": True}
    clock.advance(10 * 365 * 86400)
    [entry] = blocks.list_blocked()
    assert (entry["permanent"], entry["blocked_until"], entry["remaining_seconds"]) == (True, None, None)
    blocks.unblock("bob")
    assert blocks.list_blocked() == []
    current = row(database)
    assert (current.failed_attempts, current.first_failure_at, current.block_permanent) == (0, None, False)
    assert [event.result for event in block_events(database)] == ["blocked", "unblocked"]


def test_clear_failures_resets_the_count_and_the_series(blocks, database, clock):
    fail(blocks, database, 4)
    blocks.clear_failures(uid(database))
    assert (row(database).failed_attempts, row(database).first_failure_at) == (0, None)
    assert fail(blocks, database, 4) == [False] * 4  # a whole new allowance
    blocks.clear_failures(uid(database, "carol"))  # nothing to clear: no error, nothing changes
    assert row(database).failed_attempts == 4


# -- manual blocks ---------------------------------------------------------------------------------

def test_manual_block_for_a_duration_ends_by_itself_and_shows_the_reason(blocks, database, clock):
    entry = blocks.block("bob", seconds=120, reason="  lost laptop  ")
    assert entry == {"username": "bob", "reason": "lost laptop", "blocked_at": at(T0),
                     "blocked_until": at(T0 + 120), "remaining_seconds": 120, "permanent": False,
                     "failed_attempts": 0}
    [event] = block_events(database)
    assert (event.result, event.reason, event.actor) == ("blocked", "manual", "test")
    assert event.detail["reason"] == "lost laptop"
    clock.advance(120)
    assert blocks.list_blocked() == []


def test_manual_permanent_block_stays_until_unblocked(blocks, database, clock):
    entry = blocks.block("bob", permanent=True, reason="left the company")
    assert (entry["permanent"], entry["blocked_until"], entry["remaining_seconds"]) == (True, None, None)
    clock.advance(10 * 365 * 86400)
    assert [item["username"] for item in blocks.list_blocked()] == ["bob"]
    blocks.unblock("bob")
    assert blocks.list_blocked() == []
    assert [(event.result, event.reason) for event in block_events(database)] == [
        ("blocked", "manual"), ("unblocked", "manual")]


BAD_MANUAL_BLOCKS = [
    (dict(seconds=60, reason=""), "reason"),
    (dict(seconds=60, reason="   "), "reason"),
    (dict(seconds=60, reason="x" * 256), "reason"),
    (dict(permanent=True, reason=None), "reason"),
    (dict(seconds=60, permanent=True, reason="both"), "duration_seconds"),
    (dict(reason="neither"), "duration_seconds"),
    (dict(seconds=0, reason="zero"), "duration_seconds"),
    (dict(seconds=-5, reason="negative"), "duration_seconds"),
    (dict(seconds=10 * 365 * 86400 + 1, reason="too long"), "duration_seconds"),
]


def test_manual_block_refuses_a_missing_reason_and_anything_but_one_duration_or_permanent(blocks, database):
    for kwargs, field in BAD_MANUAL_BLOCKS:
        with pytest.raises(Invalid) as error:
            blocks.block("bob", **kwargs)
        assert error.value.field == field, kwargs
    assert row(database).blocked_at is None and block_events(database) == []
    with pytest.raises(NotFound):
        blocks.block("nobody", seconds=60, reason="why")
    assert block_events(database, "nobody") == []


def test_unblock_of_a_user_not_blocked_is_not_found(blocks, database, clock):
    with pytest.raises(NotFound) as error:
        blocks.unblock("bob")
    assert error.value.field == "block"
    with pytest.raises(NotFound) as error:
        blocks.unblock("nobody")
    assert error.value.field == "user"
    blocks.block("bob", seconds=60, reason="short")
    clock.advance(60)  # the block ended by itself: there is nothing left to remove
    with pytest.raises(NotFound):
        blocks.unblock("bob")
    assert [event.result for event in block_events(database)] == ["blocked"]


def test_blocked_list_shows_every_field_and_the_remaining_time_runs_down(blocks, database, clock):
    fail(blocks, database, 5, "carol")
    clock.advance(30)
    blocks.block("bob", seconds=300, reason="investigation")
    blocks.block("dave", permanent=True, reason="left")
    clock.advance(100)
    listed = blocks.list_blocked()
    assert listed == [
        {"username": "bob", "reason": "investigation", "blocked_at": at(T0 + 30), "blocked_until": at(T0 + 330),
         "remaining_seconds": 200, "permanent": False, "failed_attempts": 0},
        {"username": "carol", "reason": AUTOMATIC_REASON, "blocked_at": at(T0), "blocked_until": at(T0 + 1800),
         "remaining_seconds": 1670, "permanent": False, "failed_attempts": 5},
        {"username": "dave", "reason": "left", "blocked_at": at(T0 + 30), "blocked_until": None,
         "remaining_seconds": None, "permanent": True, "failed_attempts": 0},
    ]
    clock.advance(150)
    assert [entry["remaining_seconds"] for entry in blocks.list_blocked()] == [50, 1520, None]
    assert blocks.count_blocked() == 3
    clock.advance(50)
    assert [entry["username"] for entry in blocks.list_blocked()] == ["carol", "dave"]


# -- lockout settings ------------------------------------------------------------------------------

BAD_SETTINGS = [
    ({"max_failures": 0}, "max_failures"),
    ({"max_failures": 101}, "max_failures"),
    ({"window_seconds": 0}, "window_seconds"),
    ({"window_seconds": -1}, "window_seconds"),
    ({"block_seconds": 0}, "block_seconds"),
    ({"block_seconds": -60}, "block_seconds"),
    ({"unknown": 1}, "unknown"),
]


def test_lockout_settings_refuse_out_of_range_values_and_keep_the_stored_ones(blocks):
    blocks.set_lockout_settings({"max_failures": 7})
    for changes, field in BAD_SETTINGS:
        with pytest.raises(Invalid) as error:
            blocks.set_lockout_settings(changes)
        assert error.value.field == field, changes
    assert blocks.lockout_settings() == LockoutSection(max_failures=7, window_seconds=600, block_seconds=1800)
    # The limits themselves are accepted.
    assert blocks.set_lockout_settings({"max_failures": 1, "window_seconds": 1, "block_seconds": 1}).max_failures == 1
    assert blocks.set_lockout_settings({"max_failures": 100}).max_failures == 100


def stored_lockout(database):
    with database.engine.connect() as conn:
        return conn.execute(select(settings.c.value).where(settings.c.name == "lockout")).scalar()


def test_lockout_settings_are_seeded_from_the_lockout_section_and_then_the_stored_ones_win(database, clock):
    assert stored_lockout(database) is None
    seeded = BlockService(database, LockoutSection(max_failures=3, window_seconds=60), clock)
    assert seeded.lockout_settings() == LockoutSection(max_failures=3, window_seconds=60)
    assert stored_lockout(database) == LockoutSection(max_failures=3, window_seconds=60).model_dump()
    # Another instance with another [lockout] section applies the stored settings, not its own.
    other = BlockService(database, LockoutSection(max_failures=50, window_seconds=9999), clock)
    assert other.lockout_settings() == LockoutSection(max_failures=3, window_seconds=60)

    changed = seeded.set_lockout_settings({"max_failures": 2, "permanent": True})
    assert changed == LockoutSection(max_failures=2, window_seconds=60, block_seconds=1800, permanent=True)
    assert stored_lockout(database) == changed.model_dump()
    assert other.lockout_settings() == changed
    assert fail(other, database, 2) == [False, True]
    assert row(database).block_permanent is True


# -- user status -----------------------------------------------------------------------------------

def test_user_views_and_the_status_filter_show_blocked_users(blocks, database, user_service):
    now = time.time()
    real = BlockService(database, POLICY, lambda: now, actor="test")
    real.block("bob", seconds=3600, reason="r")
    real.block("dave", permanent=True, reason="r")
    user_service.set_enabled("dave", False)  # disabled wins the status, the block still shows
    ended = BlockService(database, POLICY, lambda: now - 7200, actor="test")
    ended.block("carol", seconds=60, reason="long over")

    bob, carol, dave = (user_service.show(name) for name in ("bob", "carol", "dave"))
    assert (bob["status"], bob["blocked"]) == ("blocked", True)
    assert (carol["status"], carol["blocked"]) == ("active", False)
    assert (dave["status"], dave["blocked"]) == ("disabled", True)

    def names(status):
        return [item["username"] for item in user_service.list(status=status)[0]]

    assert names("blocked") == ["bob"]
    assert names("active") == ["carol"]
    assert names("disabled") == ["dave"]
    real.unblock("bob")
    assert names("blocked") == [] and user_service.show("bob")["status"] == "active"


# -- concurrency -----------------------------------------------------------------------------------

def test_twenty_threads_failing_at_once_are_all_counted_and_block_exactly_once(blocks, database):
    user_id = uid(database)
    results, errors = race(20, lambda _: blocks.record_failure(user_id, "bob"))
    assert not errors, errors
    assert len(results) == 20 and results.count(True) == 1
    assert row(database).failed_attempts == 20
    assert len(block_events(database)) == 1


PROCESS_SCRIPT = """
import sys, time
from radiusd.config import LockoutSection
from radiusd.db.engine import Database
from radiusd.services.blocks import BlockService
from tests.fakes import race

url, user_id = sys.argv[1], int(sys.argv[2])
database = Database(url, pool_size=10)
# Defaults that would never block: the limit of 5 must come from the settings table.
blocks = BlockService(database, LockoutSection(max_failures=100), time.time)
database.ping()
print("ready", flush=True)
sys.stdin.readline()
results, errors = race(10, lambda _: blocks.record_failure(user_id, "bob"))
assert not errors, errors
print(sum(results), len(results), flush=True)
"""


def test_two_processes_failing_at_once_lose_no_update_and_block_exactly_once(database, database_url, clock):
    BlockService(database, POLICY, clock).set_lockout_settings({"max_failures": 5})
    user_id = uid(database)
    children = [subprocess.Popen([sys.executable, "-c", PROCESS_SCRIPT, database_url, str(user_id)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, cwd=ROOT) for _ in range(2)]
    try:
        for child in children:
            assert child.stdout.readline().strip() == "ready", child.stderr.read()
        for child in children:  # both are waiting: release them together
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = []
        for child in children:
            out, err = child.communicate(timeout=60)
            assert child.returncode == 0, err
            outputs.append(tuple(int(n) for n in out.split()))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(5)
    assert sum(blocked for blocked, _ in outputs) == 1
    assert sum(done for _, done in outputs) == 20
    assert row(database).failed_attempts == 20
    assert len(block_events(database)) == 1
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_events)
                            .where(audit_events.c.type == "block")).scalar() == 1
