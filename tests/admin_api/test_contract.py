"""The OpenAPI document is the contract: it must describe exactly the routes the resource
serves, with the same request fields, parameters, scopes and problem+json errors."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import yaml
from openapi_spec_validator import validate

from radiusd.admin_api import OPENAPI_PATH, api_resource, openapi_document
from radiusd.admin_api.bearer import DEVICE, PUBLIC
from radiusd.config import Config

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
PROBLEM_SCHEMAS = {"#/components/schemas/Problem", "#/components/schemas/OAuthProblem"}


@pytest.fixture(scope="module")
def resource():
    runtime = SimpleNamespace(config=Config(), metrics=None, context=SimpleNamespace(clock=time.time))
    return api_resource(runtime, reactor=None, pools={})


@pytest.fixture(scope="module")
def document():
    return openapi_document()


@pytest.fixture(scope="module")
def routes(resource):
    return {(route.method, route.template): route for route in resource.router.routes}


def test_the_served_json_document_is_the_yaml_one(document):
    """openapi.yaml is edited; the server reads openapi.json, made from it by `make openapi`."""
    source = yaml.safe_load(OPENAPI_PATH.with_name("openapi.yaml").read_text())
    assert document == source, "admin_api/openapi.json is stale: run `make openapi`"


def test_the_server_reads_no_yaml():
    """PyYAML is a test dependency only: importing the API and reading its document needs none."""
    code = ("import sys; sys.modules['yaml'] = None; from radiusd.admin_api import openapi_document; "
            "assert openapi_document()['openapi'].startswith('3.1')")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == 0


def operations_of(document) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): operation for path, item in document["paths"].items()
            for method, operation in item.items() if method in METHODS}


def resolve(document, node: dict) -> dict:
    while "$ref" in node:
        target = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_document_is_a_valid_openapi_31_document(document):
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_routes_and_documented_operations_are_the_same_set(resource, document):
    served = resource.router.operations()
    documented = set(operations_of(document))
    assert served == documented, {"served only": served - documented, "documented only": documented - served}


def test_path_parameters_match_the_templates(document, routes):
    for (method, path), operation in operations_of(document).items():
        item = document["paths"][path]
        parameters = [resolve(document, p) for p in item.get("parameters", []) + operation.get("parameters", [])]
        in_path = {p["name"] for p in parameters if p["in"] == "path"}
        assert in_path == set(re.findall(r"{(\w+)}", path)), (method, path)
        query = {p["name"] for p in parameters if p["in"] == "query"}
        model = routes[(method, path)].query
        assert query == (set(model.model_fields) if model else set()), (method, path)


def test_request_bodies_match_the_pydantic_models(document, routes):
    for key, operation in operations_of(document).items():
        route = routes[key]
        if route.raw:
            continue
        if route.media_type != "application/json":  # the CSV import: the body is the file
            assert list(operation["requestBody"]["content"]) == [route.media_type], key
            assert route.body is None and operation["requestBody"]["required"] is True, key
            continue
        if route.body is None:
            assert "requestBody" not in operation, key
            continue
        schema = resolve(document, operation["requestBody"]["content"]["application/json"]["schema"])
        assert schema.get("additionalProperties") is False, key
        assert set(schema["properties"]) == set(route.body.model_fields), key
        required = {name for name, field in route.body.model_fields.items() if field.is_required()}
        assert set(schema.get("required", [])) == required, key


def test_security_matches_the_routes_scopes(document, routes):
    default = document["security"]
    for key, operation in operations_of(document).items():
        route = routes[key]
        security = operation.get("security", default)
        if route.scopes == PUBLIC:
            assert security == [] or {} in security, key
        elif route.scopes == DEVICE:  # the authenticator app's device token, not an OAuth client
            assert security == [{"deviceToken": []}], key
        else:
            assert security == [{"apiClient": sorted(route.scopes)}], key


def test_every_error_response_is_a_problem(document, routes):
    for key, operation in operations_of(document).items():
        for status, response in operation["responses"].items():
            response = resolve(document, response)
            if int(status) < 400:
                continue
            content = response["content"]
            assert list(content) == ["application/problem+json"], (key, status)
            assert content["application/problem+json"]["schema"]["$ref"] in PROBLEM_SCHEMAS, (key, status)
        if key[1] != "/api/v1/openapi.json" and key[1] != "/oauth/token":
            needed = {"422"} if routes[key].scopes == PUBLIC else {"401", "403", "422"}  # no token, no 401
            assert needed <= set(operation["responses"]), key


def test_problem_schema_has_the_rfc_9457_members_and_a_code(document):
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
