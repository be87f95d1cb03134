"""Whether each NAS's Access-Requests carry Message-Authenticator, for ``radiusd-admin nas list``.

Old NAS software (Debian's pam_radius_auth 2.0, for one) sends none, and a NAS entry that
requires one (the default) then drops every request. The auth port notes per NAS name when a
request last came with and without one: a dict store per packet, nothing more. Every
``FLUSH_SECONDS`` (and at shutdown) the server writes what it noted into one row of the
``settings`` table, merged with what other processes and instances wrote (the newest time
wins), so ``radiusd-admin``, a process of its own, reads it from the database. It is an
observation, not state that decides anything: a flush lost to a crash costs a minute of it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import insert, select, update

from radiusd.db.engine import Database
from radiusd.db.tables import settings, utcnow

SETTING = "nas_message_authenticator"
FLUSH_SECONDS = 60
FIELDS = {True: "with_at", False: "without_at"}  # carried one → the stored key


class MessageAuthenticatorSightings:
    """Noted on the reactor thread; taken (and emptied) there too, then stored in a thread."""

    def __init__(self):
        self._last: dict[tuple[str, bool], float] = {}

    def note(self, nas: str, carried: bool, now: float) -> None:
        self._last[nas, carried] = now

    def take(self) -> dict[tuple[str, bool], float]:
        taken, self._last = self._last, {}
        return taken


def store(database: Database, taken: dict[tuple[str, bool], float]) -> None:
    """Merge ``taken`` into the stored row (one write transaction; the row locked meanwhile)."""
    if not taken:
        return
    with database.writer.begin() as conn:
        stored = conn.execute(select(settings.c.value).where(settings.c.name == SETTING)
                              .with_for_update()).scalar()
        merged = {name: dict(times) for name, times in (stored or {}).items()}
        for (nas, carried), seconds in taken.items():
            moment = datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")
            times = merged.setdefault(nas, {})
            times[FIELDS[carried]] = max(times.get(FIELDS[carried], ""), moment)
        if stored is None:
            conn.execute(insert(settings).values(name=SETTING, value=merged, updated_at=utcnow()))
        else:
            conn.execute(update(settings).where(settings.c.name == SETTING).values(value=merged, updated_at=utcnow()))


def message_authenticator_seen(database: Database) -> dict[str, dict]:
    """Per NAS name: ``message_authenticator`` ("yes" when its latest Access-Request carried
    one, else "no"), ``with_at`` and ``without_at`` (the last times, ISO 8601 UTC, or None)."""
    with database.engine.connect() as conn:
        stored = conn.execute(select(settings.c.value).where(settings.c.name == SETTING)).scalar() or {}
    seen = {}
    for nas, times in stored.items():
        with_at, without_at = times.get("with_at"), times.get("without_at")
        seen[nas] = {"message_authenticator": "yes" if (with_at or "") > (without_at or "") else "no",
                     "with_at": with_at, "without_at": without_at}
    return seen
