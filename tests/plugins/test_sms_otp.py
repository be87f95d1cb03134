"""The sms_otp plugin (SPEC §3.1 SMS OTP; issue 3) on SQLite and PostgreSQL: the factor of users
with a phone, a code sent by the gateway and asked for in a challenge, checked once, refused on
append-mode NASes, the per-user send limit under concurrency, and the [sms] section."""

from __future__ import annotations

import os
import re
import time
from contextlib import ExitStack
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from radiusd.bulkhead import Bulkheads
from radiusd.challenges import ChallengeStore, PendingChallenge
from radiusd.config import Config
from radiusd.crypto import SeedKey
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.decisions import Accept, Challenge, Reason, Reject
from radiusd.errors import BackendError
from radiusd.metrics import Metrics
from radiusd.plugins.sms_otp import PROMPT, Plugin, SmsSection
from radiusd.services.factory import Resources, Services
from radiusd.services.users import find_user
from tests.fakes import auth_request, race

PHONE = "+905554443322"


@pytest.fixture
def spool(tmp_path):
    return tmp_path / "sms.spool"


@pytest.fixture
def world(make_world, spool):
    world = make_world(sms={"spool_path": str(spool)})
    world.add_user("alice", phone=PHONE)
    return world


@pytest.fixture
def plugin(world):
    return world.plugin("sms_otp")


def sent_codes(spool) -> list[tuple[str, str]]:
    """(phone, code) of every message in the spool, oldest first."""
    return [(line.split(" ")[1], re.search(r"\b(\d{6})$", line).group(1)) for line in spool.read_text().splitlines()]


def challenged(world, plugin, spool) -> tuple[Challenge, PendingChallenge, str]:
    """A challenge sent to alice: the decision, the pending challenge it stored, the code sent."""
    alice = find_user(world.database, "alice")
    challenge = plugin.radiusd_second_factor(request=auth_request("alice"), user=alice, factor="sms", otp=None)
    assert isinstance(challenge, Challenge)
    pending = world.runtime.context.challenges.take(challenge.state, nas="nas1", username="alice")
    assert isinstance(pending, PendingChallenge)
    return challenge, pending, sent_codes(spool)[-1][1]


def answer(world, plugin, pending: PendingChallenge, response: bytes):
    return plugin.radiusd_answer_challenge(request=auth_request("alice", state=b"s" * 20),
                                           user=find_user(world.database, "alice"), challenge=pending,
                                           response=response)


# -- the factor and its challenge ------------------------------------------------------------------

def test_the_factor_is_sms_for_users_with_a_phone(world, plugin):
    world.add_user("nophone")
    assert plugin.radiusd_factor_for(request=auth_request("alice"), user=find_user(world.database, "alice")) == "sms"
    assert plugin.radiusd_factor_for(request=auth_request("nophone"),
                                     user=find_user(world.database, "nophone")) is None


def test_another_factor_is_not_this_plugins(world, plugin, spool):
    alice = find_user(world.database, "alice")
    assert plugin.radiusd_second_factor(request=auth_request("alice"), user=alice, factor="totp", otp=None) is None
    pending = PendingChallenge(alice.id, "alice", "nas1", "totp", None, None)
    assert answer(world, plugin, pending, b"123456") is None
    assert not spool.exists()  # nothing sent


def test_a_code_is_sent_to_the_users_phone_and_the_challenge_holds_only_its_digest(world, plugin, spool):
    challenge, pending, code = challenged(world, plugin, spool)
    assert (challenge.prompt, challenge.factor, challenge.decided_by) == (PROMPT, "sms", "sms")
    assert sent_codes(spool) == [(PHONE, code)]
    assert spool.read_text().rstrip().endswith(f"Your radiusd code is {code}")
    assert pending.code_hash and code not in pending.code_hash
    assert world.sample("radiusd_challenges_total", factor="sms") == 1


def test_the_code_sent_is_the_answer_and_nothing_else_is(world, plugin, spool):
    _, pending, code = challenged(world, plugin, spool)
    other = f"{(int(code) + 1) % 10**6:06d}"
    for wrong in (other.encode(), code[:5].encode(), code.encode() + b"0", code.translate(
            str.maketrans("0123456789", "０１２３４５６７８９")).encode(), b"", b"\xff" * 6):
        assert answer(world, plugin, pending, wrong) == Reject(Reason.BAD_OTP, "sms"), wrong
    assert answer(world, plugin, pending, code.encode()) == Accept(decided_by="sms")


def test_another_challenges_code_does_not_answer_this_one(world, plugin, spool):
    _, first, first_code = challenged(world, plugin, spool)
    _, second, second_code = challenged(world, plugin, spool)
    if first_code != second_code:  # one chance in a million that they are the same
        assert answer(world, plugin, second, first_code.encode()) == Reject(Reason.BAD_OTP, "sms")
    assert answer(world, plugin, first, first_code.encode()) == Accept(decided_by="sms")


def test_an_append_mode_nas_cannot_show_the_prompt_so_nothing_is_sent(world, plugin, spool):
    alice = find_user(world.database, "alice")
    decision = plugin.radiusd_second_factor(request=auth_request("alice", mfa_mode="append"), user=alice,
                                            factor="sms", otp="123456")
    assert decision == Reject(Reason.OTP_REQUIRED, "sms", "SMS codes need a NAS in challenge mode")
    assert not spool.exists()


# -- the per-user send limit under concurrency --------------------------------------

def test_concurrent_logins_cannot_exceed_the_per_user_send_limit(database_url, tmp_path):
    """Eight threads pass the password at once for one SMS user; with ``max_per_window = 2``
    exactly two messages are sent, on SQLite and on PostgreSQL."""
    spool = tmp_path / "sms.spool"
    config = Config.model_validate({"sms": {"spool_path": str(spool), "max_per_window": 2}})
    database = Database(database_url, pool_size=8)
    try:
        migrate.upgrade(database)
        services = Services(Resources(config, database, seed_key=SeedKey(os.urandom(32))), actor="test")
        services.users.create("bob", {"phone": "05554443322"})
        context = SimpleNamespace(config=config, database=database, seed_key=services.resources.seed_key,
                                  challenges=ChallengeStore(database, time.time, Metrics()), services=services,
                                  bulkheads=Bulkheads(8))
        plugin = Plugin(context)
        user = find_user(database, "bob")
        request = SimpleNamespace(mfa_mode="challenge", nas="nas1")
        results, errors = race(8, lambda _: plugin.radiusd_second_factor(request=request, user=user, factor="sms",
                                                                         otp=None))
        assert not errors, errors
        assert sum(isinstance(result, Challenge) for result in results) == 2
        assert [result.reason for result in results if isinstance(result, Reject)] == [Reason.SMS_RATE_LIMITED] * 6
        assert len(spool.read_text().splitlines()) == 2

        # a message the gateway could not send does not use up the allowance
        services.users.create("carol", {"phone": "+905554443300"})
        carol = find_user(database, "carol")
        broken = Plugin(SimpleNamespace(**{**vars(context), "config": Config.model_validate(
            {"sms": {"spool_path": str(tmp_path / "no-such-dir" / "sms.spool"), "max_per_window": 2}})}))
        for _ in range(3):
            with pytest.raises(BackendError):
                broken.radiusd_second_factor(request=request, user=carol, factor="sms", otp=None)
        assert isinstance(plugin.radiusd_second_factor(request=request, user=carol, factor="sms", otp=None), Challenge)
    finally:
        database.dispose()


# -- the gateway's bulkhead ------------------------------------------------------------------------

def test_a_gateway_holding_all_its_threads_fails_the_next_send_at_once_without_using_the_allowance(
        world, plugin, spool):
    """A stalled gateway may hold only its share of the auth threads: the next send fails fast as an
    SMS backend error (fail closed), sends nothing, and leaves the user's send limit untouched."""
    alice = find_user(world.database, "alice")
    bulkheads = world.runtime.context.bulkheads
    with ExitStack() as stalled:
        for _ in range(bulkheads.limit):
            stalled.enter_context(bulkheads.enter("sms"))
        for _ in range(5):  # more than max_per_window: none of them counted
            with pytest.raises(BackendError) as refused:
                plugin.radiusd_second_factor(request=auth_request("alice"), user=alice, factor="sms", otp=None)
            assert refused.value.backend == "sms"
    assert not spool.exists() or spool.read_text() == ""
    for _ in range(world.runtime.config.sms.max_per_window):
        assert isinstance(plugin.radiusd_second_factor(request=auth_request("alice"), user=alice, factor="sms",
                                                       otp=None), Challenge)


# -- the [sms] section -----------------------------------------------------------------------------

def test_the_http_gateway_needs_a_url_and_the_message_needs_the_code():
    with pytest.raises(ValidationError):
        SmsSection(gateway="http")
    with pytest.raises(ValidationError):
        SmsSection(gateway="http", url="ftp://example.invalid/")
    with pytest.raises(ValidationError):
        SmsSection(message="no code here")
    with pytest.raises(ValidationError):
        SmsSection(gateway="http", url="http://127.0.0.1/", timeout_seconds=0)


def test_header_secrets_are_not_shown_in_the_settings_repr():
    settings = SmsSection(gateway="http", url="http://127.0.0.1/send", headers={"Authorization": "Bearer very-secret"})
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in str(settings)
