"""SMS gateways (issue 3): the file spool, and the HTTP gateway against a real HTTP server on
127.0.0.1 (success, error status, a server that never answers, nothing listening); phone numbers.
The sms_otp plugin and its [sms] section are tests/plugins/test_sms_otp.py."""

from __future__ import annotations

import json
import re
import socket
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlparse

import pytest
from pydantic import ValidationError

from radiusd.config import Config
from radiusd.db import migrate
from radiusd.db.engine import Database
from radiusd.errors import BackendError
from radiusd.plugins.sms_otp import SmsSection
from radiusd.services import Invalid
from radiusd.services.factory import Resources, Services
from radiusd.services.users import normalise_phone
from radiusd.sms import FileGateway, HttpGateway, make_gateway
from tests.fakes import Provider
from tests.support import free_port

PHONE = "+905554443322"
MESSAGE = 'Your "radiusd" code is 123456\\ok\n\u00e7'  # quotes, backslash, newline, non-ASCII


@pytest.fixture
def provider():
    stand_in = Provider()
    yield stand_in
    stand_in.close()


def http_settings(url: str, **overrides) -> SmsSection:
    return SmsSection(gateway="http", url=url, timeout_seconds=1, **overrides)


# -- file gateway ----------------------------------------------------------------------------------

def test_file_gateway_appends_one_line_per_message_with_utc_time_phone_and_message(tmp_path):
    spool = tmp_path / "sms.spool"
    gateway = make_gateway(SmsSection(spool_path=str(spool)))
    assert isinstance(gateway, FileGateway)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    gateway.send(PHONE, "Your radiusd code is 123456")
    gateway.send("+14155550100", "Your radiusd code is 000042")
    after = datetime.now(timezone.utc)
    lines = spool.read_text().splitlines()
    assert len(lines) == 2
    pattern = re.compile(r"^(\S+) (\+[1-9]\d{7,14}) (.*)$")
    when, phone, message = pattern.match(lines[0]).groups()
    moment = datetime.fromisoformat(when)
    assert moment.utcoffset() == timedelta(0)
    assert before <= moment <= after
    assert (phone, message) == (PHONE, "Your radiusd code is 123456")
    assert pattern.match(lines[1]).groups()[1:] == ("+14155550100", "Your radiusd code is 000042")
    assert spool.stat().st_mode & 0o077 == 0  # codes are secrets: owner-only spool


def test_file_gateway_failure_is_a_backend_error(tmp_path):
    gateway = FileGateway(SmsSection(spool_path=str(tmp_path / "missing-dir" / "sms.spool")))
    with pytest.raises(BackendError) as caught:
        gateway.send(PHONE, "Your radiusd code is 123456")
    assert caught.value.backend == "sms"
    assert "123456" not in str(caught.value)


# -- http gateway ----------------------------------------------------------------------------------

def test_http_gateway_posts_escaped_json_with_configured_headers(provider, monkeypatch):
    monkeypatch.setenv("RADIUSD_TEST_SMS_TOKEN", "Bearer t0ken")
    settings = http_settings(provider.url + "/v1/send?to={phone}",
                             headers={"Authorization": {"env": "RADIUSD_TEST_SMS_TOKEN"}, "X-Api-Key": "k-1"})
    gateway = make_gateway(settings)
    assert isinstance(gateway, HttpGateway)
    gateway.send(PHONE, MESSAGE)
    [request] = provider.requests
    assert request["method"] == "POST"
    url = urlparse(request["path"])
    assert url.path == "/v1/send"
    assert parse_qs(url.query) == {"to": [PHONE]}  # "+" is percent-encoded in the URL
    assert "%2B90" in url.query
    assert request["headers"]["Authorization"] == "Bearer t0ken"
    assert request["headers"]["X-Api-Key"] == "k-1"
    assert request["headers"]["Content-Type"] == "application/json"
    assert json.loads(request["body"]) == {"to": PHONE, "text": MESSAGE}


def test_http_gateway_form_body_and_get(provider):
    form = http_settings(provider.url + "/send", method="PUT", content_type="application/x-www-form-urlencoded",
                         body="to={phone}&text={message}")
    HttpGateway(form).send(PHONE, "a&b=c d")
    get = http_settings(provider.url + "/send?to={phone}&text={message}", method="GET")
    HttpGateway(get).send(PHONE, "a&b=c d")
    put, got = provider.requests
    assert put["method"] == "PUT"
    assert parse_qs(put["body"].decode()) == {"to": [PHONE], "text": ["a&b=c d"]}
    assert got["method"] == "GET" and got["body"] == b""
    assert parse_qs(urlparse(got["path"]).query) == {"to": [PHONE], "text": ["a&b=c d"]}


@pytest.mark.parametrize("status", [500, 503, 400, 401, 302])
def test_http_gateway_error_status_is_a_backend_error(provider, status):
    provider.status = status
    with pytest.raises(BackendError) as caught:
        HttpGateway(http_settings(provider.url + "/send")).send(PHONE, "Your radiusd code is 654321")
    assert caught.value.backend == "sms"
    assert "654321" not in str(caught.value)
    assert len(provider.requests) == 1


def test_http_gateway_success_statuses_are_configurable(provider):
    provider.status = 201
    with pytest.raises(BackendError):
        HttpGateway(http_settings(provider.url + "/send", success_statuses=[200])).send(PHONE, "code 123456")
    HttpGateway(http_settings(provider.url + "/send", success_statuses=[201])).send(PHONE, "code 123456")


def test_http_gateway_that_never_answers_fails_within_the_timeout(provider):
    provider.status = None  # accepts, reads the request, never answers
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        HttpGateway(http_settings(provider.url + "/send")).send(PHONE, "Your radiusd code is 123456")
    elapsed = time.monotonic() - started
    assert caught.value.backend == "sms"
    assert 0.8 <= elapsed < 3.0
    assert len(provider.requests) == 1


def test_http_gateway_whose_peer_accepts_and_never_reads_fails_within_the_timeout():
    with socket.socket() as listener:  # the kernel completes the handshake; nobody ever reads
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(BackendError) as caught:
            HttpGateway(http_settings(f"http://127.0.0.1:{port}/send")).send(PHONE, "code 123456")
        assert time.monotonic() - started < 3.0
    assert caught.value.backend == "sms"


def test_http_gateway_connection_refused_is_a_backend_error():
    port = free_port(socket.SOCK_STREAM)  # nothing listens there
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        HttpGateway(http_settings(f"http://127.0.0.1:{port}/send")).send(PHONE, "code 123456")
    assert caught.value.backend == "sms"
    assert time.monotonic() - started < 3.0


# -- phone numbers ---------------------------------------------------------------------

@pytest.mark.parametrize("given,region,stored", [
    ("05554443322", "TR", "+905554443322"),
    ("+905554443322", "TR", "+905554443322"),
    ("0555 444 33 22", "TR", "+905554443322"),
    ("00905554443322", "TR", "+905554443322"),
    ("+1 (415) 555-0100", "TR", "+14155550100"),
    ("030 901820", "DE", "+4930901820"),
    ("(202) 555-0123", "US", "+12025550123"),
    ("+905554443322", "US", "+905554443322"),
    ("", "TR", ""),
])
def test_phone_numbers_are_stored_as_e164_in_the_configured_region(given, region, stored):
    assert normalise_phone(given, region) == stored


@pytest.mark.parametrize("given,reason", [
    ("0555444332", "TR"), ("055544433221", "TR"), ("+0555444332", "numbers after plus-sign"),
    ("phone", "did not seem to be a phone number"), ("+90 555 x", "too short"), ("12", "too short"),
])
def test_invalid_phone_numbers_are_refused_with_the_librarys_reason(given, reason):
    with pytest.raises(ValueError, match=reason):
        normalise_phone(given, "TR")


def test_the_default_region_comes_from_the_sms_section(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'phones.db'}")
    migrate.upgrade(database)
    try:
        services = Services(Resources(Config.model_validate({"sms": {"default_region": "de"}}), database), "cli")
        assert services.users.create("hans", {"phone": "030 901820"}, password="Correct-Horse-7731")["phone"] \
            == "+4930901820"
        with pytest.raises(Invalid, match="phone"):
            services.users.update("hans", {"phone": "12"})
    finally:
        database.dispose()
    with pytest.raises(ValidationError, match="not a region"):
        Config.model_validate({"sms": {"default_region": "XX"}})
