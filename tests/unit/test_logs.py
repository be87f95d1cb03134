"""radiusd.logs: JSON lines with FreeRADIUS-style auth lines, and no secret ever logged."""

from __future__ import annotations

import io
import json

from sqlalchemy import select
from twisted.logger import Logger, LogPublisher

from radiusd.db.engine import Database
from radiusd.db.tables import audit_events
from radiusd.logs import make_observer, to_json_line
from tests.support import SECRET, admin

PASSWORD = "Correct-Horse-7731"
WRONG_PASSWORD = "Wrong-Battery-4410"


def test_event_renders_as_one_json_object_with_its_fields():
    line = to_json_line({"log_format": "Login OK: [{user}]", "user": "alice", "log_namespace": "radiusd.auth",
                         "log_time": 0, "port": 3, "obj": object()})
    record = json.loads(line)
    assert "\n" not in line
    assert record["message"] == "Login OK: [alice]"
    assert record["logger"] == "radiusd.auth"
    assert record["user"] == "alice" and record["port"] == 3
    assert record["time"].startswith("1970-01-01T00:00:00")
    assert isinstance(record["obj"], str)


def test_observer_filters_below_the_configured_level():
    stream = io.StringIO()
    publisher = LogPublisher(make_observer(stream, "json", "warn"))
    log = Logger(namespace="test", observer=publisher)
    log.info("quiet {n}", n=1)
    log.warn("loud {n}", n=2)
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["loud 2"]


def test_text_format_is_one_plain_line():
    stream = io.StringIO()
    publisher = LogPublisher(make_observer(stream, "text", "info"))
    Logger(namespace="radiusd.auth", observer=publisher).info("Login OK: [{user}]", user="bob")
    assert stream.getvalue().endswith("[radiusd.auth] Login OK: [bob]\n")


def test_auth_lines_are_logged_as_json_and_no_secret_ever_is(make_server, radius_client):
    server = make_server()
    admin(server.config_path, "user", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
    client = radius_client(server.auth_port)

    _, accept = client.send(client.access_request("alice", PASSWORD, Calling_Station_Id="02-00-00-00-00-01"))
    assert accept.code == 2
    _, reject = client.send(client.access_request("alice", WRONG_PASSWORD))
    assert reject.code == 3
    _, status = client.send(client.status_server())
    assert status.code == 2
    assert server.stop() == 0

    text = server.log()
    records = [json.loads(line) for line in text.splitlines() if line.strip()]  # every line is JSON
    messages = [record["message"] for record in records]
    assert any(message.startswith("Login OK: [alice] (from client test port 0 cli 02-00-00-00-00-01)")
               for message in messages), messages
    assert any(message.startswith("Login incorrect") and "[alice]" in message for message in messages), messages

    seed_key = (server.config_path.parent / "seed.key").read_text().strip()
    for secret in (PASSWORD, WRONG_PASSWORD, SECRET.decode(), seed_key, seed_key[:16]):
        assert secret not in text, f"{secret!r} appears in the server log"

    database = Database(server.settings["database"]["url"])
    try:
        with database.engine.connect() as conn:
            rows = conn.execute(select(audit_events).where(audit_events.c.type == "auth")
                                .order_by(audit_events.c.id)).all()
    finally:
        database.dispose()
    assert [(row.username, row.client, row.result, row.reason) for row in rows] == [
        ("alice", "test", "accept", "ok"), ("alice", "test", "reject", "bad_password")]
    for row in rows:
        assert PASSWORD not in json.dumps(row.detail) and WRONG_PASSWORD not in json.dumps(row.detail)
