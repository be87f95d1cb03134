"""Directory users (SPEC §8): users not found locally are looked up in LDAP / Active Directory.

Runs after ``local_users`` in ``[plugins] order``, so a local account always wins its name.

- ``find_user``: the username is searched with ``user_filter`` (escaped). The directory's
  spelling of ``username_attribute`` keys the user's *local record* (source ``ldap``, no
  password hash), which holds second factors, expiry, disable and blocks exactly like a local
  user's; so ``ALICE`` and ``alice`` are one user with one failure count and one TOTP. Before
  the first successful bind there is no record: the user is passed on as an unsaved ``User``
  (id 0) and the first correct password creates the record.
- ``authenticate`` (source ``ldap`` only): a bind as the user's DN. Active Directory account
  states reject with their own reasons; a directory that cannot be asked fails closed.
- ``reply_attributes``: the user's groups (group search, or memberOf) mapped through
  ``[ldap.group_reply_attributes]``.
- ``health_checks``: ``ldap``, the service-account bind (``/readyz``, ``radiusd check-config``).
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from pydantic import Field, field_validator, model_validator
from twisted.logger import Logger

from radiusd.config import ConfigError, ConfigPath, Secret, Section
from radiusd.decisions import Accept, PasswordOk, Reason, Reject
from radiusd.directory import Directory, DirectoryEntry
from radiusd.errors import BackendError
from radiusd.model import User
from radiusd.plugin import PluginContext, hookimpl
from radiusd.services import Invalid
from radiusd.services.users import NO_RECORD, check_reply_attributes, check_username, find_user

NAME = "ldap_users"
SOURCE = "ldap"
log = Logger(namespace="radiusd.ldap")


class GroupReplyAttribute(Section):
    name: str = Field(min_length=1, max_length=64)
    value: str | int


class LdapSection(Section):
    """``[ldap]``: the directory (SPEC §8); without it the plugin cannot be enabled."""

    urls: list[str] = Field(min_length=1)
    bind_dn: str = ""  # empty: anonymous search
    bind_password: Secret | None = None
    base_dn: str = Field(min_length=1)
    user_filter: str = "(&(objectClass=inetOrgPerson)(uid={username}))"
    username_attribute: str = Field("uid", min_length=1)
    group_base_dn: str = ""  # empty: base_dn
    group_filter: str = "(&(objectClass=groupOfNames)(member={dn}))"  # empty: the user's memberOf
    group_name_attribute: str = Field("cn", min_length=1)
    start_tls: bool = False
    ca_file: ConfigPath = ""
    connect_timeout_seconds: float = Field(2, gt=0, le=30)
    receive_timeout_seconds: int = Field(3, ge=1, le=30)  # whole seconds (SO_RCVTIMEO, as ldap3 sets it)
    max_connections: int = Field(10, ge=1, le=256)
    group_reply_attributes: dict[str, list[GroupReplyAttribute]] = {}

    @field_validator("urls")
    @classmethod
    def _ldap_urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.lower().startswith(("ldap://", "ldaps://")):
                raise ValueError(f"{url!r} is not an ldap:// or ldaps:// URL")
        return value

    @model_validator(mode="after")
    def _filters(self):
        for key, placeholder, required in (("user_filter", "{username}", True), ("group_filter", "{dn}", False)):
            text = getattr(self, key)
            if not text and not required:
                continue
            if placeholder not in text or not (text.startswith("(") and text.endswith(")")):
                raise ValueError(f"{key} must be a parenthesised LDAP filter containing {placeholder}")
        if self.bind_dn and self.bind_password is None:
            raise ValueError("bind_dn needs bind_password")
        return self


class Plugin:
    def __init__(self, context: PluginContext):
        section = context.config.ldap
        if section is None:
            raise ConfigError("[plugins] order lists ldap_users but there is no [ldap] section")
        for group, items in section.group_reply_attributes.items():
            try:
                check_reply_attributes(context.dictionary, [item.model_dump() for item in items])
            except Invalid as exc:
                raise ConfigError(f"[ldap.group_reply_attributes] {group}: {exc.detail}") from None
        self.context = context
        self.database = context.database
        self.users = context.services.as_actor(NAME).users  # creates the records: the audit names this plugin
        self.group_attributes = {group.casefold(): tuple((item.name, item.value) for item in items)
                                 for group, items in section.group_reply_attributes.items()}
        self.directory = Directory(section)
        self.bulkheads = context.bulkheads  # a stalled directory may not take every auth thread
        for url in self.directory.cleartext_urls:
            log.warn("[ldap] {url} carries passwords in clear text: use ldaps:// or start_tls = true", url=url)
        self._current = threading.local()  # the entry found for the request this thread runs

    # -- hooks ---------------------------------------------------------------------------------

    @hookimpl
    def radiusd_find_user(self, request):
        with self.bulkheads.enter("ldap"):
            entry = self.directory.find(request.user_name)
        if entry is None:
            return None
        user = find_user(self.database, entry.username)
        if user is not None and user.source != SOURCE:
            return None  # a local account owns this name (in another spelling)
        if user is None:
            try:
                check_username(entry.username)
            except Invalid:
                return None
            user = User(id=NO_RECORD, username=entry.username, password_hash=None, enabled=True,
                        expires_at=None, framed_ip_address=None, mfa_exempt=False, reply_attributes=(),
                        source=SOURCE)
        self._remember(request, entry)
        return user

    @hookimpl
    def radiusd_authenticate(self, request, user, password):
        if user.source != SOURCE:
            return None
        if not password:  # never sent: an empty simple bind is an anonymous bind
            return Reject(Reason.NO_PASSWORD, NAME)
        entry = self._entry(request, user)
        if entry is None:
            return Reject(Reason.UNKNOWN_USER, NAME, "not in the directory")
        with self.bulkheads.enter("ldap"):
            refused = self.directory.authenticate(entry.dn, password)
        if refused is not None:
            return Reject(refused, NAME)
        if user.id == NO_RECORD:
            self.users.create_record(entry.username, SOURCE, self._now())
        return PasswordOk(NAME)

    @hookimpl
    def radiusd_reply_attributes(self, request, user):
        if user.source != SOURCE or not self.group_attributes:
            return []
        entry = self._entry(request, user)
        if entry is None:
            raise BackendError("ldap", "user left the directory during the request")
        with self.bulkheads.enter("ldap"):
            groups = {name.casefold() for name in self.directory.groups(entry)}
        return [pair for group, pairs in self.group_attributes.items() if group in groups for pair in pairs]

    @hookimpl
    def radiusd_post_auth(self, request, user, decision):
        self._current.__dict__.clear()
        if user is not None and user.id == NO_RECORD and user.source == SOURCE and isinstance(decision, Accept):
            self.users.record_login(user, self._now())  # the record was created during this request

    @hookimpl
    def radiusd_health_checks(self):
        return {"ldap": self.directory.check}

    # -- helpers -------------------------------------------------------------------------------

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.context.clock(), timezone.utc)

    def _remember(self, request, entry: DirectoryEntry) -> None:
        self._current.request, self._current.entry = request, entry

    def _entry(self, request, user: User) -> DirectoryEntry | None:
        """The user's directory entry: found earlier in this request, else searched now (a
        returning user's record is found locally; the challenge's second round binds no one)."""
        if getattr(self._current, "request", None) is request:
            return self._current.entry
        entry = self.directory.find(user.username)
        if entry is None or entry.username.casefold() != user.username.casefold():
            return None
        self._remember(request, entry)
        return entry
