"""Admin API fixtures: a real ``radiusd serve`` per module and an admin token (the HTTP client
and the helpers are in tests/support.py)."""

from __future__ import annotations

import pytest

from tests.support import Api, start_api_server


@pytest.fixture(scope="module")
def api_server(tmp_path_factory):
    """One server for the module (tests use distinct usernames and clients)."""
    started = start_api_server(tmp_path_factory.mktemp("api"))
    yield started
    started.server.stop()


@pytest.fixture(scope="module")
def admin_api(api_server) -> Api:
    return api_server.admin_api()
