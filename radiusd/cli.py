"""``radiusd``: serve, check-config, plugins, init-config."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import click

from radiusd import __version__
from radiusd.config import ConfigError, config_path, load_config, readable_by_others

WORKER_ENV = "RADIUSD_WORKER_INDEX"
STARTUP_SECONDS = 20  # building the runtime (the database's schema check) may take no longer


def fail(message: str, code: int = 1):
    click.echo(f"radiusd: {message}", err=True)
    sys.exit(code)


@click.group()
@click.option("--config", "config_file", metavar="PATH", help="configuration file (else $RADIUSD_CONFIG, "
              "else /etc/radiusd/radiusd.toml)")
@click.version_option(__version__, prog_name="radiusd")
@click.pass_context
def main(ctx, config_file):
    """RADIUS authentication server with multi-factor authentication."""
    os.umask(0o077)  # the database (and -wal/-shm), spools and key files hold secrets: owner only
    ctx.obj = config_path(config_file)


def _load(path):
    try:
        return load_config(path)
    except ConfigError as exc:
        fail(str(exc))


def _bounded(seconds: float, stalled: str, function, *args):
    """``function(*args)`` in a daemon thread; ``fail(stalled)`` if it has not returned in
    ``seconds``. A database that accepts connections and never answers would otherwise hang
    start-up without a word (the thread is abandoned: the process exits)."""
    outcome = {}

    def target():
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # re-raised in the calling thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="radiusd-startup", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        fail(f"{stalled}: no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _checked_runtime(config):
    """The runtime, once the database has answered a health probe (reachable, writable, in
    time); any failure ends the process with one line."""
    from radiusd.db.engine import PG_CONNECT_TIMEOUT_SECONDS
    from radiusd.health import describe
    from radiusd.service import build_runtime

    try:
        runtime = _bounded(STARTUP_SECONDS, "database unreachable", build_runtime, config)
    except ConfigError as exc:
        fail(str(exc))
    except Exception as exc:  # a plugin that cannot be built
        fail(f"{type(exc).__name__}: {exc}")
    timeout = config.ops.health_timeout_seconds
    try:
        _bounded(timeout + PG_CONNECT_TIMEOUT_SECONDS, "database check failed", runtime.database.probe, timeout)
    except Exception as exc:
        fail(f"database check failed: {describe(exc)}")
    return runtime


@main.command()
@click.pass_obj
def serve(path):
    """Run the server in the foreground until SIGTERM."""
    from twisted.internet import reactor

    from radiusd.logs import start_logging
    from radiusd.service import RadiusService

    config = _load(path)
    runtime = _checked_runtime(config)
    start_logging(config.logging.format, config.logging.level)
    worker = os.environ.get(WORKER_ENV)
    service = RadiusService(runtime, reactor, config_path=path, serve_ops=worker is None, serve_api=worker is None)
    children = [] if worker is not None else _spawn_workers(path, config.server.workers)
    service.on_nas_change = lambda: _reload(service, children)  # a NAS changed through the API
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(_reload, service, children))
    startup_errors = []

    def start():  # an exception here would only be logged, leaving a process that serves nothing
        try:
            service.startService()
        except Exception as exc:  # a NAS entry that cannot be used, a port already in use (ConfigError)
            reason = str(exc) if isinstance(exc, ConfigError) else f"{type(exc).__name__}: {exc}"
            startup_errors.append(f"cannot start: {reason}")
            reactor.stop()

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.addSystemEventTrigger("before", "shutdown", _stop_workers, children)
    reactor.run()
    if startup_errors:
        fail(startup_errors[0])


def _spawn_workers(path: str, workers: int) -> list[subprocess.Popen]:
    """``workers = N``: N-1 more processes on the same ports (SO_REUSEPORT), RADIUS only
    (the first process alone serves the ops site and the admin API)."""
    return [subprocess.Popen([sys.executable, "-m", "radiusd.cli", "--config", path, "serve"],
                             env={**os.environ, WORKER_ENV: str(index)})
            for index in range(1, workers)]


def _reload(service, children) -> None:
    service.reload()
    for child in children:
        child.send_signal(signal.SIGHUP)


def _stop_workers(children) -> None:
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()


@main.command("check-config")
@click.pass_obj
def check_config(path):
    """Validate configuration, dictionaries, attribute names, database, seed key and the
    plugins' backends (e.g. the LDAP service-account bind)."""
    from radiusd.plugin import health_checks
    from radiusd.services.users import stored_attribute_problems

    config = _load(path)
    runtime = _checked_runtime(config)
    try:
        registry = runtime.load_registry()
    except ConfigError as exc:
        fail(str(exc))
    except Exception as exc:  # a NAS secret that does not decrypt, a bad stored address
        fail(f"{type(exc).__name__}: {exc}")
    problems = stored_attribute_problems(runtime.database, runtime.dictionary)
    if problems:
        fail("; ".join(problems))
    for name, probe in health_checks(runtime.plugin_manager).items():
        try:
            probe()
        except Exception as exc:
            fail(f"{name} check failed: {getattr(exc, 'detail', '') or exc}")
    for warning in readable_by_others(config):
        click.echo(f"radiusd: warning: {warning}", err=True)
    click.echo(f"configuration OK: {path} ({len(registry)} NAS entries, "
               f"plugins {', '.join(n for n in config.plugins.order if n not in config.plugins.disabled)})")


@main.command()
@click.pass_obj
def plugins(path):
    """Each hook with its implementations, in call order."""
    from radiusd.plugin import call_order
    from radiusd.service import build_runtime

    config = _load(path)
    try:
        runtime = build_runtime(config, require_current_schema=False)
    except ConfigError as exc:
        fail(str(exc))
    for hook, names in call_order(runtime.plugin_manager).items():
        click.echo(f"{hook}: {', '.join(names) if names else '-'}")


@main.command("init-config")
@click.argument("target", metavar="PATH", type=click.Path(dir_okay=False))
def init_config(target):
    """Write the example configuration to PATH (mode 0600: it holds a NAS secret), never over
    an existing file. Edit it, then `radiusd-admin --config PATH db upgrade`."""
    from importlib.resources import files

    example = files("radiusd.examples").joinpath("radiusd.toml").read_bytes()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        fail(f"{target} exists; not overwritten")
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror}")
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(example)
    click.echo(f"wrote {target}: the development example (listen, [mfa] required, the [[nas]] entry and "
               "its secret are for trying it out; change them before production). Its data paths "
               "(../var/radiusd.db, ../var/seed.key) are relative to the file's directory: point [database] "
               "url and [security] seed_key where the data should live")


if __name__ == "__main__":
    main()
