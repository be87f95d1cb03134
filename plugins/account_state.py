"""Account state: disabled, expired and blocked accounts are refused before any password
check; failed password and OTP attempts are counted, and a success clears the count."""

from __future__ import annotations

from datetime import datetime, timezone

from radiusd.decisions import Accept, Reason, Reject
from radiusd.plugin import PluginContext, hookimpl

NAME = "account_state"
# What counts as a failed attempt: a wrong secret of a known user, and a push the user denied
# (someone else knows the password). Refusals that are not guesses (disabled, expired, blocked,
# unsupported, policy) and unanswered pushes do not.
COUNTED_FAILURES = frozenset({Reason.BAD_PASSWORD, Reason.NO_PASSWORD, Reason.BAD_OTP, Reason.OTP_REPLAY,
                              Reason.BAD_STATE, Reason.CHALLENGE_EXPIRED, Reason.PUSH_DENIED})


class Plugin:
    def __init__(self, context: PluginContext):
        self.clock = context.clock
        self.metrics = context.metrics
        # A lockout terminates the user's sessions (SPEC §4) through the server's sessions service;
        # its audit event names the actor "lockout" whoever the service acts as.
        self.blocks = context.services.blocks

    @hookimpl
    def radiusd_check_account(self, request, user):
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        if not user.enabled:
            return Reject(Reason.DISABLED, NAME)
        if user.is_blocked(now):
            return Reject(Reason.BLOCKED, NAME)
        if user.is_expired(now):
            return Reject(Reason.EXPIRED, NAME)
        return None

    @hookimpl
    def radiusd_post_auth(self, request, user, decision):
        if user is None:
            return
        if isinstance(decision, Accept):
            if user.failed_attempts:  # most logins have nothing to clear: skip the write
                self.blocks.clear_failures(user.id)
        elif isinstance(decision, Reject) and decision.reason in COUNTED_FAILURES:
            if self.blocks.record_failure(user.id, user.username):
                self.metrics.lockouts.inc()
