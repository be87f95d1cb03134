"""radiusd.logs: JSON lines with FreeRADIUS-style auth lines, and no secret ever logged."""

from __future__ import annotations

import io
import json

import psycopg
from sqlalchemy import select
from sqlalchemy.engine import make_url
from twisted.logger import Logger, LogLevel, LogPublisher, formatEvent
from twisted.python.failure import Failure

from radiusd.db.engine import Database
from radiusd.db.tables import audit_events
from radiusd.logs import FailureLog, Throttle, make_observer, to_json_line
from tests.fakes import Clock
from tests.support import PG_ADMIN_URL, SECRET, admin

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


# -- quiet logs under failure (issue 13) ------------------------------------------------------------

def fail(error: Exception) -> Failure:
    try:
        raise error
    except Exception:
        return Failure()


def test_failure_log_writes_one_traceback_per_type_per_interval_and_a_line_for_every_failure():
    events, clock = [], Clock(1000.0)
    failures = FailureLog(Logger(namespace="test", observer=events.append), interval_seconds=60, clock=clock)
    for _ in range(100):
        failures.failure("request failed in {backend}", fail(ConnectionError("db down")), backend="db")
        clock.now += 0.1
    failures.failure("request failed in {backend}", fail(KeyError("x")), backend="plugin")  # another type
    assert len(events) == 101
    assert [formatEvent(event) for event in events[:2]] == [
        "request failed in db: ConnectionError (traceback; 0 of this type left out since the last)",
        "request failed in db: ConnectionError"]
    with_traceback = [event for event in events if "log_failure" in event]
    assert [type(event["log_failure"].value) for event in with_traceback] == [ConnectionError, KeyError]
    assert all(event["error"] in ("ConnectionError", "KeyError") for event in events)
    assert {event["log_level"] for event in events} == {LogLevel.critical, LogLevel.error}

    clock.now += 50  # a minute after the first traceback: the next one, with the count left out
    failures.failure("request failed in {backend}", fail(ConnectionError("still down")), backend="db")
    assert "log_failure" in events[-1] and events[-1]["tracebacks_left_out"] == 99
    failures.failure("request failed in {backend}", fail(ConnectionError("still down")), backend="db")
    assert "log_failure" not in events[-1]


def test_failure_log_takes_the_current_exception_and_tells_types_of_the_same_name_apart():
    events, clock = [], Clock(1000.0)
    failures = FailureLog(Logger(namespace="test", observer=events.append), clock=clock)
    other = type("ConnectionError", (Exception,), {})  # same name, another module's class
    for error in (ConnectionError(), other(), ConnectionError(), other()):
        try:
            raise error
        except Exception:
            failures.failure("unexpected error")
    assert ["log_failure" in event for event in events] == [True, True, False, False]
    assert all(formatEvent(event).startswith("unexpected error: ConnectionError") for event in events)


def test_a_thousand_failing_requests_write_a_handful_of_tracebacks(postgres_url, make_server, radius_client):
    server = make_server(postgres_url, sections={"server": {"on_backend_error": "reject"}})
    client = radius_client(server.auth_port)
    _, reply = client.send(client.access_request("nobody", PASSWORD))
    assert reply.code == 3
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:  # the database goes away
        conn.execute(f'DROP DATABASE "{make_url(postgres_url).database}" WITH (FORCE)')
    for index in range(1000):
        _, reply = client.send(client.access_request(f"user{index}", PASSWORD))
        assert reply.code == 3  # on_backend_error = "reject": every failure is answered
    assert server.stop() == 0

    records = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    failed = [record for record in records if record["message"].startswith("pipeline failed in backend db: ")]
    assert len(failed) == 1000
    assert all(record["error"] == "OperationalError" for record in failed)
    tracebacks = [record for record in records if "traceback" in record]
    assert 1 <= len(tracebacks) <= 5, [record["message"] for record in tracebacks]
    assert len(server.log()) < 1000 * 400  # about a line per request, not 4 KB each


def test_throttle_lets_the_first_through_then_one_a_minute_per_key_with_the_count_held_back():
    clock = Clock(1000.0)
    throttle = Throttle(interval_seconds=60, clock=clock)
    assert throttle.admit(("192.0.2.1", "bad_authenticator")) == 0
    held = [throttle.admit(("192.0.2.1", "bad_authenticator")) for _ in range(5)]
    assert held == [None] * 5
    assert throttle.admit(("192.0.2.1", "unknown_client")) == 0  # another key is apart
    clock.now += 59.9
    assert throttle.admit(("192.0.2.1", "bad_authenticator")) is None
    clock.now += 0.1
    assert throttle.admit(("192.0.2.1", "bad_authenticator")) == 6
    assert throttle.admit(("192.0.2.1", "bad_authenticator")) is None


def test_throttle_bounds_its_keys_under_a_flood_of_sources():
    clock = Clock(1000.0)
    throttle = Throttle(interval_seconds=60, clock=clock, max_keys=3)
    assert [throttle.admit(source) for source in ("a", "b", "c")] == [0, 0, 0]
    assert throttle.admit("d") == 0  # the first key past the bound: the shared overflow key
    assert [throttle.admit(source) for source in ("e", "f")] == [None, None]
    assert len(throttle._shown_at) == 4
    clock.now += 60  # their minute has passed: old keys are forgotten for new ones
    assert throttle.admit("g") == 0
    assert "a" not in throttle._shown_at and len(throttle._shown_at) == 1
