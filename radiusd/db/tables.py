"""The schema, as SQLAlchemy Core tables (the hot path uses Core statements, not ORM sessions).

Migrations in ``migrations/versions`` create exactly these tables; a test compares the two.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    }
)


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


CUT_MARKER = "…"


def fit(column: Column, value):
    """A string cut to ``column``'s length, its last character then ``CUT_MARKER``.

    PostgreSQL refuses a varchar(n) value longer than n characters where SQLite stores it, so
    text from outside (a NAS, an API client) is fitted before it is written: an audit row for a
    long User-Name must not fail the request. Only for values written, never for lookups: a cut
    name must not find the user it was cut to."""
    length = getattr(column.type, "length", None)
    if not isinstance(value, str) or length is None or len(value) <= length:
        return value
    return value[:length - 1] + CUT_MARKER


def fitted(table: Table, values: dict) -> dict:
    """``values`` for a row of ``table``, each string fitted to its column (see ``fit``)."""
    return {name: fit(table.c[name], value) for name, value in values.items()}


def lockout_columns() -> list[Column]:
    """Blocking (SPEC §3.2) of users and operators: failures of the current series, and the
    block, if any (counted and set by services/blocks.py)."""
    return [
        Column("failed_attempts", Integer, nullable=False, server_default="0"),
        Column("first_failure_at", UTCDateTime, nullable=True),
        Column("blocked_at", UTCDateTime, nullable=True),
        Column("blocked_until", UTCDateTime, nullable=True),
        Column("block_permanent", Boolean, nullable=False, server_default="0"),
        Column("block_reason", String(255), nullable=False, server_default=""),
    ]


users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("first_name", String(128), nullable=False, server_default=""),
    Column("last_name", String(128), nullable=False, server_default=""),
    Column("email", String(254), nullable=False, server_default=""),
    Column("phone", String(20), nullable=False, server_default=""),
    Column("password_hash", Text, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("framed_ip_address", String(45), nullable=True),
    Column("sponsor_name", String(128), nullable=False, server_default=""),
    Column("sponsor_email", String(254), nullable=False, server_default=""),
    Column("description", Text, nullable=False, server_default=""),
    Column("mfa_exempt", Boolean, nullable=False, server_default="0"),
    Column("reply_attributes", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("last_login_at", UTCDateTime, nullable=True),
    *lockout_columns(),
    # Where the password lives: "local" (password_hash) or "ldap" (the directory; no hash).
    Column("source", String(8), nullable=False, server_default="local"),
    # The expiry the sweep last acted on (audit event "expired", sessions terminated): once each.
    Column("expiry_noticed_at", UTCDateTime, nullable=True),
)

nas_devices = Table(
    "nas_devices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("address", String(64), nullable=False),
    Column("secret_encrypted", LargeBinary, nullable=False),
    Column("require_message_authenticator", Boolean, nullable=True),
    Column("mfa_mode", String(16), nullable=True),
    Column("coa_port", Integer, nullable=False, server_default="3799"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

settings = Table(
    "settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("occurred_at", UTCDateTime, nullable=False, index=True),
    Column("type", String(32), nullable=False),
    Column("username", String(253), nullable=True, index=True),  # as sent: a User-Name is up to 253 octets
    Column("client", String(64), nullable=True),
    Column("result", String(16), nullable=False, server_default=""),
    Column("reason", String(64), nullable=False, server_default=""),
    Column("actor", String(128), nullable=False, server_default=""),
    Column("detail", JSON, nullable=False),
)

otp_enrolments = Table(
    "otp_enrolments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, unique=True),
    Column("secret_encrypted", LargeBinary, nullable=False),
    Column("verified", Boolean, nullable=False, server_default="0"),
    Column("enrolled_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),  # an unverified enrolment dies then
    Column("verified_at", UTCDateTime, nullable=True),
    Column("last_step", BigInteger, nullable=True),  # newest TOTP time step accepted (replay guard)
    Column("activation_code_hash", String(64), nullable=True, unique=True),
    # Remote configuration of the authenticator app (SPEC §6): desired settings, their version
    # (bumped on every change) and what the app last acknowledged.
    Column("pin_required", Boolean, nullable=False, server_default="0"),
    Column("biometric_required", Boolean, nullable=False, server_default="0"),
    Column("config_version", Integer, nullable=False, server_default="1"),
    Column("applied_version", Integer, nullable=True),
    Column("last_sync_at", UTCDateTime, nullable=True),
)

challenges = Table(
    "challenges",
    metadata,
    Column("state_hash", String(64), primary_key=True),  # SHA-256 of the State; never the State
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("username", String(64), nullable=False),
    Column("nas", String(64), nullable=False),
    Column("factor", String(16), nullable=False),
    Column("code_hash", String(64), nullable=True),  # SMS: keyed hash of the code sent
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

sms_messages = Table(
    "sms_messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("sent_at", UTCDateTime, nullable=False),
    Index("ix_sms_messages_user_sent", "user_id", "sent_at"),
)

# The authenticator app (SPEC §3.1 push, §6): a device registered by activating an enrolment
# (dies with it), and push approval requests. The device token is stored only as a keyed digest.
devices = Table(
    "devices",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device_id", String(32), nullable=False, unique=True),  # public id
    Column("enrolment_id", Integer, ForeignKey("otp_enrolments.id", ondelete="CASCADE"), nullable=False,
           unique=True),
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("name", String(64), nullable=False, server_default=""),
    Column("platform", String(32), nullable=False, server_default=""),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

push_requests = Table(
    "push_requests",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("push_id", String(32), nullable=False, unique=True),  # public, random
    Column("user_id", Integer, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("username", String(64), nullable=False),
    Column("device_id", Integer, ForeignKey("devices.id", ondelete="SET NULL"), nullable=True),
    Column("state", String(16), nullable=False),  # pending, approved, denied, expired
    Column("number", String(2), nullable=False),  # shown on both sides, to match
    Column("nas", String(64), nullable=False, server_default=""),
    Column("calling_station_id", String(253), nullable=False, server_default=""),
    Column("description", String(128), nullable=False, server_default=""),
    Column("requested_by", String(64), nullable=True),  # the API client that started it, if any
    Column("state_hash", String(64), nullable=True, index=True),  # challenge mode: its State's SHA-256
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
    Column("decided_at", UTCDateTime, nullable=True),
    Index("ix_push_requests_user_state", "user_id", "state"),
)

# OAuth2 clients of the admin API (SPEC §5) and the Bearer tokens issued to them. Secrets and
# tokens are high-entropy random strings stored only as keyed digests; deleting a client
# deletes its tokens.
api_clients = Table(
    "api_clients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("client_id", String(64), nullable=False, unique=True),
    Column("name", String(60), nullable=False, unique=True),
    Column("type", String(16), nullable=False),  # admin, agent or user: also the token's scope
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("secret_rotated_at", UTCDateTime, nullable=False),
    Column("last_token_at", UTCDateTime, nullable=True),
    Column("created_by", String(128), nullable=False, server_default=""),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("client_id", Integer, ForeignKey("api_clients.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# Accounting sessions (SPEC §4), one row per Acct-Session-Id of a NAS, kept up to date by
# Start/Interim-Update/Stop with single upserts whose counters never go backwards. A session
# is active until a Stop (stopped), an acknowledged Disconnect-Request (terminated) or
# ``stale_after`` passing without an update (stale). Usernames are as the NAS reported them.
sessions = Table(
    "sessions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("nas", String(64), nullable=False),  # the NAS entry's name
    Column("nas_address", String(45), nullable=False),  # the source address of its last packet
    Column("session_id", String(253), nullable=False),  # Acct-Session-Id
    Column("username", String(253), nullable=True),
    Column("nas_ip_address", String(45), nullable=True),
    Column("nas_identifier", String(253), nullable=True),
    Column("nas_port", BigInteger, nullable=True),
    Column("framed_ip_address", String(45), nullable=True),
    Column("calling_station_id", String(253), nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("stopped_at", UTCDateTime, nullable=True),
    Column("input_octets", BigInteger, nullable=False, server_default="0"),  # with Gigawords
    Column("output_octets", BigInteger, nullable=False, server_default="0"),
    Column("session_time", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),  # active, stopped, terminated, stale
    Column("stop_cause", String(64), nullable=True),  # Acct-Terminate-Cause name
    Column("interim_interval", Integer, nullable=True),  # Acct-Interim-Interval, when sent
    Column("stale_after", UTCDateTime, nullable=False),
    Column("disconnect_result", String(16), nullable=True),  # ack, nak, timeout, error
    Column("disconnect_error_cause", String(64), nullable=True),  # Error-Cause name of a NAK
    Column("disconnect_at", UTCDateTime, nullable=True),
    UniqueConstraint("nas", "session_id", name="uq_sessions_nas_session_id"),
    Index("ix_sessions_username_status", "username", "status"),
    Index("ix_sessions_status_stale_after", "status", "stale_after"),
    Index("ix_sessions_updated_at", "updated_at"),
)

# The seed key's check value (services/keys.py): the keyed-digest key, AES-GCM sealed with the
# seed key. A key that does not open it is the wrong key.
key_checks = Table(
    "key_checks",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("sealed", LargeBinary, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Operators of the web console (SPEC §10): people with a role, an argon2id password and a TOTP
# seed (sealed with the seed key like users' seeds; NULL until they enrol). Their failed logins
# are counted and blocked with the users' lockout columns and statements (services/blocks.py).
operators = Table(
    "operators",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # admin, helpdesk or auditor
    Column("password_hash", Text, nullable=False),
    Column("secret_encrypted", LargeBinary, nullable=True),  # the TOTP seed
    Column("totp_verified", Boolean, nullable=False, server_default="0"),
    Column("last_step", BigInteger, nullable=True),  # newest TOTP time step accepted (replay guard)
    *lockout_columns(),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_login_at", UTCDateTime, nullable=True),
)

# The console's server-side sessions: the id and the CSRF token are stored only as SHA-256
# digests (256-bit random values: a digest without a key is enough). A session half way through
# login (password checked, TOTP not yet) has ``mfa_pending``; removing an operator ends theirs.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("operator_id", Integer, ForeignKey("operators.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("csrf_hash", String(64), nullable=False),
    Column("mfa_pending", Boolean, nullable=False),
    Column("source", String(45), nullable=False, server_default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False, index=True),
)
