"""The plugin contract: hook specifications, and the manager that registers plugins in order.

Every hook runs in the auth worker pool (a plain thread, never the reactor), is synchronous,
and receives frozen values. ``None`` means "not mine"; a ``Reject`` means "no". Hooks are
``firstresult`` except ``radiusd_reply_attributes`` (results are collected),
``radiusd_post_auth`` (every implementation is notified) and ``radiusd_health_checks``
(collected once at start-up, outside any request).

Plugins are registered in ``[plugins] order``; pluggy calls the last registered first, so
``register_plugins`` registers them in reverse.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Callable

import pluggy

from radiusd.challenges import ChallengeStore, PendingChallenge
from radiusd.config import BUILTIN_PLUGINS, Config, ConfigError
from radiusd.crypto import PasswordHasher, SeedKey
from radiusd.db.engine import Database
from radiusd.decisions import Decision, PasswordOk, PushPending, Reject
from radiusd.dictionary import RadiusDictionary
from radiusd.metrics import Metrics
from radiusd.model import User
from radiusd.packets import AuthRequest

if TYPE_CHECKING:
    from radiusd.services.factory import Services

PROJECT = "radiusd"
ENTRY_POINT_GROUP = "radiusd.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@dataclass(frozen=True)
class PluginContext:
    """What a plugin may use; built once per server (or CLI) process."""

    config: Config
    database: Database
    dictionary: RadiusDictionary
    hasher: PasswordHasher
    metrics: Metrics
    seed_key: SeedKey | None
    clock: Callable[[], float]
    challenges: ChallengeStore
    services: Services  # the server's, acting as "server"; ``services.as_actor(name)`` for another actor


class RadiusdSpec:
    @hookspec(firstresult=True)
    def radiusd_find_user(self, request: AuthRequest) -> User | None:
        """Return the user the request names, or None if this plugin does not know them.

        Raise ``BackendError`` when the store cannot be asked: the request fails closed.
        """

    @hookspec(firstresult=True)
    def radiusd_check_account(self, request: AuthRequest, user: User) -> Reject | None:
        """Refuse a user whose account may not log in now (disabled, expired, blocked).

        Runs before any password check. None lets the request go on.
        """

    @hookspec(firstresult=True)
    def radiusd_authenticate(self, request: AuthRequest, user: User, password: bytes) -> PasswordOk | Reject | None:
        """Check the first factor. ``PasswordOk`` if it matches, ``Reject(BAD_PASSWORD)`` if
        not, None if this plugin does not hold this user's password."""

    @hookspec(firstresult=True)
    def radiusd_factor_for(self, request: AuthRequest, user: User) -> str | None:
        """The name of the user's usable second factor ("totp", "sms", ...) if this plugin
        provides it, else None. Plugin order is priority order (SPEC §3.1)."""

    @hookspec(firstresult=True)
    def radiusd_second_factor(self, request: AuthRequest, user: User, factor: str,
                              otp: str | None) -> Decision | None:
        """After a correct password, for the factor ``radiusd_factor_for`` named: ``Accept``
        (factor satisfied), ``Reject`` or ``Challenge``; None if ``factor`` is not this plugin's.

        ``otp`` is the code split off the password in append mode, else None.
        """

    @hookspec(firstresult=True)
    def radiusd_answer_challenge(self, request: AuthRequest, user: User, challenge: PendingChallenge,
                                 response: bytes) -> Decision | None:
        """The NAS came back with the State of ``challenge`` (already consumed, checked for
        expiry, NAS and user) and ``response`` in User-Password. None if the challenge's
        factor is not this plugin's."""

    @hookspec(firstresult=True)
    def radiusd_resume_pending(self, request: AuthRequest, user: User, pending: PushPending) -> Decision | None:
        """A ``PushPending`` that ``second_factor`` or ``answer_challenge`` returned, asked again
        every fraction of a second (a short call in the worker pool, scheduled by a reactor timer:
        no thread waits) until it answers ``Accept`` or ``Reject``; None while it is still open.
        The plugin that returned it must answer by ``pending.deadline`` (the pipeline rejects
        with ``push_timeout`` shortly after, whatever happens)."""

    @hookspec
    def radiusd_reply_attributes(self, request: AuthRequest, user: User) -> list[tuple[str, str | int]]:
        """Reply attributes for an Accept, as (dictionary name, value); all results are sent."""

    @hookspec
    def radiusd_post_auth(self, request: AuthRequest, user: User | None, decision: Decision) -> None:
        """Notification after every decision (audit, failure counting, last login).

        Runs before the reply leaves, so what it commits is durable when the NAS hears back.
        """

    @hookspec
    def radiusd_health_checks(self) -> dict[str, Callable[[], None]]:
        """Named readiness checks of the plugin's backends (e.g. ``{"ldap": probe}``).

        Called once at start-up, not per request. Each probe runs in a thread (``/readyz``
        every few seconds, ``radiusd check-config`` once), returns None when healthy and
        raises with a one-line message when not.
        """


def _load(name: str, context: PluginContext):
    if name in BUILTIN_PLUGINS:
        module = importlib.import_module(f"radiusd.plugins.{name}")
        return module.Plugin(context)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            return entry.load()(context)
    raise ConfigError(f"[plugins] order names unknown plugin {name!r}")


def register_plugins(context: PluginContext) -> pluggy.PluginManager:
    """A plugin manager with the configured plugins, called in ``[plugins] order``."""
    plugins = context.config.plugins
    unknown = set(plugins.disabled) - set(plugins.order)
    if unknown:
        raise ConfigError(f"[plugins] disabled names plugins not in order: {', '.join(sorted(unknown))}")
    if len(set(plugins.order)) != len(plugins.order):
        raise ConfigError("[plugins] order names a plugin twice")
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(RadiusdSpec)
    enabled = [name for name in plugins.order if name not in plugins.disabled]
    for name in reversed(enabled):
        manager.register(_load(name, context), name=name)
    if not manager.hook.radiusd_check_account.get_hookimpls():
        # Without it, disabled, expired and blocked users would be accepted: fail at start-up.
        raise ConfigError("[plugins] order: no enabled plugin checks account state (account_state or a replacement)")
    return manager


def health_checks(manager: pluggy.PluginManager) -> dict[str, Callable[[], None]]:
    """Every plugin's readiness probes, by name."""
    return {name: probe for result in manager.hook.radiusd_health_checks() for name, probe in result.items()}


def call_order(manager: pluggy.PluginManager) -> dict[str, list[str]]:
    """Each hook with the names of its implementations, first called first; a wrapper (which
    runs around the others, whatever the order) is marked "NAME (wrapper)"."""
    order = {}
    for hook_name in sorted(name for name in dir(RadiusdSpec) if name.startswith("radiusd_")):
        caller = getattr(manager.hook, hook_name)
        order[hook_name] = [manager.get_name(impl.plugin) + (" (wrapper)" if impl.wrapper or impl.hookwrapper else "")
                            for impl in reversed(caller.get_hookimpls())]
    return order

