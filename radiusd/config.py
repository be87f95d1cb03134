"""Configuration: one TOML file, overridable per key from the environment.

Every section is a pydantic model with ``extra="forbid"`` so a misspelt key stops the server
instead of being silently ignored. ``RADIUSD_<SECTION>__<KEY>=value`` overrides a key; the
value is read as a TOML value when it parses as one (numbers, booleans, arrays), else as a
string. Secrets are given inline or referenced as ``{file = "path"}`` / ``{env = "NAME"}``
and are only read when used. Relative file paths (``ConfigPath``: the SQLite file, secret
files, spools...) are relative to the configuration file's directory.

The core's sections are declared here. The sections the built-in plugins own (``[ldap]``,
``[sms]``, ``[push]``) are declared, typed, in their plugin's module (DESIGN.md §3 item 8) and
named in ``PLUGIN_SECTIONS`` as ``"module:Class"``. ``Config`` marks those fields with
``PluginSection(name)``, which imports the class on first validation rather than when this
module is imported: plugin modules import the core, so importing them from here would cycle.
A plugin's section is validated whether or not the plugin is enabled, with the same rules as
any other section: unknown keys refused, ``RADIUSD_<SECTION>__<KEY>`` overrides, secrets by
reference.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

DEFAULT_CONFIG_PATH = "/etc/radiusd/radiusd.toml"
ENV_PREFIX = "RADIUSD_"
CONFIG_DIRECTORY = "config_directory"  # validation context: where relative paths start


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line for the operator."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_to_config(value: str | None, info: ValidationInfo) -> str | None:
    """A relative path read from a configuration file is relative to that file's directory
    (as nginx's and FreeRADIUS's prefix), not to the working directory of whoever runs us."""
    base = (info.context or {}).get(CONFIG_DIRECTORY)
    if not value or base is None or os.path.isabs(value):
        return value
    return os.path.normpath(os.path.join(base, value))


# A file path in the configuration (see _relative_to_config).
ConfigPath = Annotated[str, AfterValidator(_relative_to_config)]


class SecretRef(Section):
    """A secret given inline, in a file or in an environment variable; read on use."""

    value: str | None = Field(None, repr=False)  # str() must not show it either
    file: ConfigPath | None = None
    env: str | None = None

    def reveal(self) -> str:
        if self.value is not None:
            return self.value
        if self.file is not None:
            try:
                return Path(self.file).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read secret file {self.file}: {exc.strerror}") from exc
            except UnicodeDecodeError:
                raise ConfigError(f"secret file {self.file} is not UTF-8 text") from None
        if self.env is not None:
            if self.env not in os.environ:
                raise ConfigError(f"secret environment variable {self.env} is not set")
            return os.environ[self.env]
        raise ConfigError("secret reference names neither file nor env")

    def where(self) -> str:
        """Where the secret is, for messages (never the secret)."""
        if self.file is not None:
            return f"file {self.file}"
        return f"environment variable {self.env}" if self.env is not None else "given inline"

    def __repr__(self) -> str:  # never show an inline secret
        return f"SecretRef(file={self.file!r}, env={self.env!r})"


def _inline_secret(value):
    if isinstance(value, str):
        return {"value": value}
    return value


# A secret-valued key: a string is the secret itself, a table ({file=...}/{env=...}) refers to it.
Secret = Annotated[SecretRef, BeforeValidator(_inline_secret)]


class ServerSection(Section):
    listen: list[str] = ["0.0.0.0"]
    auth_port: int = Field(1812, ge=0, le=65535)
    acct_port: int = Field(1813, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=64)
    auth_threads: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256)
    dedupe_seconds: float = Field(10, ge=0)
    reject_delay_seconds: float = Field(1.0, ge=0, le=10)
    on_backend_error: Literal["drop", "reject"] = "drop"
    max_pending_requests: int = Field(1000, ge=1)
    request_budget_seconds: float = Field(4.0, gt=0, le=60)
    backend_threads: int | None = Field(None, ge=1, le=256)  # None: half of auth_threads (at least 1)
    dictionaries: list[ConfigPath] = []  # FreeRADIUS-format dictionary files read after ours (SIGHUP reads them again)

    @field_validator("listen")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            ipaddress.ip_address(address)
        return value


class SecuritySection(Section):
    require_message_authenticator: bool = True
    seed_key: Secret = Field({"file": "var/seed.key"}, validate_default=True)
    password_hash: Literal["argon2id"] = "argon2id"
    argon2_memory_kib: int = Field(19456, ge=19456)
    argon2_time_cost: int = Field(2, ge=2)
    argon2_parallelism: int = Field(1, ge=1)


DATABASE_URLS = "sqlite:///PATH or postgresql+psycopg://USER@HOST/NAME"


class DatabaseSection(Section):
    url: str = Field("sqlite:///var/radiusd.db", validate_default=True)

    @field_validator("url")
    @classmethod
    def _sqlite_file_relative_to_config(cls, value: str, info: ValidationInfo) -> str:
        path = sqlite_path(value)
        if path is None:
            return value
        prefix, _, rest = value.partition(":///")
        return f"{prefix}:///{_relative_to_config(path, info)}{rest[len(path):]}"

    @field_validator("url")
    @classmethod
    def _supported(cls, value: str) -> str:
        """SQLite, or PostgreSQL through psycopg (the ``radiusd[postgresql]`` extra), and the
        fix in one line otherwise, not the driver's ModuleNotFoundError at first use."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"not a database URL; use {DATABASE_URLS}") from None
        backend, driver = url.get_backend_name(), url.get_driver_name()
        if backend == "sqlite" and driver == "pysqlite":
            return value
        if backend != "postgresql":
            raise ValueError(f"{url.drivername} databases are not supported; use {DATABASE_URLS}")
        if driver != "psycopg":
            raise ValueError(f"PostgreSQL is reached through psycopg 3: write the URL as "
                             f"postgresql+psycopg://{value.partition('://')[2] or 'USER@HOST/NAME'}")
        try:
            import psycopg  # noqa: F401 - only whether it is installed
        except ImportError:
            raise ValueError("PostgreSQL needs psycopg, which is not installed: "
                             "pip install 'radiusd[postgresql]'") from None
        return value


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///PATH`` URL (None for another database or an in-memory one)."""
    prefix, separator, rest = url.partition(":///")
    path = rest.partition("?")[0]
    if not prefix.startswith("sqlite") or not separator or path in ("", ":memory:"):
        return None
    return path


def readable_by_others(config: "Config") -> list[str]:
    """The database and seed key files that another user may read (``check-config`` warns):
    the one holds hashes, the audit trail and sealed secrets, the other opens them."""
    files = [path for path in (sqlite_path(config.database.url), config.security.seed_key.file) if path]
    found = []
    for path in files:
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        if mode & 0o077:
            found.append(f"{path} is readable by other users (mode {mode & 0o777:04o}): chmod 600 {path}")
    return found


class ListenSection(Section):
    listen: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)


class ApiSection(ListenSection):
    token_ttl_seconds: int = Field(3600, ge=60)
    # failed token requests: per source address (then 429) and per client id (then slowed)
    token_requests_per_minute: int = Field(30, ge=1, le=6000)
    activation_requests_per_minute: int = Field(20, ge=1, le=6000)  # POST /mobile/activate per source address


class OpsSection(ListenSection):
    port: int = Field(9812, ge=0, le=65535)
    health_timeout_seconds: float = Field(3, gt=0, le=60)  # a health probe not back by then has failed
    backend_error_ratio: float = Field(0.5, gt=0, le=1)  # not ready above this share of backend errors...
    backend_error_window_seconds: float = Field(10, ge=1, le=600)  # ...among the requests decided in this window


class LockoutSection(Section):
    max_failures: int = Field(5, ge=1, le=100)
    window_seconds: int = Field(600, gt=0)
    block_seconds: int = Field(1800, gt=0)
    permanent: bool = False


class ConsoleSection(Section):
    """The web console (SPEC §10) on the admin site: its operators' sessions."""

    enabled: bool = True
    session_idle_minutes: int = Field(15, ge=1, le=24 * 60)  # a session unused this long has ended
    session_max_hours: int = Field(8, ge=1, le=7 * 24)  # and any session ends this long after login
    secure_cookies: Literal["auto"] | bool = "auto"  # "auto": Secure when served over TLS
    login_attempts_per_minute: int = Field(30, ge=1)  # login form posts per source address


class AccountingSection(Section):
    """Sessions from the accounting port (SPEC §4) and RFC 5176 Disconnect-Requests."""

    stale_after_intervals: float = Field(3, gt=0)  # no update for this many interim intervals: stale
    default_interim_seconds: int = Field(600, ge=1)  # when the NAS does not send Acct-Interim-Interval
    session_retention_days: int = Field(90, ge=0)  # closed sessions kept this long; 0 keeps them forever
    sweep_interval_seconds: float = Field(60, gt=0)  # stale marking, expiry, retention
    disconnect_timeout_seconds: float = Field(1.0, gt=0, le=30)  # first wait; doubled for each retry
    disconnect_attempts: int = Field(3, ge=1, le=10)


MfaMode = Literal["challenge", "append"]


class MfaSection(Section):
    required: bool = True
    mode: MfaMode = "challenge"
    totp_window: int = Field(1, ge=0, le=10)
    issuer: str = "radiusd"
    challenge_ttl_seconds: int = Field(120, gt=0)
    enrollment_ttl_seconds: int = Field(600, gt=0)
    sms_code_ttl_seconds: int = Field(300, gt=0)
    push_timeout_seconds: int = Field(25, gt=0)
    max_pending_challenges: int = Field(5, ge=1)  # per user; a new one beyond it replaces the oldest


class NasSection(Section):
    name: str = Field(min_length=1, max_length=64)
    address: str
    secret: Secret
    require_message_authenticator: bool | None = None
    mfa_mode: MfaMode | None = None
    coa_port: int = Field(3799, ge=1, le=65535)

    @field_validator("address")
    @classmethod
    def _network(cls, value: str) -> str:
        ipaddress.ip_network(value, strict=False)
        return value


# The built-in plugins in SPEC §2's order. ldap_users is active only with an [ldap] section.
BUILTIN_PLUGINS = ("account_state", "local_users", "ldap_users", "totp", "sms_otp", "push", "audit")
LDAP_PLUGIN = "ldap_users"


# The sections of the built-in plugins, in their modules (see the module docstring).
PLUGIN_SECTIONS = {
    "ldap": "radiusd.plugins.ldap_users:LdapSection",
    "sms": "radiusd.plugins.sms_otp:SmsSection",
    "push": "radiusd.plugins.push:PushSection",
}


def plugin_section(name: str) -> type[Section]:
    """The section class a built-in plugin declares for ``[name]``, imported on first use."""
    module, _, attribute = PLUGIN_SECTIONS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class PluginSection:
    """Marks a ``Config`` field as validated with ``plugin_section(name)``. Its errors keep
    their type and location (``sms.gatewy``: unknown key), as a nested model's would."""

    name: str

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.with_info_plain_validator_function(self.validate)

    def validate(self, value, info: ValidationInfo) -> Section:
        return plugin_section(self.name).model_validate(value, context=info.context)


class PluginsSection(Section):
    order: list[str] = list(BUILTIN_PLUGINS)
    disabled: list[str] = []


class LoggingSection(Section):
    format: Literal["json", "text"] = "json"
    level: Literal["debug", "info", "warn", "error"] = "info"


class Config(Section):
    server: ServerSection = ServerSection()
    # validated from {} so that their default paths, too, start at the configuration file's directory
    security: SecuritySection = Field({}, validate_default=True)
    database: DatabaseSection = Field({}, validate_default=True)
    api: ApiSection = ApiSection()
    ops: OpsSection = OpsSection()
    lockout: LockoutSection = LockoutSection()
    console: ConsoleSection = ConsoleSection()
    accounting: AccountingSection = AccountingSection()
    mfa: MfaSection = MfaSection()
    sms: Annotated[Section, PluginSection("sms")] = Field({}, validate_default=True)
    push: Annotated[Section, PluginSection("push")] = Field({}, validate_default=True)
    nas: Annotated[list[NasSection], Field(default_factory=list)]
    plugins: PluginsSection = PluginsSection()
    logging: LoggingSection = LoggingSection()
    ldap: Annotated[Section, PluginSection("ldap")] | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_order_needs_ldap(cls, data):
        """The default ``[plugins] order`` includes ldap_users only when [ldap] is configured;
        an order that names it explicitly without [ldap] is refused when plugins load."""
        if isinstance(data, dict) and data.get("ldap") is None:
            plugins = data.get("plugins", {})
            if isinstance(plugins, dict) and "order" not in plugins:
                order = [name for name in BUILTIN_PLUGINS if name != LDAP_PLUGIN]
                data = {**data, "plugins": {**plugins, "order": order}}
        return data


def config_path(explicit: str | None) -> str:
    return explicit or os.environ.get("RADIUSD_CONFIG") or DEFAULT_CONFIG_PATH


def _env_value(raw: str):
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_env_overrides(data: dict, environ: dict[str, str]) -> dict:
    """Overlay ``RADIUSD_<SECTION>__<KEY>`` variables onto the parsed TOML."""
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("__")
        if not section or not key:
            raise ConfigError(f"environment variable {name} does not name SECTION__KEY")
        target = data.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"environment variable {name} cannot override [[{section}]] entries")
        target[key] = _env_value(raw)
    return data


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"unknown configuration key {where}"
    message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]  # without "Value error, "
    return f"invalid configuration value {where}: {message}"


def load_config(path: str | None = None, environ: dict[str, str] | None = None) -> Config:
    """Read, overlay and validate the configuration; raise ConfigError with one clear line."""
    path = config_path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {path} is not valid TOML: {exc}") from None
    data = apply_env_overrides(data, dict(os.environ if environ is None else environ))
    try:
        return Config.model_validate(data, context={CONFIG_DIRECTORY: os.path.dirname(os.path.abspath(path))})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
