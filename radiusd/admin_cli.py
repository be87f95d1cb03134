"""``radiusd-admin``: administration without the API, through the same services/ functions.

Exit codes: 0 ok, 1 operation failed (one line on stderr), 2 usage error. Passwords and
secrets come from a prompt or ``--*-stdin``, never from argv. ``--format json`` prints one
JSON document.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from datetime import date, datetime
from functools import cached_property, wraps

import click

from radiusd import __version__
from radiusd.config import Config, ConfigError, config_path, load_config
from radiusd.crypto import DecryptionError
from radiusd.errors import backend_of
from radiusd.services import ServiceError


class AdminContext:
    """Lazily built pieces, so that ``db upgrade`` works before a seed key or schema exists."""

    def __init__(self, path: str, fmt: str):
        self.path = path
        self.format = fmt

    @cached_property
    def config(self) -> Config:
        return load_config(self.path)

    @cached_property
    def database(self):
        """The database, which must exist with the current schema: only ``db upgrade`` creates
        or migrates one (it sets this itself, from ``open_database``)."""
        from radiusd.db import migrate

        database = self.open_database(create=False)
        if not migrate.is_current(database):
            raise ConfigError(f"the database schema is not current (revision {migrate.current_revision(database)}, "
                              f"this release {migrate.head_revision()}): run `radiusd-admin db upgrade`")
        return database

    def open_database(self, *, create: bool):
        from radiusd.db.engine import Database

        return Database(self.config.database.url, pool_size=2, create=create)

    @cached_property
    def services(self):
        """The services acting as "cli"; Disconnect-Requests go out from here with the blocking
        client (no reactor), to the NAS list as the server builds it (file and database)."""
        import time

        from radiusd.disconnect import disconnect_blocking
        from radiusd.services.factory import Resources, Services

        def warn(text: str) -> None:
            click.echo(f"warning: {text}", err=True)

        settings = self.config.accounting
        return Services(Resources(self.config, self.database, clock=time.time, warn=warn,
                                  nas_lookup=lambda name: self.registry.by_name(name),
                                  disconnect=lambda targets: disconnect_blocking(targets, settings), on_error=warn),
                        actor="cli")

    @cached_property
    def registry(self):
        """The NAS list, built only when a session is to be disconnected."""
        return self.services.nas.registry()

    def emit(self, document, columns: list[str] | None = None) -> None:
        """Print a result: JSON, or a table (lists) / ``key: value`` lines (objects)."""
        if self.format == "json":
            click.echo(json.dumps(document, default=_json_default, indent=2, ensure_ascii=False))
            return
        if isinstance(document, list):
            _print_table(document, columns)
        elif isinstance(document, dict):
            for key, value in document.items():
                click.echo(f"{key}: {_cell(value)}")
        elif document is not None:
            click.echo(document)


def _json_default(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(type(value).__name__)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, list):
        return ", ".join(f"{item['name']}={item['value']}" if isinstance(item, dict) else str(item)
                         for item in value) or "-"
    return str(value)


def _print_table(rows: list[dict], columns: list[str] | None) -> None:
    if not rows:
        click.echo("(none)")
        return
    columns = columns or list(rows[0])
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    click.echo("  ".join(column.upper().ljust(width) for column, width in zip(columns, widths)).rstrip())
    for line in cells:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def fail(message: str) -> None:
    click.echo(f"radiusd-admin: {message}", err=True)
    sys.exit(1)


def operation(function):
    """Turn service and configuration errors into one line on stderr and exit code 1."""
    @wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ServiceError as exc:
            fail(exc.detail)
        except ConfigError as exc:
            fail(str(exc))
        except DecryptionError as exc:  # a blob damaged since the key check passed
            fail(f"{exc}; is [security] seed_key the key this database was written with?")
        except OSError as exc:  # a file the command reads or writes
            fail(f"{exc.filename or 'file'}: {exc.strerror or exc}")
        except Exception as exc:  # a backend failure is still one clear line, never a traceback
            if backend_of(exc) != "db":
                raise
            fail(f"database error: {str(exc).splitlines()[0]}")
    return run


def read_secret(from_stdin: bool, prompt: str, confirm: bool = True) -> str:
    """A secret from the first line of stdin (a second line, if any, must match) or a prompt."""
    if from_stdin:
        lines = sys.stdin.read().splitlines()
        if not lines or not lines[0]:
            fail(f"{prompt.lower()} expected on standard input")
        if len(lines) > 1 and lines[1] != lines[0]:
            fail(f"{prompt.lower()} and its confirmation differ")
        return lines[0]
    if not sys.stdin.isatty():
        fail(f"{prompt.lower()} needed: use the --*-stdin option or run from a terminal")
    return click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)


@click.group()
@click.option("--config", "config_file", metavar="PATH", help="configuration file")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.version_option(__version__, prog_name="radiusd-admin")
@click.pass_context
def main(ctx, config_file, fmt):
    """Administer radiusd: database, NAS devices, users, API clients and console operators."""
    os.umask(0o077)  # what it writes (database, seed key, QR codes, exports) holds secrets: owner only
    ctx.obj = AdminContext(config_path(config_file), fmt)


# -- db ----------------------------------------------------------------------------------------

@main.group()
def db():
    """Database schema."""


@db.command()
@click.pass_obj
@operation
def upgrade(admin: AdminContext):
    """Create the database and the seed key file if missing, apply all migrations and write
    the seed key's check value (a key that does not open it is refused from then on)."""
    from radiusd.crypto import create_seed_key_file
    from radiusd.db import migrate

    reference = admin.config.security.seed_key
    created = bool(reference.file) and create_seed_key_file(reference.file)
    admin.database = admin.open_database(create=True)
    migrate.upgrade(admin.database)
    admin.services.resources.seed_key  # noqa: B018 - writes the key check, or refuses a wrong key
    admin.emit({"revision": migrate.current_revision(admin.database), "seed_key_created": created})


@db.command("rotate-seed-key")
@click.option("--new-key-file", required=True, metavar="FILE",
              help="the new seed key (created, mode 0600, if the file does not exist)")
@click.pass_obj
@operation
def rotate_seed_key(admin: AdminContext, new_key_file):
    """Re-encrypt every TOTP seed and NAS secret with a new seed key, in one transaction
    (interrupted, nothing changes). Stop the servers first; then point [security] seed_key at
    FILE and start them."""
    from radiusd.config import SecretRef
    from radiusd.crypto import SeedKey, create_seed_key_file
    from radiusd.services.keys import rotate_seed_key as rotate

    created = create_seed_key_file(new_key_file)
    new = SeedKey.load(SecretRef(file=new_key_file))
    counts = rotate(admin.database, admin.services.resources.seed_key, new, actor="cli")
    admin.emit({"new_key_file": new_key_file, "new_key_created": created, "nas_secrets": counts["nas_devices"],
                "totp_seeds": counts["otp_enrolments"], "operator_seeds": counts["operators"]})
    if admin.format != "json":
        click.echo(f"now set [security] seed_key = {{ file = \"{new_key_file}\" }} and start the servers", err=True)


@db.command()
@click.pass_obj
@operation
def current(admin: AdminContext):
    """Show the schema revision of the database and of this release."""
    from radiusd.db import migrate

    database = admin.open_database(create=False)
    admin.emit({"revision": migrate.current_revision(database), "head": migrate.head_revision()})


# -- nas ---------------------------------------------------------------------------------------

@main.group()
def nas():
    """NAS devices (RADIUS clients) kept in the database."""


@nas.command("add")
@click.argument("name")
@click.option("--address", required=True, help="IP address or CIDR network")
@click.option("--secret-stdin", is_flag=True, help="read the shared secret from standard input")
@click.option("--generate-secret", is_flag=True, help="generate a random secret and print it once")
@click.option("--mfa-mode", type=click.Choice(["challenge", "append"]))
@click.option("--coa-port", type=int, default=3799, show_default=True)
@click.option("--require-message-authenticator/--no-require-message-authenticator", default=None)
@click.pass_obj
@operation
def nas_add(admin, name, address, secret_stdin, generate_secret, mfa_mode, coa_port,
            require_message_authenticator):
    """Add a NAS."""
    from radiusd.services.nas import generate_secret as new_secret

    if secret_stdin and generate_secret:
        raise click.UsageError("--secret-stdin and --generate-secret exclude each other")
    secret = new_secret() if generate_secret else read_secret(secret_stdin, "Shared secret")
    shown = admin.services.nas.add(name, address, secret, mfa_mode=mfa_mode, coa_port=coa_port,
                                   require_message_authenticator=require_message_authenticator)
    admin.emit({**shown, "secret": secret} if generate_secret else shown)


@nas.command("list")
@click.pass_obj
@operation
def nas_list(admin):
    """List NAS devices from the configuration file and the database, each with whether its
    latest Access-Request carried Message-Authenticator (yes, no, or unseen; the server
    records it once a minute)."""
    from radiusd.nas_activity import message_authenticator_seen

    seen = message_authenticator_seen(admin.database)
    unseen = {"message_authenticator": "unseen", "with_at": None, "without_at": None}
    admin.emit([{**entry, **seen.get(entry["name"], unseen)} for entry in admin.services.nas.list()],
               ["name", "address", "mfa_mode", "coa_port", "origin", "message_authenticator"])


@nas.command("remove")
@click.argument("name")
@click.pass_obj
@operation
def nas_remove(admin, name):
    """Remove a NAS kept in the database."""
    admin.services.nas.remove(name)
    admin.emit({"removed": name})


@nas.command("rotate-secret")
@click.argument("name")
@click.option("--secret-stdin", is_flag=True)
@click.option("--generate-secret", is_flag=True)
@click.pass_obj
@operation
def nas_rotate_secret(admin, name, secret_stdin, generate_secret):
    """Replace a NAS's shared secret (send SIGHUP to the server to apply it)."""
    from radiusd.services.nas import generate_secret as new_secret

    secret = new_secret() if generate_secret else read_secret(secret_stdin, "New shared secret")
    admin.services.nas.rotate_secret(name, secret)
    admin.emit({"name": name, "secret": secret} if generate_secret else {"name": name, "rotated": True})


# -- user --------------------------------------------------------------------------------------

USER_COLUMNS = ["username", "first_name", "last_name", "status", "expires_at", "framed_ip_address", "mfa_exempt"]


def profile_options(function):
    """The profile flags shared by ``user add`` and ``user set``."""
    options = [
        click.option("--first-name"), click.option("--last-name"), click.option("--email"),
        click.option("--phone", help="+ and country code, or national form in [sms] default_region"),
        click.option("--expires", help="ISO-8601 date or time (UTC unless an offset is given); '' clears"),
        click.option("--framed-ip", help="IPv4 address, user-selects or nas-assigns; '' clears"),
        click.option("--sponsor-name"), click.option("--sponsor-email"), click.option("--description"),
        click.option("--mfa-exempt/--no-mfa-exempt", default=None),
        click.option("--reply-attribute", "reply_attributes", multiple=True, metavar="NAME=VALUE",
                     help="reply attribute from the dictionary (repeatable; replaces the list)"),
        click.option("--password-stdin", is_flag=True, help="read the password from standard input"),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def profile_fields(options: dict) -> dict:
    names = {"first_name": "first_name", "last_name": "last_name", "email": "email", "phone": "phone",
             "expires": "expires_at", "framed_ip": "framed_ip_address", "sponsor_name": "sponsor_name",
             "sponsor_email": "sponsor_email", "description": "description", "mfa_exempt": "mfa_exempt"}
    fields = {field: options[option] for option, field in names.items() if options.get(option) is not None}
    if fields.get("expires_at") == "":
        fields["expires_at"] = None
    if options.get("reply_attributes"):
        pairs = []
        for item in options["reply_attributes"]:
            name, separator, value = item.partition("=")
            if not separator:
                raise click.UsageError(f"--reply-attribute takes NAME=VALUE, not {item!r}")
            pairs.append({"name": name.strip(), "value": value.strip()})
        fields["reply_attributes"] = pairs
    return fields


@main.group()
def user():
    """Local users."""


@user.command("add")
@click.argument("username")
@profile_options
@click.pass_obj
@operation
def user_add(admin, username, password_stdin, **options):
    """Create a user (the password is prompted for twice, or read with --password-stdin)."""
    fields = profile_fields(options)
    password = read_secret(password_stdin, "Password")
    admin.emit(admin.services.users.create(username, fields, password=password))


@user.command("set")
@click.argument("username")
@profile_options
@click.pass_obj
@operation
def user_set(admin, username, password_stdin, **options):
    """Change the given fields (and the password, with --password-stdin)."""
    fields = profile_fields(options)
    if password_stdin:
        admin.services.users.set_password(username, read_secret(True, "Password"))
    if fields or not password_stdin:
        admin.emit(admin.services.users.update(username, fields))
    else:
        admin.emit(admin.services.users.show(username))


BLOCKED_COLUMNS = ["username", "reason", "blocked_at", "blocked_until", "remaining_seconds", "permanent",
                   "failed_attempts"]


@user.command("list")
@click.option("--status", type=click.Choice(["active", "disabled", "expired", "blocked"]))
@click.option("--search", "q", help="substring of username, name or email")
@click.option("--blocked", is_flag=True, help="blocked users with reason, times and failed attempts")
@click.pass_obj
@operation
def user_list(admin, status, q, blocked):
    """List users."""
    if blocked:
        admin.emit(admin.services.blocks.list_blocked(), BLOCKED_COLUMNS)
        return
    rows, cursor = [], None
    while True:
        page, cursor = admin.services.users.list(q=q, status=status, limit=500, cursor=cursor)
        rows.extend(page)
        if cursor is None:
            break
    admin.emit(rows, USER_COLUMNS)


@user.command("show")
@click.argument("username")
@click.pass_obj
@operation
def user_show(admin, username):
    """Show one user."""
    admin.emit(admin.services.users.show(username))


@user.command("enable")
@click.argument("username")
@click.pass_obj
@operation
def user_enable(admin, username):
    """Allow the user to log in."""
    admin.emit(admin.services.users.set_enabled(username, True))


@user.command("disable")
@click.argument("username")
@click.pass_obj
@operation
def user_disable(admin, username):
    """Refuse the user's logins."""
    admin.emit(admin.services.users.set_enabled(username, False))


@user.command("delete")
@click.argument("username")
@click.pass_obj
@operation
def user_delete(admin, username):
    """Delete the user."""
    admin.services.users.delete(username)
    admin.emit({"deleted": username})


@user.command("bulk-password-reset")
@click.argument("usernames", nargs=-1)
@click.option("--status", type=click.Choice(["active", "disabled", "expired", "blocked"]),
              help="every local user with this status")
@click.option("--search", "q", help="every local user whose username, name or email contains this")
@click.pass_obj
@operation
def user_bulk_password_reset(admin, usernames, status, q):
    """New random passwords for the named users, or for the local users --status/--search
    select; each is printed this once and the old passwords stop working at once."""
    if bool(usernames) == bool(status or q):
        raise click.UsageError("name the users, or select them with --status/--search (not both)")
    result = admin.services.bulk.reset_passwords(list(usernames) or None, status=status, q=q)
    if admin.format == "json":
        admin.emit(result)
        return
    _print_table(result["items"], ["username", "password"])
    click.echo(f"{result['count']} passwords reset; they are shown this once", err=True)


@user.command("bulk-expire")
@click.argument("usernames", nargs=-1, required=True)
@click.option("--expires", required=True,
              help="ISO-8601 date or time (UTC unless an offset is given); '' means never")
@click.pass_obj
@operation
def user_bulk_expire(admin, usernames, expires):
    """Set the expiration date of many users (all or none); with a date in the past they are
    expired at once and their open sessions are terminated."""
    result = admin.services.bulk.set_expiration(list(usernames), expires or None)
    if admin.format == "json":
        admin.emit(result)
        return
    admin.emit(result["items"], USER_COLUMNS)


@user.command("block")
@click.argument("username")
@click.option("--seconds", type=click.IntRange(min=1), help="block for this many seconds")
@click.option("--permanent", is_flag=True, help="block until an administrator removes it")
@click.option("--reason", required=True, help="why (shown in the blocked-users list)")
@click.pass_obj
@operation
def user_block(admin, username, seconds, permanent, reason):
    """Block a user manually, for a duration or permanently."""
    if (seconds is None) == (not permanent):
        raise click.UsageError("give exactly one of --seconds N and --permanent")
    admin.emit(admin.services.blocks.block(username, seconds=seconds, permanent=permanent, reason=reason))


@user.command("unblock")
@click.argument("username")
@click.pass_obj
@operation
def user_unblock(admin, username):
    """Remove a user's block (automatic or manual) and clear the failure count."""
    admin.services.blocks.unblock(username)
    admin.emit({"unblocked": username})


SESSION_COLUMNS = ["session_id", "nas", "framed_ip_address", "calling_station_id", "nas_port", "started_at",
                   "updated_at", "input_octets", "output_octets", "status"]


@user.command("sessions")
@click.argument("username")
@click.option("--all", "everything", is_flag=True, help="closed sessions too (stopped, terminated, stale)")
@click.pass_obj
@operation
def user_sessions(admin, username, everything):
    """The user's open accounting sessions (with --all, every session still kept)."""
    rows = admin.services.sessions.list_user_sessions(username, status=None if everything else "active")
    admin.emit([view for _, view in rows], SESSION_COLUMNS)


@user.command("disconnect")
@click.argument("username")
@click.pass_obj
@operation
def user_disconnect(admin, username):
    """Terminate the user's open sessions (RFC 5176 Disconnect-Request to each NAS); exit 1
    unless every NAS acknowledged."""
    results = admin.services.sessions.terminate_user(username, "admin")
    admin.emit(results, ["session_id", "nas", "framed_ip_address", "result", "error_cause", "status"])
    if any(item["result"] != "ack" for item in results):
        sys.exit(1)


# -- settings ----------------------------------------------------------------------------------

@main.group("settings")
def settings_group():
    """Settings stored in the database."""


@settings_group.command("lockout")
@click.option("--max-failures", type=int, help="failed attempts that block (1-100)")
@click.option("--window-seconds", type=int, help="window in which they must fall")
@click.option("--block-seconds", type=int, help="how long an automatic block lasts")
@click.option("--permanent/--no-permanent", default=None, help="automatic blocks last until removed")
@click.pass_obj
@operation
def settings_lockout(admin, max_failures, window_seconds, block_seconds, permanent):
    """Show the lockout settings, or change the given ones."""
    changes = {key: value for key, value in dict(max_failures=max_failures, window_seconds=window_seconds,
                                                  block_seconds=block_seconds, permanent=permanent).items()
               if value is not None}
    blocks = admin.services.blocks
    current = blocks.set_lockout_settings(changes) if changes else blocks.lockout_settings()
    admin.emit(current.model_dump())


# -- import / export ---------------------------------------------------------------------------

IMPORT_ERROR_COLUMNS = ["line", "column", "message"]


@contextmanager
def progress_bar(total: int, label: str):
    """A ``progress(n)`` callback drawing a bar on stderr when it is a terminal; else None."""
    if total <= 0 or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
        yield bar.update


@main.group("import")
def import_group():
    """Bulk loading from files."""


@import_group.command("users")
@click.argument("file", type=click.File("rb"))
@click.option("--apply", is_flag=True, help="write the file, all or nothing (without it: a dry run)")
@click.option("--on-conflict", type=click.Choice(["fail", "skip", "update"]), default="fail", show_default=True,
              help="an existing username is an error, is skipped, or has the file's columns updated")
@click.pass_obj
@operation
def import_users(admin, file, apply, on_conflict):
    """Import users from a CSV file (columns: see the README; `-` reads standard input).
    Prints a report; exits 1 when the file has errors, and then nothing is written."""
    plan = admin.services.bulk.plan_import(file.read(), on_conflict)
    if apply:
        with progress_bar(0 if plan.errors else plan.to_hash, "hashing passwords") as advance:
            report = admin.services.bulk.apply_import(plan, progress=advance)
    else:
        report = plan.report(dry_run=True, applied=False)
    if admin.format == "json":
        admin.emit(report)
    else:
        admin.emit({key: value for key, value in report.items() if key != "errors"})
        if report["errors"]:
            click.echo()
            _print_table(report["errors"], IMPORT_ERROR_COLUMNS)
    if report["error_count"]:
        from radiusd.services.csv_import import errors_in

        fail(f"{errors_in(report)} in {file.name}; nothing was imported")


@main.group("export")
def export_group():
    """Bulk export to files."""


@export_group.command("users")
@click.option("--output", "-o", metavar="FILE",
              help="write to FILE (created with mode 0600) instead of standard output")
@click.pass_obj
@operation
def export_users(admin, output):
    """Every user as CSV (no password or hash; formula-like cells escaped); imports as it is."""
    exported = []
    chunks = admin.services.bulk.export_csv(progress=exported.append)
    if output is None:
        stream = click.get_binary_stream("stdout")
        for chunk in chunks:
            stream.write(chunk)
        stream.flush()
        return
    with os.fdopen(os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
    admin.emit({"output": output, "users": sum(exported)})


# -- otp ---------------------------------------------------------------------------------------

@main.group()
def otp():
    """SoftOTP (authenticator app) enrolments."""


QR_SVG_SCALE = 8  # pixels a module: about 400 px across, which a phone reads off a screen (1 px: 45)


@otp.command("enroll")
@click.argument("username")
@click.option("--qr", default="terminal", metavar="terminal|svg:FILE",
              help="show the QR code in the terminal (default) or write it as an SVG file")
@click.pass_obj
@operation
def otp_enroll(admin, username, qr):
    """Create (or replace a pending) enrolment; the QR code and activation code are shown once."""
    import segno

    if qr != "terminal" and not qr.startswith("svg:"):
        raise click.UsageError("--qr takes terminal or svg:FILE")
    enrolment = admin.services.otp.enroll(username)
    if admin.format == "json":
        admin.emit(enrolment)
        return
    code = segno.make(enrolment["otpauth_uri"], error="m")
    if qr == "terminal":
        code.terminal(compact=True)
    else:
        code.save(qr[4:], kind="svg", scale=QR_SVG_SCALE, border=4)
        click.echo(f"QR code written to {qr[4:]}")
    click.echo(f"otpauth URI: {enrolment['otpauth_uri']}")
    click.echo(f"activation code: {enrolment['activation_code']}")
    click.echo(f"valid until: {enrolment['expires_at'].isoformat(timespec='seconds')}; "
               f"verify with: radiusd-admin otp verify {username} CODE")


@otp.command("verify")
@click.argument("username")
@click.argument("code")
@click.pass_obj
@operation
def otp_verify(admin, username, code):
    """Check a code (the first one verifies the enrolment); consumes its time step."""
    valid = admin.services.otp.verify(username, code)
    admin.emit({"username": username, "valid": valid})
    if not valid:
        sys.exit(1)


@otp.command("reset")
@click.argument("username")
@click.pass_obj
@operation
def otp_reset(admin, username):
    """Remove the user's enrolment."""
    admin.services.otp.reset(username)
    admin.emit({"reset": username})


@otp.command("list")
@click.pass_obj
@operation
def otp_list(admin):
    """SoftOTP users with their Verified flag and app configuration versions."""
    admin.emit(admin.services.otp.list(), ["username", "verified", "enrolled_at", "verified_at", "pin_required",
                                           "biometric_required", "config_version", "applied_version"])


@otp.command("remote-config")
@click.argument("usernames", nargs=-1, required=True)
@click.option("--pin/--no-pin", "pin_required", default=None, help="require a PIN to open the app")
@click.option("--biometric/--no-biometric", "biometric_required", default=None,
              help="require biometrics to open the app")
@click.pass_obj
@operation
def otp_remote_config(admin, usernames, pin_required, biometric_required):
    """Set the authenticator app's lock settings for one or more users (each change bumps
    config_version, which the app fetches on its next sync)."""
    admin.emit(admin.services.otp.set_remote_config_bulk(list(usernames), pin_required=pin_required,
                                                         biometric_required=biometric_required),
               ["username", "pin_required", "biometric_required", "config_version", "applied_version"])


# -- api-client --------------------------------------------------------------------------------

API_CLIENT_COLUMNS = ["client_id", "name", "type", "created_at", "last_token_at"]


@main.group("api-client")
def api_client():
    """OAuth2 clients of the admin API (types admin, agent, user)."""


@api_client.command("create")
@click.option("--type", "client_type", type=click.Choice(["admin", "agent", "user"]), required=True)
@click.option("--name", required=True, help="unique name (audit events show api:NAME)")
@click.pass_obj
@operation
def api_client_create(admin, client_type, name):
    """Create an API client; its secret is printed this once."""
    admin.emit(admin.services.api_clients.create(client_type, name))


@api_client.command("list")
@click.pass_obj
@operation
def api_client_list(admin):
    """List API clients (never a secret)."""
    admin.emit(admin.services.api_clients.list(), API_CLIENT_COLUMNS)


@api_client.command("revoke")
@click.argument("client_id")
@click.pass_obj
@operation
def api_client_revoke(admin, client_id):
    """Delete an API client; every token it holds stops working at once."""
    admin.services.api_clients.revoke(client_id)
    admin.emit({"revoked": client_id})


@api_client.command("ensure-admin")
@click.pass_obj
@operation
def api_client_ensure_admin(admin):
    """Create the first admin client if there is none, printing its id and secret once;
    print nothing when an admin client exists (``make run`` calls this)."""
    created = admin.services.api_clients.ensure_admin()
    if created is None:
        return
    if admin.format == "json":
        admin.emit(created)
        return
    click.echo("Created the first admin API client. The secret is shown this once; keep it:")
    click.echo(f"  client_id:     {created['client_id']}")
    click.echo(f"  client_secret: {created['client_secret']}")
    click.echo("  get a token:   curl -s -u CLIENT_ID:CLIENT_SECRET -d grant_type=client_credentials "
               f"http://{admin.config.api.listen}:{admin.config.api.port}/oauth/token")


# -- operator ----------------------------------------------------------------------------------

OPERATOR_COLUMNS = ["name", "role", "mfa", "status", "failed_attempts", "created_at", "last_login_at"]
OPERATOR_ROLES = click.Choice(["admin", "helpdesk", "auditor"])


@main.group()
def operator():
    """Operators of the web console (people: password + TOTP, a role)."""


@operator.command("add")
@click.argument("name")
@click.option("--role", type=OPERATOR_ROLES, required=True)
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.pass_obj
@operation
def operator_add(admin, name, role, password_stdin):
    """Create an operator (the password is prompted for twice, or read with --password-stdin);
    they enrol their TOTP at their first console login."""
    admin.emit(admin.services.operators.add(name, role, read_secret(password_stdin, "Password")))


@operator.command("list")
@click.pass_obj
@operation
def operator_list(admin):
    """List operators with their role, TOTP state (none, pending, verified) and status."""
    admin.emit(admin.services.operators.list(), OPERATOR_COLUMNS)


@operator.command("remove")
@click.argument("name")
@click.pass_obj
@operation
def operator_remove(admin, name):
    """Delete an operator and end their sessions (never the last admin)."""
    admin.services.operators.remove(name)
    admin.emit({"removed": name})


@operator.command("set-role")
@click.argument("name")
@click.argument("role", type=OPERATOR_ROLES)
@click.pass_obj
@operation
def operator_set_role(admin, name, role):
    """Change an operator's role (the last admin cannot be demoted)."""
    admin.emit(admin.services.operators.set_role(name, role))


@operator.command("reset-mfa")
@click.argument("name")
@click.pass_obj
@operation
def operator_reset_mfa(admin, name):
    """Forget the operator's TOTP and end their sessions: they enrol again at the next login."""
    admin.emit(admin.services.operators.reset_mfa(name))


@operator.command("unblock")
@click.argument("name")
@click.pass_obj
@operation
def operator_unblock(admin, name):
    """Remove an operator's block (too many failed logins) and clear their failure count."""
    admin.emit(admin.services.operators.unblock(name))


if __name__ == "__main__":
    main()
