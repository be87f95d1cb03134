"""Account state: a disabled or expired account is refused before any password check."""

from __future__ import annotations

from datetime import datetime, timezone

from radiusd.decisions import Reason, Reject
from radiusd.hookspecs import PluginContext, hookimpl

NAME = "account_state"


class Plugin:
    def __init__(self, context: PluginContext):
        self.clock = context.clock

    @hookimpl
    def radiusd_check_account(self, request, user):
        if not user.enabled:
            return Reject(Reason.DISABLED, NAME)
        if user.is_expired(datetime.fromtimestamp(self.clock(), timezone.utc)):
            return Reject(Reason.EXPIRED, NAME)
        return None
