"""API clients of the admin API (SPEC §5): OAuth 2.0 client credentials and Bearer tokens.

A client has a type (``admin``, ``agent`` or ``user``) that is also the scope of its tokens.
Client secrets and access tokens are 256-bit random strings; only their keyed digests
(``SeedKey.digest``, HMAC-SHA256) are stored, so the database alone lets nobody authenticate.
A secret is returned once, by ``create`` and ``rotate_secret``. Rotating the secret or
revoking the client ends every token issued to it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from radiusd.crypto import SeedKey
from radiusd.db.engine import Database
from radiusd.db.tables import api_clients, api_tokens
from radiusd.services import Clocked, Conflict, Invalid, NotFound, check_name
from radiusd.services.audit import record_event

CLIENT_TYPES = ("admin", "agent", "user")
CLIENT_ID_PREFIX = "rc_"
SECRET_BYTES = 32
TOKEN_BYTES = 32
MAX_NAME_LENGTH = 60  # "api:" + name must fit the 64 characters of a NAS name
MAX_CREDENTIAL_LENGTH = 256
SECRET_PURPOSE = "api-client-secret"
TOKEN_PURPOSE = "api-access-token"
FIRST_ADMIN_NAME = "admin"


@dataclass(frozen=True, slots=True)
class ApiPrincipal:
    """Who a valid Bearer token speaks for."""

    client_id: str
    name: str
    type: str

    @property
    def actor(self) -> str:
        """How audit events and the pipeline name this client."""
        return f"api:{self.name}"


def check_client_name(name: str) -> str:
    return check_name((name or "").strip(), "name", MAX_NAME_LENGTH)


def check_type(client_type: str) -> str:
    if client_type not in CLIENT_TYPES:
        raise Invalid("type", f"type must be one of {', '.join(CLIENT_TYPES)}")
    return client_type


def _view(row) -> dict:
    return {"client_id": row.client_id, "name": row.name, "type": row.type, "created_at": row.created_at,
            "secret_rotated_at": row.secret_rotated_at, "last_token_at": row.last_token_at}


class ApiClientService(Clocked):
    def __init__(self, database: Database, seed_key: SeedKey, clock: Callable[[], float],
                 token_ttl_seconds: int = 3600, actor: str = "cli"):
        self.database = database
        self.seed_key = seed_key
        self.clock = clock
        self.token_ttl_seconds = token_ttl_seconds
        self.actor = actor


    def _digest(self, value: str, purpose: str) -> str:
        return self.seed_key.digest(value.encode(), purpose)

    def _audit(self, action: str, **detail) -> None:
        record_event(self.database, "admin", result="ok", reason=action, actor=self.actor, detail=detail)

    # -- administration ------------------------------------------------------------------------

    def create(self, client_type: str, name: str) -> dict:
        """A new client; the returned ``client_secret`` is the only copy there will be."""
        check_type(client_type)
        name = check_client_name(name)
        try:
            with self.database.writer.begin() as conn:
                created = self._insert(conn, client_type, name)
        except IntegrityError:
            raise Conflict("name", f"an API client named {name} already exists") from None
        self._audit("api_client.create", client_id=created["client_id"], type=client_type, name=name)
        return created

    def _insert(self, conn, client_type: str, name: str) -> dict:
        client_id = CLIENT_ID_PREFIX + secrets.token_hex(10)
        secret = secrets.token_urlsafe(SECRET_BYTES)
        now = self.now()
        conn.execute(insert(api_clients).values(
            client_id=client_id, name=name, type=client_type, secret_hash=self._digest(secret, SECRET_PURPOSE),
            created_at=now, secret_rotated_at=now, created_by=self.actor[:128]))
        return {"client_id": client_id, "client_secret": secret, "name": name, "type": client_type,
                "created_at": now}

    def ensure_admin(self) -> dict | None:
        """Create the first admin client when there is none; None when one exists already."""
        with self.database.writer.begin() as conn:
            if conn.execute(select(func.count()).select_from(api_clients)
                            .where(api_clients.c.type == "admin")).scalar():
                return None
            taken = conn.execute(select(api_clients.c.id).where(api_clients.c.name == FIRST_ADMIN_NAME)).first()
            name = FIRST_ADMIN_NAME if taken is None else f"{FIRST_ADMIN_NAME}-{secrets.token_hex(3)}"
            created = self._insert(conn, "admin", name)
        self._audit("api_client.create", client_id=created["client_id"], type="admin", name=name)
        return created

    def show(self, client_id: str) -> dict:
        with self.database.engine.connect() as conn:
            row = conn.execute(select(api_clients).where(api_clients.c.client_id == client_id)).first()
        if row is None:
            raise NotFound("API client", client_id)
        return _view(row)

    def list(self, *, after: str | None = None, limit: int | None = None) -> list[dict]:
        """Clients ordered by client id, those after ``after``; never a secret."""
        query = select(api_clients).order_by(api_clients.c.client_id)
        if after is not None:
            query = query.where(api_clients.c.client_id > after)
        if limit is not None:
            query = query.limit(limit)
        with self.database.engine.connect() as conn:
            return [_view(row) for row in conn.execute(query).all()]

    def revoke(self, client_id: str) -> None:
        """Delete the client and, in the same transaction, every token it holds."""
        with self.database.writer.begin() as conn:
            row = conn.execute(select(api_clients.c.id).where(api_clients.c.client_id == client_id)).first()
            if row is None:
                raise NotFound("API client", client_id)
            conn.execute(delete(api_tokens).where(api_tokens.c.client_id == row.id))
            conn.execute(delete(api_clients).where(api_clients.c.id == row.id))
        self._audit("api_client.revoke", client_id=client_id)

    def rotate_secret(self, client_id: str) -> dict:
        """A new secret (returned once); the old one and every token issued stop working."""
        secret = secrets.token_urlsafe(SECRET_BYTES)
        now = self.now()
        with self.database.writer.begin() as conn:
            row = conn.execute(select(api_clients.c.id).where(api_clients.c.client_id == client_id)).first()
            if row is None:
                raise NotFound("API client", client_id)
            conn.execute(update(api_clients).where(api_clients.c.id == row.id).values(
                secret_hash=self._digest(secret, SECRET_PURPOSE), secret_rotated_at=now))
            conn.execute(delete(api_tokens).where(api_tokens.c.client_id == row.id))
        self._audit("api_client.rotate_secret", client_id=client_id)
        return {"client_id": client_id, "client_secret": secret}

    # -- OAuth 2.0 -------------------------------------------------------------------------------

    def issue_token(self, client_id: str, client_secret: str, scope: str | None = None) -> dict | None:
        """RFC 6749 §4.4: a Bearer token for valid client credentials, else None.

        Unknown client and wrong secret take the same path (a digest and a constant-time
        compare against a stand-in), so neither the answer nor its timing tells them apart.
        A requested ``scope`` other than the client's type is ``Invalid``.
        """
        if len(client_id) > MAX_CREDENTIAL_LENGTH or len(client_secret) > MAX_CREDENTIAL_LENGTH:
            client_id, client_secret = "", ""
        with self.database.engine.connect() as conn:
            row = conn.execute(select(api_clients.c.id, api_clients.c.type, api_clients.c.secret_hash)
                               .where(api_clients.c.client_id == client_id)).first()
        presented = self._digest(client_secret, SECRET_PURPOSE)
        expected = row.secret_hash if row is not None else self._digest(secrets.token_urlsafe(16), SECRET_PURPOSE)
        if not (hmac.compare_digest(presented, expected) and row is not None and client_secret):
            record_event(self.database, "api_token", client=client_id or None, result="reject",
                         reason="invalid_client", actor="oauth")
            return None
        if scope is not None and scope.split() != [row.type]:
            raise Invalid("scope", f"this client may only request scope {row.type}")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self.now()
        with self.database.writer.begin() as conn:
            conn.execute(delete(api_tokens).where(api_tokens.c.expires_at <= now))
            conn.execute(insert(api_tokens).values(
                token_hash=self._digest(token, TOKEN_PURPOSE), client_id=row.id, issued_at=now,
                expires_at=now + timedelta(seconds=self.token_ttl_seconds)))
            conn.execute(update(api_clients).where(api_clients.c.id == row.id).values(last_token_at=now))
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl_seconds,
                "scope": row.type}

    def authenticate(self, token: str) -> ApiPrincipal | None:
        """The client a live token was issued to; None for unknown, expired or revoked ones."""
        if not token or len(token) > MAX_CREDENTIAL_LENGTH:
            return None
        digest = self._digest(token, TOKEN_PURPOSE)
        query = (select(api_tokens.c.token_hash, api_clients.c.client_id, api_clients.c.name, api_clients.c.type)
                 .join(api_clients, api_clients.c.id == api_tokens.c.client_id)
                 .where(api_tokens.c.token_hash == digest, api_tokens.c.expires_at > self.now()))
        with self.database.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        return ApiPrincipal(row.client_id, row.name, row.type)
