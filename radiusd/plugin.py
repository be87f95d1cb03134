"""Plugins: the hook markers, what a plugin is given (``PluginContext``), the factor traits a
plugin declares (``Factor``), and the loading that registers plugins in ``[plugins] order``.

The contract itself, the hook specifications, is ``radiusd/hookspecs.py``. pluggy calls the
last registered implementation first, so ``register_plugins`` registers in reverse order.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Callable

import pluggy

from radiusd.config import BUILTIN_PLUGINS, Config, ConfigError
from radiusd.hookspecs import PROJECT, RadiusdSpec

if TYPE_CHECKING:
    from radiusd.bulkhead import Bulkheads
    from radiusd.challenges import ChallengeStore
    from radiusd.crypto import PasswordHasher, SeedKey
    from radiusd.db.engine import Database
    from radiusd.dictionary import RadiusDictionary
    from radiusd.metrics import Metrics
    from radiusd.services.factory import Services

ENTRY_POINT_GROUP = "radiusd.plugins"

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
    bulkheads: Bulkheads  # hold a slot around every call to a remote backend (LDAP, an SMS gateway)


@dataclass(frozen=True, slots=True)
class Factor:
    """A second factor a plugin handles, and how the pipeline treats codes typed for it.

    ``appended_code``: on append-mode NASes, a 6-digit code at the end of the password is split
    off and checked by this factor. ``code_factor``: a typed code (appended, or a numeric
    challenge answer) is checked by that factor instead (push users can always type a TOTP code).
    """

    name: str
    appended_code: bool = False
    code_factor: str | None = None


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


def declared_factors(manager: pluggy.PluginManager) -> dict[str, Factor]:
    """Every factor the registered plugins declare (a plugin's ``factors`` attribute), by name."""
    return {factor.name: factor for plugin in manager.get_plugins() for factor in getattr(plugin, "factors", ())}


def health_checks(manager: pluggy.PluginManager) -> dict[str, Callable[[], None]]:
    """Every plugin's readiness probes, by name."""
    return {name: probe for result in manager.hook.radiusd_health_checks() for name, probe in result.items()}


def hook_names() -> list[str]:
    """The hooks in the order ``hookspecs.py`` defines them: the order the pipeline calls them."""
    return [name for name in vars(RadiusdSpec) if name.startswith("radiusd_")]


def call_order(manager: pluggy.PluginManager) -> dict[str, list[str]]:
    """Each hook, in pipeline order, with the names of its implementations, first called first;
    a wrapper (which runs around the others, whatever the order) is marked "NAME (wrapper)"."""
    order = {}
    for hook_name in hook_names():
        caller = getattr(manager.hook, hook_name)
        order[hook_name] = [manager.get_name(impl.plugin) + (" (wrapper)" if impl.wrapper or impl.hookwrapper else "")
                            for impl in reversed(caller.get_hookimpls())]
    return order
