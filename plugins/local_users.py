"""Local users: the users table, argon2id passwords, Framed-IP-Address and reply attributes.

A stored hash with other argon2 parameters, or a bcrypt hash imported from another system, is
replaced by an argon2id hash of the same password after the first successful login."""

from __future__ import annotations

from datetime import datetime, timezone

from radiusd.decisions import Accept, PasswordOk, Reason, Reject
from radiusd.plugin import PluginContext, hookimpl
from radiusd.pipeline import framed_ip_value
from radiusd.services.users import find_user

NAME = "local_users"


class Plugin:
    def __init__(self, context: PluginContext):
        self.context = context
        self.database = context.database
        self.hasher = context.hasher
        self.users = context.services.users

    @hookimpl
    def radiusd_find_user(self, request):
        return find_user(self.database, request.user_name)

    @hookimpl
    def radiusd_authenticate(self, request, user, password):
        if user.source != "local" or user.password_hash is None:
            return None
        if not self.hasher.verify(user.password_hash, password):
            return Reject(Reason.BAD_PASSWORD, NAME)
        if self.hasher.needs_rehash(user.password_hash):
            self.users.upgrade_hash(user, password)
        return PasswordOk(NAME)

    @hookimpl
    def radiusd_reply_attributes(self, request, user):
        attributes = []
        if user.framed_ip_address:
            attributes.append(("Framed-IP-Address", framed_ip_value(user.framed_ip_address)))
        attributes.extend(user.reply_attributes)
        return attributes

    @hookimpl
    def radiusd_post_auth(self, request, user, decision):
        if user is not None and isinstance(decision, Accept):
            self.users.record_login(user, datetime.fromtimestamp(self.context.clock(), timezone.utc))
