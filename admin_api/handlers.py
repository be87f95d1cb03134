"""Route handlers: thin adapters from a validated ``Call`` to ``radiusd.services`` and back.

Every handler runs in a worker thread. Its services are the server's (``runtime.services``)
acting as the API client (``api:NAME``) in the audit trail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from datetime import datetime, timezone
from typing import Callable
from urllib.parse import quote


from radiusd.decisions import Abandoned, Accept, BackendFailure, Challenge, Reason
from radiusd.model import AuthRequest
from radiusd.services import Conflict, Invalid, NotFound
from radiusd.services.audit import list_events
from radiusd.services.devices import DEVICE_TOKEN_PREFIX, ActivationRefused
from radiusd.services.factory import Services
from radiusd.services.nas import list_key
from radiusd.services.users import find_user

from . import models
from .bulk_handlers import BulkHandlers, bulk_routes
from .import_jobs import ImportJobs
from .oauth import TokenBucket, TokenEndpoint
from .problems import Problem
from .bearer import ADMIN, AGENT, DEVICE, PUBLIC, USER
from .reply import Await, Poll, Reply
from .router import Call, Route

PREFIX = "/api/v1"
AUTH_NAS_PREFIX = "api:"
ACTIVATIONS_PER_CODE_PER_MINUTE = 5  # with failure counting, a code cannot be guessed at
DEVICE_POLL_SECONDS = 0.5  # GET /mobile/push?wait=N looking for a new request


# -- pagination ----------------------------------------------------------------------------------

def encode_cursor(key) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, kind: type):
    """The key a cursor of this list carries; Invalid for anything else."""
    if cursor is None:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        key = None
    if kind is tuple and isinstance(key, list) and len(key) == 2 and key[0] in (0, 1) and isinstance(key[1], str):
        return tuple(key)
    if kind is not tuple and isinstance(key, kind) and not isinstance(key, bool):
        return key
    raise Invalid("cursor", "cursor is not one this list returned")


def page(rows: list[dict], limit: int, key: Callable[[dict], object]) -> dict:
    """``rows`` fetched with ``limit + 1``: the page and the cursor of the next one, if any."""
    shown = rows[:limit]
    return {"items": shown, "next_cursor": encode_cursor(key(shown[-1])) if len(rows) > limit else None}


# -- the handlers ----------------------------------------------------------------------------------

class Handlers:
    def __init__(self, runtime, *, authentication, openapi: bytes, nas_changed: Callable[[], None]):
        self.runtime = runtime
        self.authentication = authentication
        self.config = runtime.config
        self.metrics = runtime.metrics
        self.clock = runtime.context.clock
        self.openapi_document = openapi
        self.nas_changed = nas_changed
        failures_per_minute = self.config.api.token_requests_per_minute
        self.token = TokenEndpoint(lambda: self.services("oauth").api_clients, TokenBucket(failures_per_minute),
                                   TokenBucket(failures_per_minute))
        self.activations_by_address = TokenBucket(self.config.api.activation_requests_per_minute)
        self.activations_by_code = TokenBucket(ACTIVATIONS_PER_CODE_PER_MINUTE)
        self.import_jobs = ImportJobs(self.clock)
        self.bulk = BulkHandlers(self.services, self.import_jobs)  # the bulk user routes' handlers

    def services(self, actor: str) -> Services:
        """The server's services (its Disconnect client attached), acting as ``actor``."""
        return self.runtime.services.as_actor(actor)

    def principal(self, token: str):
        """Who a Bearer token speaks for: an authenticator app's device, or an API client."""
        if token.startswith(DEVICE_TOKEN_PREFIX):
            device = self.services("api").devices.authenticate(token)
            if device is not None:
                return device
        return self.services("oauth").api_clients.authenticate(token)

    def reject_delay(self) -> float:
        return self.config.server.reject_delay_seconds

    # -- documentation ---------------------------------------------------------------------------

    def openapi(self, call: Call) -> Reply:
        return Reply(200, self.openapi_document, "application/json")

    # -- users -------------------------------------------------------------------------------------

    def list_users(self, call: Call) -> Reply:
        query = call.query
        items, after = self.services(call.actor).users.list(q=query.q, status=query.status,
                                                            expires_before=query.expires_before, limit=query.limit,
                                                            cursor=decode_cursor(query.cursor, str))
        return Reply.json({"items": items, "next_cursor": encode_cursor(after) if after is not None else None})

    def create_user(self, call: Call) -> Reply:
        body: models.UserCreate = call.body
        if body.password is not None and body.password_confirmation is None:
            raise Invalid("password_confirmation", "password_confirmation is required with password")
        if body.password is None and body.password_confirmation is not None:
            raise Invalid("password", "password_confirmation given without password")
        fields = body.model_dump(exclude_unset=True, exclude={"username", "password", "password_confirmation"})
        created = self.services(call.actor).users.create(body.username, fields, password=body.password,
                                                         confirmation=body.password_confirmation)
        return Reply.json(created, 201, headers=(("Location", f"{PREFIX}/users/{quote(body.username, safe='')}"),))

    def show_user(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).users.show(call.params["username"]))

    def update_user(self, call: Call) -> Reply:
        changes = call.body.model_dump(exclude_unset=True)
        return Reply.json(self.services(call.actor).users.update(call.params["username"], changes))

    def delete_user(self, call: Call) -> Reply:
        self.services(call.actor).users.delete(call.params["username"])
        return Reply.empty()

    def set_password(self, call: Call) -> Reply:
        body: models.PasswordChange = call.body
        self.services(call.actor).users.set_password(call.params["username"], body.password, body.password_confirmation)
        return Reply.empty()

    def enable_user(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).users.set_enabled(call.params["username"], True))

    def disable_user(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).users.set_enabled(call.params["username"], False))

    def block_user(self, call: Call) -> Reply:
        body: models.BlockRequest = call.body
        return Reply.json(self.services(call.actor).blocks.block(call.params["username"], seconds=body.duration_seconds,
                                                                 permanent=body.permanent, reason=body.reason))

    def unblock_user(self, call: Call) -> Reply:
        self.services(call.actor).blocks.unblock(call.params["username"])
        return Reply.empty()

    def list_sessions(self, call: Call) -> Reply:
        limit = call.query.limit
        status = None if call.query.status == "all" else call.query.status
        rows = self.services(call.actor).sessions.list_user_sessions(call.params["username"], status=status,
                                                                     after=decode_cursor(call.query.cursor, int),
                                                                     limit=limit + 1)
        document = page(rows, limit, lambda row: row[0])
        return Reply.json({**document, "items": [view for _, view in document["items"]]})

    def terminate_sessions(self, call: Call) -> Reply:
        """Disconnect-Request for every open session; answers once each NAS answered or timed out."""
        items = self.services(call.actor).sessions.terminate_user(call.params["username"], "admin")
        return Reply.json({"items": items})

    # -- blocks and lockout settings -------------------------------------------------------------------

    def list_blocked(self, call: Call) -> Reply:
        limit = call.query.limit
        rows = self.services(call.actor).blocks.list_blocked(after=decode_cursor(call.query.cursor, str),
                                                             limit=limit + 1)
        return Reply.json(page(rows, limit, lambda row: row["username"]))

    def show_lockout(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).blocks.lockout_settings().model_dump())

    def replace_lockout(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).blocks.set_lockout_settings(call.body.model_dump()).model_dump())

    # -- SoftOTP --------------------------------------------------------------------------------------

    def list_softotp(self, call: Call) -> Reply:
        limit = call.query.limit
        rows = self.services(call.actor).otp.list(after=decode_cursor(call.query.cursor, str), limit=limit + 1)
        return Reply.json(page(rows, limit, lambda row: row["username"]))

    def enroll(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).otp.enroll(call.params["username"]), 201)

    def verify_enrolment(self, call: Call) -> Reply:
        service = self.services(call.actor).otp
        username = call.params["username"]
        valid = service.verify(username, call.body.otp)
        return Reply.json({"username": username, "valid": valid, "verified": service.show(username)["verified"]})

    def delete_enrolment(self, call: Call) -> Reply:
        self.services(call.actor).otp.reset(call.params["username"])
        return Reply.empty()

    def set_remote_config(self, call: Call) -> Reply:
        body: models.RemoteConfig = call.body
        return Reply.json(self.services(call.actor).otp.set_remote_config(
            call.params["username"], pin_required=body.pin_required, biometric_required=body.biometric_required))

    def set_remote_config_bulk(self, call: Call) -> Reply:
        body: models.BulkRemoteConfig = call.body
        items = self.services(call.actor).otp.set_remote_config_bulk(body.usernames, pin_required=body.pin_required,
                                                                     biometric_required=body.biometric_required)
        return Reply.json({"items": items})

    # -- API clients ------------------------------------------------------------------------------------

    def list_api_clients(self, call: Call) -> Reply:
        limit = call.query.limit
        rows = self.services(call.actor).api_clients.list(after=decode_cursor(call.query.cursor, str), limit=limit + 1)
        return Reply.json(page(rows, limit, lambda row: row["client_id"]))

    def create_api_client(self, call: Call) -> Reply:
        created = self.services(call.actor).api_clients.create(call.body.type, call.body.name)
        return Reply.json(created, 201, headers=(("Location", f"{PREFIX}/api-clients/{created['client_id']}"),))

    def show_api_client(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).api_clients.show(call.params["client_id"]))

    def revoke_api_client(self, call: Call) -> Reply:
        self.services(call.actor).api_clients.revoke(call.params["client_id"])
        return Reply.empty()

    def rotate_api_client_secret(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).api_clients.rotate_secret(call.params["client_id"]))

    # -- NAS devices --------------------------------------------------------------------------------------

    def list_nas(self, call: Call) -> Reply:
        limit = call.query.limit
        rows = self.services(call.actor).nas.list(after=decode_cursor(call.query.cursor, tuple), limit=limit + 1)
        return Reply.json(page(rows, limit, lambda row: list(list_key(row))))

    def create_nas(self, call: Call) -> Reply:
        body: models.NasCreate = call.body
        created = self.services(call.actor).nas.add(body.name, body.address, body.secret, mfa_mode=body.mfa_mode,
                                                    coa_port=body.coa_port,
                                                    require_message_authenticator=body.require_message_authenticator)
        self.nas_changed()
        return Reply.json(created, 201, headers=(("Location", f"{PREFIX}/nas/{quote(body.name, safe='')}"),))

    def show_nas(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).nas.show(call.params["name"]))

    def update_nas(self, call: Call) -> Reply:
        updated = self.services(call.actor).nas.update(call.params["name"], call.body.model_dump(exclude_unset=True))
        self.nas_changed()
        return Reply.json(updated)

    def delete_nas(self, call: Call) -> Reply:
        self.services(call.actor).nas.remove(call.params["name"])
        self.nas_changed()
        return Reply.empty()

    # -- audit ----------------------------------------------------------------------------------------------

    def list_audit_events(self, call: Call) -> Reply:
        query: models.AuditQuery = call.query
        rows = list_events(self.runtime.database, username=query.username, since=query.since, type=query.type,
                           before=decode_cursor(query.cursor, int), limit=query.limit + 1)
        return Reply.json(page(rows, query.limit, lambda row: row["id"]))

    # -- integrations: agents and user applications ------------------------------------------------------------

    def authenticate(self, call: Call) -> Reply:
        """``POST /auth``: one round of the RADIUS pipeline, for an agent acting as a NAS named
        ``api:NAME`` in challenge mode; challenge rounds carry the State base64-encoded."""
        body: models.AuthCheck = call.body
        state = None
        if body.state is not None:
            try:
                state = base64.b64decode(body.state, validate=True)
            except ValueError:  # binascii.Error, or not ASCII
                state = b""
            if not state:
                raise Invalid("state", "state must be the base64 text a challenge returned")
        now = self.clock()
        request = AuthRequest(nas=AUTH_NAS_PREFIX + call.principal.name, mfa_mode="challenge",
                              user_name=body.username, password=body.password.encode(), state=state,
                              auth_type="pap", nas_identifier=call.principal.name, received_at=now,
                              deadline=now + self.config.server.request_budget_seconds)
        return Await(lambda: self.authentication.decide(request).addCallback(self.auth_reply))

    def auth_reply(self, decision) -> Reply:
        """The Decision as the agent sees it (on the reactor; counted by ``Authentication``)."""
        if isinstance(decision, Abandoned):
            return Reply.problem(Problem(503, "overloaded", "the server is overloaded; try again",
                                         headers=(("Retry-After", "1"),)))
        if isinstance(decision, BackendFailure):
            return Reply.problem(Problem(503, "backend_error", "authentication could not be decided; try again"))
        if isinstance(decision, Accept):
            attributes = [{"name": name, "value": value} for name, value in decision.attributes]
            return Reply.json({"result": "accept", "attributes": attributes})
        if isinstance(decision, Challenge):
            return Reply.json({"result": "challenge", "state": base64.b64encode(decision.state).decode(),
                               "message": decision.prompt, "attributes": []})
        return Reply.json({"result": "reject", "attributes": []}, hold_seconds=self.reject_delay())

    def verify_otp(self, call: Call) -> Reply:
        """``POST /otp/verify``: a user's TOTP code, checked like a login's second factor."""
        body: models.OtpCheck = call.body
        result = self.services(call.actor).otp.check_user_code(body.username, body.otp,
                                                               self.services("lockout").blocks, client=call.actor)
        if result.reason is Reason.OTP_REPLAY:
            self.metrics.otp_replays.inc()
        if result.locked:
            self.metrics.lockouts.inc()
        return Reply.json({"valid": result.valid}, hold_seconds=0.0 if result.valid else self.reject_delay())

    def start_push(self, call: Call) -> Reply:
        """``POST /push``: ask the user's authenticator app to approve (user applications)."""
        body: models.PushStart = call.body
        user = find_user(self.runtime.database, body.username)
        if user is None:
            raise NotFound("user", body.username)
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        if user.status(now) != "active":
            raise Conflict("username", f"{body.username} may not log in now")
        device = self.services("api").devices.device_of(user.id)
        if device is None:
            raise Conflict("username", f"{body.username} has no activated authenticator app")
        created = self.services(call.actor).pushes.create(user.id, user.username, device_row=device, nas=call.actor,
                                                          description=body.description,
                                                          requested_by=call.principal.client_id)
        return Reply.json(created, 201, headers=(("Location", f"{PREFIX}/push/{created['push_id']}"),))

    def show_push(self, call: Call) -> Reply:
        shown = self.services(call.actor).pushes.show(call.params["push_id"], requested_by=call.principal.client_id)
        return Reply.json(shown)

    # -- the authenticator app (device routes) -------------------------------------------------------------------

    def mobile_activate(self, call: Call) -> Reply:
        """``POST /mobile/activate`` (no token): rate-limited per source address and per code."""
        body: models.MobileActivate = call.body
        limit(self.activations_by_address, call.raw.peer[0], "from this address")
        limit(self.activations_by_code, hashlib.sha256(body.activation_code.encode()).hexdigest(),
              "with this activation code")
        try:
            activated = self.services("mobile").devices.activate(
                body.activation_code, body.otp, device_name=body.device_name, platform=body.platform,
                blocks=self.services("lockout").blocks)
        except ActivationRefused as refused:
            if refused.locked:
                self.metrics.lockouts.inc()
            raise Problem(403, refused.code, refused.detail) from None
        return Reply.json(activated, 201)

    def mobile_config(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).devices.config(call.principal))

    def mobile_config_ack(self, call: Call) -> Reply:
        return Reply.json(self.services(call.actor).devices.acknowledge(call.principal, call.body.version))

    def mobile_pushes(self, call: Call) -> Reply | Poll:
        """``GET /mobile/push?wait=N``: the user's pending requests; with none and ``wait``,
        a long poll (the database is read every half second from the API pool)."""
        pushes, user_id = self.services(call.actor).pushes, call.principal.user_id
        found = pushes.pending_for(user_id)
        if found or not call.query.wait:
            return Reply.json({"items": found})

        def attempt() -> Reply | None:
            items = pushes.pending_for(user_id)
            return Reply.json({"items": items}) if items else None

        return Poll(attempt, DEVICE_POLL_SECONDS, within=call.query.wait, expired=Reply.json({"items": []}))

    def mobile_decide(self, call: Call) -> Reply:
        decided = self.services(call.actor).pushes.decide(call.params["push_id"], user_id=call.principal.user_id,
                                                          approve=call.body.decision == "approve")
        return Reply.json(decided)


def limit(bucket: TokenBucket, key: str, what: str) -> None:
    """429 with Retry-After when ``bucket`` has no token left for ``key``."""
    wait = bucket.take(key)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        raise Problem(429, "rate_limited", f"too many attempts {what}; retry in {seconds} s",
                      headers=(("Retry-After", str(seconds)),))


def build_routes(handlers: Handlers) -> list[Route]:
    """The whole API: method, template, handler, who may call it, what it reads."""
    h, m, p = handlers, models, PREFIX
    user, client, nas = f"{p}/users/{{username}}", f"{p}/api-clients/{{client_id}}", f"{p}/nas/{{name}}"
    return [
        Route("POST", "/oauth/token", h.token, PUBLIC, raw=True),
        Route("GET", f"{p}/openapi.json", h.openapi, PUBLIC),
        Route("GET", f"{p}/users", h.list_users, ADMIN, query=m.UserQuery),
        Route("POST", f"{p}/users", h.create_user, ADMIN, body=m.UserCreate),
        *bulk_routes(h.bulk, f"{p}/users"),
        Route("GET", user, h.show_user, ADMIN),
        Route("PATCH", user, h.update_user, ADMIN, body=m.UserUpdate),
        Route("DELETE", user, h.delete_user, ADMIN),
        Route("POST", f"{user}/password", h.set_password, ADMIN, body=m.PasswordChange),
        Route("POST", f"{user}/enable", h.enable_user, ADMIN),
        Route("POST", f"{user}/disable", h.disable_user, ADMIN),
        Route("POST", f"{user}/block", h.block_user, ADMIN, body=m.BlockRequest),
        Route("DELETE", f"{user}/block", h.unblock_user, ADMIN),
        Route("GET", f"{user}/sessions", h.list_sessions, ADMIN, query=m.SessionQuery),
        Route("DELETE", f"{user}/sessions", h.terminate_sessions, ADMIN),
        Route("GET", f"{p}/blocked", h.list_blocked, ADMIN, query=m.Page),
        Route("DELETE", f"{p}/blocked/{{username}}", h.unblock_user, ADMIN),
        Route("GET", f"{p}/settings/lockout", h.show_lockout, ADMIN),
        Route("PUT", f"{p}/settings/lockout", h.replace_lockout, ADMIN, body=m.LockoutSettings),
        Route("GET", f"{p}/softotp", h.list_softotp, ADMIN, query=m.Page),
        Route("POST", f"{p}/softotp/{{username}}/enroll", h.enroll, ADMIN),
        Route("POST", f"{p}/softotp/{{username}}/verify", h.verify_enrolment, ADMIN, body=m.OtpCode),
        Route("DELETE", f"{p}/softotp/{{username}}", h.delete_enrolment, ADMIN),
        Route("PUT", f"{p}/softotp/{{username}}/remote-config", h.set_remote_config, ADMIN, body=m.RemoteConfig),
        Route("POST", f"{p}/softotp/remote-config", h.set_remote_config_bulk, ADMIN, body=m.BulkRemoteConfig),
        Route("GET", f"{p}/api-clients", h.list_api_clients, ADMIN, query=m.Page),
        Route("POST", f"{p}/api-clients", h.create_api_client, ADMIN, body=m.ApiClientCreate),
        Route("GET", client, h.show_api_client, ADMIN),
        Route("DELETE", client, h.revoke_api_client, ADMIN),
        Route("POST", f"{client}/rotate-secret", h.rotate_api_client_secret, ADMIN),
        Route("GET", f"{p}/nas", h.list_nas, ADMIN, query=m.Page),
        Route("POST", f"{p}/nas", h.create_nas, ADMIN, body=m.NasCreate),
        Route("GET", nas, h.show_nas, ADMIN),
        Route("PATCH", nas, h.update_nas, ADMIN, body=m.NasUpdate),
        Route("DELETE", nas, h.delete_nas, ADMIN),
        Route("GET", f"{p}/audit-events", h.list_audit_events, ADMIN, query=m.AuditQuery),
        Route("POST", f"{p}/auth", h.authenticate, AGENT, body=m.AuthCheck),
        Route("POST", f"{p}/otp/verify", h.verify_otp, USER, body=m.OtpCheck),
        Route("POST", f"{p}/push", h.start_push, USER, body=m.PushStart),
        Route("GET", f"{p}/push/{{push_id}}", h.show_push, USER),
        Route("POST", f"{p}/mobile/activate", h.mobile_activate, PUBLIC, body=m.MobileActivate),
        Route("GET", f"{p}/mobile/config", h.mobile_config, DEVICE),
        Route("POST", f"{p}/mobile/config/ack", h.mobile_config_ack, DEVICE, body=m.ConfigAck),
        Route("GET", f"{p}/mobile/push", h.mobile_pushes, DEVICE, query=m.PushWait),
        Route("POST", f"{p}/mobile/push/{{push_id}}", h.mobile_decide, DEVICE, body=m.PushDecision),
    ]
