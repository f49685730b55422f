"""schemathesis against a live server, driven by two documents: the server's own ``/openapi.json`` and the
Open Inference Protocol's published REST spec (vendored next to this file). Bounded, seeded and
derandomized: zero 5xx, and every response matches the document that describes it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

OIP_SPEC = Path(__file__).with_name("open_inference_rest.yaml")
BOUNDED = settings(
    max_examples=int(os.environ.get("LEANML_SCHEMA_EXAMPLES", "40")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def live_url(module_store: Path, guarded_server: Any) -> Iterator[str]:
    with guarded_server(str(module_store), max_wait_ms=0, max_rows=50) as (url, _):
        yield url


def _each_operation(schema: Any, check: Callable[[Any], None]) -> int:
    """Run ``check`` on bounded, derandomized cases of every operation of ``schema``; the operations run."""
    count = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @BOUNDED
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            check(case)

        run()
        count += 1
    return count


def test_the_server_keeps_to_its_own_openapi_document(live_url: str) -> None:
    schema = schemathesis.openapi.from_dict(httpx.get(f"{live_url}/openapi.json").json())
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]

    def check(case: Any) -> None:
        response = case.call(base_url=live_url, timeout=10)
        case.validate_response(response, checks=checks)

    assert _each_operation(schema, check) >= 14


def test_the_server_keeps_to_the_open_inference_protocol_spec(live_url: str) -> None:
    schema = schemathesis.openapi.from_dict(yaml.safe_load(OIP_SPEC.read_text()))

    def check(case: Any) -> None:
        if case.path_parameters:  # the served model, so that requests reach inference rather than a 404
            case.path_parameters = {**case.path_parameters, "MODEL_NAME": "flights", "MODEL_VERSION": "v1"}
        response = case.call(base_url=live_url, timeout=10)
        assert response.status_code < 500, response.text
        content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis: name → values
        if content_type.startswith("application/octet-stream"):
            # The binary tensor extension (asked for by parameters) is outside the spec's JSON document.
            assert "inference-header-content-length" in response.headers
            return
        # The spec documents only some statuses (200, 400): their bodies must match it; the others
        # (404, 413, 415, 422) carry leanml's JSON error body.
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
        if response.status_code >= 400:
            assert isinstance(response.json()["error"], str)

    assert _each_operation(schema, check) == 6
