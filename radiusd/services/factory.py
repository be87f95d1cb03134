"""``Services``: where every use-case service is built. The server (its plugins too), the admin
API and ``radiusd-admin`` take their services from here and construct none themselves.

``Resources`` holds what they share, made once per process; ``Services`` is one audit actor's
view of it: ``services.users``, ``services.blocks`` ... built on first use, and
``services.as_actor("api:NAME")`` the same set acting as someone else (the API: per request).
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import Callable

from radiusd.config import Config
from radiusd.crypto import PasswordHasher, SeedKey
from radiusd.db.engine import Database
from radiusd.dictionary import RadiusDictionary
from radiusd.metrics import Metrics
from radiusd.model import Nas
from radiusd.services.api_clients import ApiClientService
from radiusd.services.blocks import BlockService
from radiusd.services.bulk import BulkService
from radiusd.services.console_sessions import ConsoleSessionService
from radiusd.services.dashboard import DashboardService
from radiusd.services.devices import DeviceService
from radiusd.services.keys import open_seed_key
from radiusd.services.nas import NasService
from radiusd.services.operators import OperatorService
from radiusd.services.otp import OtpService
from radiusd.services.push import PushService, WebhookNotifier
from radiusd.services.sessions import Disconnect, SessionService, no_disconnect_client
from radiusd.services.sms_messages import SmsMessageService
from radiusd.services.users import UserService


class Resources:
    """What every actor's services share. A key, hasher or dictionary not given is made from
    ``config`` on first use, so ``radiusd-admin user list`` needs no seed key.

    ``nas_lookup``, ``disconnect`` and ``on_error`` are where the sessions service sends
    Disconnect-Requests and its warnings; the server attaches its own once started.
    """

    def __init__(self, config: Config, database: Database, *, clock: Callable[[], float] = time.time,
                 seed_key: SeedKey | None = None, hasher: PasswordHasher | None = None,
                 dictionary: RadiusDictionary | None = None, metrics: Metrics | None = None,
                 warn: Callable[[str], None] = print, hash_threads: int | None = None,
                 nas_lookup: Callable[[str], Nas | None] = lambda name: None,
                 disconnect: Disconnect = no_disconnect_client, on_error: Callable[[str], None] | None = None):
        self.config = config
        self.database = database
        self.clock = clock
        self.metrics = metrics
        self.warn = warn
        self.hash_threads = hash_threads
        # given pieces take the place of the cached properties below
        given = {"seed_key": seed_key, "hasher": hasher, "dictionary": dictionary}
        vars(self).update({name: piece for name, piece in given.items() if piece is not None})
        self.notifier = WebhookNotifier(config.push)
        self.sessions = SessionService(database, config.accounting, clock=clock, metrics=metrics,
                                       nas_lookup=nas_lookup, disconnect=disconnect, on_error=on_error)

    @cached_property
    def seed_key(self) -> SeedKey:
        """The configured key, once it has opened the database's key check value."""
        reference = self.config.security.seed_key
        return open_seed_key(self.database, SeedKey.load(reference), f"the seed key ({reference.where()})")

    @cached_property
    def hasher(self) -> PasswordHasher:
        return PasswordHasher(self.config.security)

    @cached_property
    def dictionary(self) -> RadiusDictionary:
        return RadiusDictionary(self.config.server.dictionaries)


class Services:
    """The use-case services, acting as ``actor`` in the audit trail."""

    def __init__(self, resources: Resources, actor: str):
        self.resources = resources
        self.actor = actor

    def as_actor(self, actor: str) -> Services:
        return Services(self.resources, actor)

    @cached_property
    def sessions(self) -> SessionService:
        return self.resources.sessions.for_actor(self.actor)

    @cached_property
    def users(self) -> UserService:
        r = self.resources
        return UserService(r.database, r.hasher, r.dictionary, actor=self.actor, sessions=self.sessions,
                           phone_region=r.config.sms.default_region)

    @cached_property
    def bulk(self) -> BulkService:
        r = self.resources
        return BulkService(r.database, r.hasher, r.dictionary, actor=self.actor, hash_threads=r.hash_threads,
                           sessions=self.sessions, phone_region=r.config.sms.default_region)

    @cached_property
    def blocks(self) -> BlockService:
        r = self.resources
        return BlockService(r.database, r.config.lockout, r.clock, actor=self.actor, sessions=self.sessions)

    @cached_property
    def otp(self) -> OtpService:
        r = self.resources
        return OtpService(r.database, r.seed_key, r.config.mfa, r.clock, actor=self.actor)

    @cached_property
    def devices(self) -> DeviceService:
        r = self.resources
        return DeviceService(r.database, r.seed_key, self.otp, r.clock, actor=self.actor)

    @cached_property
    def pushes(self) -> PushService:
        r = self.resources
        return PushService(r.database, r.clock, ttl_seconds=r.config.mfa.push_timeout_seconds, metrics=r.metrics,
                           notifier=r.notifier, actor=self.actor)

    @cached_property
    def sms_messages(self) -> SmsMessageService:
        return SmsMessageService(self.resources.database, self.resources.clock)

    @cached_property
    def nas(self) -> NasService:
        r = self.resources
        return NasService(r.database, r.seed_key, r.config, warn=r.warn, actor=self.actor)

    @cached_property
    def api_clients(self) -> ApiClientService:
        r = self.resources
        return ApiClientService(r.database, r.seed_key, r.clock, r.config.api.token_ttl_seconds, actor=self.actor)

    @cached_property
    def console_sessions(self) -> ConsoleSessionService:
        r = self.resources
        return ConsoleSessionService(r.database, r.config.console, r.clock)

    @cached_property
    def dashboard(self) -> DashboardService:
        return DashboardService(self.resources.database, self.resources.clock)

    @cached_property
    def operators(self) -> OperatorService:
        """Console operators; the seed key is opened only by the TOTP steps, and failures are
        counted under the stored lockout settings (``blocks``)."""
        r = self.resources
        return OperatorService(r.database, r.hasher, lambda: r.seed_key, self.blocks.lockout_settings, r.config.mfa,
                               r.clock, self.console_sessions, actor=self.actor)
