"""Property-based conformance: schemathesis generates requests from the OpenAPI document and
sends them to a live server (its own: the run changes settings and makes objects). No 5xx,
and no status, content type, header or body outside the document."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from radiusd.admin_api import openapi_document
from tests.support import start_api_server

EXAMPLES_PER_OPERATION = 25
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance,
          checks.negative_data_rejection]
# The CSV import's body is text: whatever schemathesis sends as a "wrongly typed" body ({} or 5)
# arrives as the text of a one-cell CSV file, which the dry run rightly answers with its report.
TEXT_BODY_CHECKS = [check for check in CHECKS if check is not checks.negative_data_rejection]
TEXT_BODY_OPERATIONS = {("POST", "/api/v1/users/import")}


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory):
    started = start_api_server(tmp_path_factory.mktemp("fuzz"))
    admin_api = started.admin_api()
    tokens = {"admin": admin_api.token}
    for client_type in ("agent", "user"):
        tokens[client_type] = started.client_of_type(client_type, f"fuzz-{client_type}")[1].token
    yield started, tokens
    started.server.stop()


schema = schemathesis.openapi.from_dict(openapi_document())  # the file; the server is given per call
SCOPE_OF = {"/api/v1/auth": "agent", "/api/v1/otp/verify": "user", "/api/v1/push": "user",
            "/api/v1/push/{push_id}": "user"}  # device routes get an admin token: 403 (documented)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, fuzzed_server):
    server, tokens = fuzzed_server
    headers = {}
    if case.path != "/oauth/token":
        headers["Authorization"] = f"Bearer {tokens[SCOPE_OF.get(case.path, 'admin')]}"
    text_body = (case.method.upper(), case.path) in TEXT_BODY_OPERATIONS
    case.call_and_validate(base_url=f"http://127.0.0.1:{server.port}", headers=headers,
                           checks=TEXT_BODY_CHECKS if text_body else CHECKS)
