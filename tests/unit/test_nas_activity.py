"""radiusd.nas_activity: Message-Authenticator sightings, merged into the database by every
process and read back by ``radiusd-admin`` (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timezone

from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.nas_activity import MessageAuthenticatorSightings, message_authenticator_seen, store

T0 = datetime(2031, 5, 1, 12, 0, tzinfo=timezone.utc).timestamp()


def test_sightings_of_several_processes_merge_and_the_newest_decides(database_url):
    database = Database(database_url)
    migrate.upgrade(database)
    try:
        assert message_authenticator_seen(database) == {}
        first, second = MessageAuthenticatorSightings(), MessageAuthenticatorSightings()
        first.note("vpn", True, T0)
        first.note("pam-host", False, T0)
        store(database, first.take())
        second.note("vpn", False, T0 - 60)  # another process saw an older request without one
        second.note("pam-host", True, T0 + 60)
        store(database, second.take())
        store(database, first.take())  # nothing new: no write

        seen = message_authenticator_seen(database)
        assert seen["vpn"] == {"message_authenticator": "yes", "with_at": "2031-05-01T12:00:00+00:00",
                               "without_at": "2031-05-01T11:59:00+00:00"}
        assert seen["pam-host"]["message_authenticator"] == "yes"
        first.note("vpn", False, T0 + 120)
        store(database, first.take())
        assert message_authenticator_seen(database)["vpn"]["message_authenticator"] == "no"
        first.note("vpn", True, T0 - 600)  # a late flush of an older sighting never goes back in time
        store(database, first.take())
        assert message_authenticator_seen(database)["vpn"]["with_at"] == "2031-05-01T12:00:00+00:00"
    finally:
        database.dispose()
