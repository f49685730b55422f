"""Property-based tests of request validation and a fuzz run of every endpoint: no input yields a 5xx."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from leanml.config import ServeConfig
from leanml.serve import create_app

INPUTS = ["dep_delay", "distance", "sched_dep_time", "carrier", "dest", "origin", "time_hour"]
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.sampled_from(
        ["UA", "AA", "JFK", "LGA", "LAX", "2013-05-01T08:00:00Z", "2013-13-45", "NA", "", "1e400"]
    )
)
values = scalars | st.lists(scalars, max_size=2) | st.dictionaries(st.text(max_size=3), scalars, max_size=2)
instance = st.dictionaries(st.sampled_from([*INPUTS, "extra"]), values, max_size=9)
complete = st.fixed_dictionaries({name: scalars for name in INPUTS})


@pytest.fixture(scope="module")
def client(trained_flights: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    root = tmp_path_factory.mktemp("fuzz") / "models"
    shutil.copytree(trained_flights["root"] / "models", root)
    app = create_app(str(root), ServeConfig(max_rows=20, max_body_bytes=64 * 1024, max_wait_ms=0))
    # A server exception must show up as the 500 it would be in production, not as an exception the
    # test could mistake for the client's own trouble.
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def _check_error_body(response: Any) -> None:
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    for detail in body.get("details", []):
        assert set(detail) == {"row", "field", "error"}
        assert detail["row"] is None or isinstance(detail["row"], int)
        assert isinstance(detail["error"], str) and detail["error"]


@FUZZ
@given(st.lists(instance | complete | scalars, max_size=25))
def test_v1_any_instances_get_an_answer_or_a_clear_4xx(client: TestClient, rows: list[Any]) -> None:
    response = client.post("/v1/models/flights:predict", content=json.dumps({"instances": rows}).encode())
    assert response.status_code in (200, 413, 422), response.text
    if response.status_code == 200:
        body = response.json()
        assert len(body["predictions"]) == len(rows) and len(body["probabilities"]) == len(rows)
        assert all(isinstance(p, bool) for p in body["predictions"])
    else:
        _check_error_body(response)


@FUZZ
@given(st.lists(complete, min_size=1, max_size=20))
def test_v1_rows_of_the_right_shape_fail_only_on_their_values(client: TestClient, rows: list[Any]) -> None:
    response = client.post("/v1/models/flights:predict", content=json.dumps({"instances": rows}).encode())
    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        _check_error_body(response)
        for detail in response.json()["details"]:
            assert 0 <= detail["row"] < len(rows) and detail["field"] in INPUTS


tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from([*INPUTS, "nope"]) | st.text(max_size=4),
        "shape": st.lists(st.integers(min_value=-1, max_value=4), max_size=3),
        "datatype": st.sampled_from(["FP64", "FP32", "INT64", "BYTES", "BOOL", "FP8", "UINT8"]),
        "data": st.lists(scalars | st.lists(scalars, max_size=2), max_size=5),
    }
)


@FUZZ
@given(st.lists(tensor, max_size=8) | values)
def test_v2_any_tensors_get_an_answer_or_a_clear_4xx(client: TestClient, inputs: Any) -> None:
    response = client.post("/v2/models/flights/infer", content=json.dumps({"inputs": inputs}).encode())
    assert response.status_code in (200, 413, 422), response.text
    if response.status_code != 200:
        _check_error_body(response)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.sampled_from(
        [
            "/v1/models/flights",
            "/v1/models/flights:predict",
            "/v1/models/flights/drift",
            "/v2",
            "/v2/health/live",
            "/v2/health/ready",
            "/v2/models/flights",
            "/v2/models/flights/ready",
            "/v2/models/flights/infer",
            "/v2/models/flights/versions/v1/infer",
            "/metrics",
        ]
    )
    | st.text(alphabet="/abcv12:%._-", max_size=30).map(lambda p: "/" + p),
    body=st.binary(max_size=300),
    header_length=st.none() | st.integers(min_value=-5, max_value=400).map(str) | st.text(max_size=4),
)
def test_fuzzing_every_endpoint_never_gives_5xx(
    client: TestClient, method: str, path: str, body: bytes, header_length: str | None
) -> None:
    headers = {} if header_length is None else {"Inference-Header-Content-Length": header_length}
    try:
        request = client.build_request(method, path, content=body, headers=headers)
    except (UnicodeEncodeError, ValueError, httpx.InvalidURL):  # the client itself cannot build that
        return
    response = client.send(request)
    assert response.status_code < 500, (method, path, response.text)


def test_the_server_is_alive_and_correct_after_fuzzing(
    client: TestClient, trained_flights: dict[str, Any]
) -> None:
    assert client.get("/v2/health/live").status_code == 200
    row = {
        "dep_delay": 10,
        "distance": 500,
        "sched_dep_time": 900,
        "carrier": "UA",
        "dest": "LAX",
        "origin": "JFK",
        "time_hour": "2013-05-01T08:00:00Z",
    }
    response = client.post("/v1/models/flights:predict", json={"instances": [row]})
    assert response.status_code == 200 and response.json()["model_version"] == "v1"
    metrics = client.get("/metrics").text
    assert 'status="500"' not in metrics
