"""``radiusd-authenticator``: a reference authenticator app on the command line.

It plays the phone's part against a radiusd server's device routes (SPEC §5 ``/mobile/*``,
§6), for tests, demos and integrators: it activates from an enrolment (the otpauth URI and the
activation code that ``POST /softotp/{username}/enroll`` or ``radiusd-admin otp enroll``
show once), prints TOTP codes, syncs the remote configuration, and lists, approves and denies
push requests. Its state — server URL, device token and TOTP seed — lives in one JSON file
written with mode 0600 (``--state``, else ``$RADIUSD_AUTHENTICATOR_STATE``, else
``~/.config/radiusd/authenticator.json``); the token and the seed are never printed.

Exit codes: 0 ok, 1 the server refused or could not be reached (one line on stderr), 2 usage.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import click
import pyotp

STATE_ENV = "RADIUSD_AUTHENTICATOR_STATE"
DEFAULT_STATE = Path("~/.config/radiusd/authenticator.json")
PLATFORM = "radiusd-authenticator"
LONG_POLL_SECONDS = 30


class ClientError(click.ClickException):
    exit_code = 1


# -- state ---------------------------------------------------------------------------------------

def state_path(explicit: str | None) -> Path:
    return Path(explicit or os.environ.get(STATE_ENV) or DEFAULT_STATE).expanduser()


def load_state(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ClientError(f"no state in {path}: run `radiusd-authenticator activate` first") from None
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read the state file {path}: {exc}") from None


def save_state(path: Path, state: dict) -> None:
    """Write atomically; the file (holding the device token and the seed) is mode 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".authenticator-", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(state, handle, indent=2)
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


# -- HTTP ----------------------------------------------------------------------------------------

def call(server: str, method: str, path: str, *, body: dict | None = None, token: str | None = None,
         timeout: float = 15):
    """One JSON request; a problem+json answer or a network failure becomes a ClientError."""
    headers = {"Accept": "application/json", "User-Agent": PLATFORM}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(server.rstrip("/") + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        try:
            problem = json.loads(exc.read())
            detail = f"{problem.get('code', 'error')}: {problem.get('detail', '')}"
        except ValueError:
            detail = exc.reason
        raise ClientError(f"the server answered {exc.code} ({detail})") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ClientError(f"cannot reach {server}: {getattr(exc, 'reason', exc)}") from None
    return json.loads(raw) if raw else None


def device_call(state: dict, method: str, path: str, **kwargs):
    return call(state["server"], method, "/api/v1/mobile" + path, token=state["device_token"], **kwargs)


def emit(document) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=True))


def totp_of(state: dict) -> pyotp.TOTP:
    return pyotp.TOTP(state["secret"], digits=state.get("digits", 6), interval=state.get("period", 30))


# -- commands ------------------------------------------------------------------------------------

@click.group()
@click.option("--state", "state_file", metavar="PATH", help=f"state file (else ${STATE_ENV}, else {DEFAULT_STATE})")
@click.pass_context
def main(context: click.Context, state_file: str | None) -> None:
    """A reference authenticator app for radiusd (activation, TOTP codes, sync, push)."""
    context.obj = state_path(state_file)


@main.command()
@click.option("--server", required=True, help="the admin API's base URL, e.g. http://127.0.0.1:8080")
@click.option("--activation-code", "--code", "activation_code", help="the enrolment's activation code")
@click.option("--otpauth-uri", help="the enrolment's otpauth:// URI (what its QR code holds)")
@click.option("--enrolment", type=click.File("r"),
              help="the enrolment as JSON (otpauth_uri and activation_code), '-' for stdin")
@click.option("--device-name", default=lambda: socket.gethostname()[:64], show_default="the host name")
@click.option("--platform", default=PLATFORM, show_default=True)
@click.option("--force", is_flag=True, help="replace an existing state file")
@click.pass_obj
def activate(path: Path, server, activation_code, otpauth_uri, enrolment, device_name, platform, force) -> None:
    """Register this app with an enrolment; stores the device token and the seed."""
    if enrolment is not None:
        try:
            document = json.load(enrolment)
        except ValueError:
            raise click.UsageError("--enrolment is not JSON") from None
        activation_code = activation_code or document.get("activation_code")
        otpauth_uri = otpauth_uri or document.get("otpauth_uri")
    if not activation_code or not otpauth_uri:
        raise click.UsageError("give --activation-code and --otpauth-uri, or --enrolment")
    if path.exists() and not force:
        raise ClientError(f"{path} exists already; use --force to replace it")
    query = parse_qs(urlparse(otpauth_uri).query)
    try:
        totp = pyotp.parse_uri(otpauth_uri)
    except ValueError as exc:
        raise click.UsageError(f"--otpauth-uri is not an otpauth URI: {exc}") from None
    answer = call(server, "POST", "/api/v1/mobile/activate", body={
        "activation_code": activation_code.strip(), "otp": totp.now(), "device_name": device_name,
        "platform": platform})
    save_state(path, {"server": server, "username": answer["username"], "device_id": answer["device_id"],
                      "device_token": answer["device_token"], "secret": totp.secret, "digits": totp.digits,
                      "period": int(query.get("period", ["30"])[0]), "issuer": totp.issuer,
                      "applied_version": None})
    emit({"activated": True, "username": answer["username"], "device_id": answer["device_id"],
          "state_file": str(path)})


@main.command()
@click.pass_obj
def code(path: Path) -> None:
    """Print the current TOTP code."""
    click.echo(totp_of(load_state(path)).now())


@main.command()
@click.pass_obj
def sync(path: Path) -> None:
    """Fetch the remote configuration, apply (store) it and acknowledge its version."""
    state = load_state(path)
    config = device_call(state, "GET", "/config")
    device_call(state, "POST", "/config/ack", body={"version": config["version"]})
    state.update(config=config, applied_version=config["version"], last_sync_at=time.time())
    save_state(path, state)
    emit(config)


@main.command(name="pushes")
@click.option("--wait", type=click.IntRange(0, LONG_POLL_SECONDS), default=0, show_default=True,
              help="seconds to wait for a request when none is pending")
@click.pass_obj
def pushes(path: Path, wait: int) -> None:
    """List pending push requests (alias: pending)."""
    emit(pending_pushes(load_state(path), wait)["items"])


main.add_command(pushes, name="pending")


def pending_pushes(state: dict, wait: int) -> dict:
    return device_call(state, "GET", f"/push?wait={wait}", timeout=wait + 15)


def decide(path: Path, push_id: str, decision: str) -> None:
    emit(device_call(load_state(path), "POST", f"/push/{quote(push_id, safe='')}", body={"decision": decision}))


@main.command()
@click.argument("push_id")
@click.pass_obj
def approve(path: Path, push_id: str) -> None:
    """Approve push request PUSH_ID."""
    decide(path, push_id, "approve")


@main.command()
@click.argument("push_id")
@click.pass_obj
def deny(path: Path, push_id: str) -> None:
    """Deny push request PUSH_ID."""
    decide(path, push_id, "deny")


@main.command()
@click.option("--auto", type=click.Choice(["approve", "deny"]), help="decide without asking")
@click.option("--once", is_flag=True, help="stop after the first request")
@click.pass_obj
def watch(path: Path, auto: str | None, once: bool) -> None:
    """Long-poll for push requests and ask (or --auto decide) each one."""
    state = load_state(path)
    while True:
        for item in pending_pushes(state, LONG_POLL_SECONDS)["items"]:
            where = item["nas"] + (f" ({item['calling_station_id']})" if item["calling_station_id"] else "")
            question = f"Approve request {item['number']} for {item['username']} from {where}?"
            decision = auto or ("approve" if click.confirm(question, default=False) else "deny")
            emit(device_call(state, "POST", f"/push/{quote(item['push_id'], safe='')}", body={"decision": decision}))
            if once:
                return


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
