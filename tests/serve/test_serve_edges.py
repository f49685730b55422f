"""Requests at the edges: V2 bodies of the wrong shape, content types, text that is not UTF-8, a fault
inside a handler, metric labels from clients, API key forms and the values of response headers."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from leanml.config import ServeConfig
from leanml.serve import create_app
from leanml.serve.metrics import UNKNOWN_MODEL

INFER = "/v2/models/flights/infer"
PREDICT = "/v1/models/flights:predict"


@pytest.fixture(scope="module")
def client(module_store: Path) -> Iterator[TestClient]:
    app = create_app(str(module_store), ServeConfig(max_wait_ms=0))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def tensors(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One V2 input tensor per column of a V1 row."""
    return [
        {
            "name": name,
            "shape": [1],
            "datatype": "BYTES" if isinstance(value, str) else "FP64",
            "data": [value],
        }
        for name, value in row.items()
    ]


def nested(depth: int) -> str:
    return "[" * depth + "1.0" + "]" * depth


WRONG_SHAPES = {
    "request parameters as a string": ({"parameters": "x"}, "parameters"),
    "request parameters as a list": ({"parameters": [1]}, "parameters"),
    "tensor parameters as a string": ({"tensor": {"parameters": "x"}}, "dep_delay"),
    "tensor parameters as a list": ({"tensor": {"parameters": [1]}}, "dep_delay"),
    "outputs as an int": ({"outputs": 3}, "outputs"),
    "an output name as a list": ({"outputs": [{"name": ["prediction"]}]}, "outputs[0]"),
    "an output's parameters as a string": (
        {"outputs": [{"name": "prediction", "parameters": "x"}]},
        "outputs[0].parameters",
    ),
    "binary_data_output not a bool": ({"parameters": {"binary_data_output": "yes"}}, "parameters."),
    "datatype as an object": ({"tensor": {"datatype": {"a": 1}}}, "dep_delay"),
    "shape of booleans": ({"tensor": {"shape": [True]}}, "dep_delay"),
    "id as an object": ({"id": {"a": 1}}, "id"),
    "an unknown output": ({"outputs": [{"name": "nope"}]}, "outputs"),
}


@pytest.mark.parametrize("case", list(WRONG_SHAPES), ids=lambda c: c.replace(" ", "-"))
def test_v2_bodies_of_the_wrong_shape_get_422_naming_the_field(
    client: TestClient, good_rows: list[dict[str, Any]], case: str
) -> None:
    change, field = WRONG_SHAPES[case]
    inputs = tensors(good_rows[0])
    inputs[0] = {**inputs[0], **change.get("tensor", {})}
    body = {"inputs": inputs, **{k: v for k, v in change.items() if k != "tensor"}}
    response = client.post(INFER, json=body)
    assert response.status_code == 422, response.text
    details = response.json()["details"]
    assert any(d["field"].startswith(field) for d in details), details


def test_v2_data_nested_deeper_than_its_shape_and_zero_rows_get_422(
    client: TestClient, good_rows: list[dict[str, Any]]
) -> None:
    inputs = tensors(good_rows[0])
    text = json.dumps({"inputs": [{**inputs[0], "data": "DEEP"}, *inputs[1:]]})
    response = client.post(INFER, content=text.replace('"DEEP"', nested(1000)).encode())
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]
    empty = [{**t, "shape": [0], "data": []} for t in inputs]
    response = client.post(INFER, json={"inputs": empty})
    assert response.status_code == 422
    assert response.json()["details"][0]["error"] == "no rows: the input tensors are empty"


def test_v2_id_is_echoed_as_a_string_and_model_ready_names_the_model(
    client: TestClient, good_rows: list[dict[str, Any]]
) -> None:
    response = client.post(INFER, json={"id": "req-7", "inputs": tensors(good_rows[0])})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "req-7"
    assert client.get("/v2/models/flights/ready").json() == {"name": "flights", "ready": True}
    assert client.get("/v2/").json()["name"] == "leanml"  # the Open Inference Protocol's spelling


def test_bodies_that_are_not_json_get_415_but_the_binary_extension_works(
    client: TestClient, good_rows: list[dict[str, Any]]
) -> None:
    v1 = json.dumps({"instances": good_rows[:1]}).encode()
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = client.post(PREDICT, content=v1, headers={"Content-Type": kind})
        assert response.status_code == 415, kind
        assert "application/json" in response.json()["error"]
        response = client.post(INFER, content=v1, headers={"Content-Type": kind})
        assert response.status_code == 415, kind
    assert (
        client.post(
            PREDICT, content=v1, headers={"Content-Type": "application/json; charset=utf-8"}
        ).status_code
        == 200
    )
    assert client.post(PREDICT, content=v1).status_code == 200  # no Content-Type: read as JSON
    # The binary tensor extension: a JSON header, then raw float64 values, as tritonclient sends them.
    inputs = tensors(good_rows[0])
    inputs[0] = {"name": "dep_delay", "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}
    header = json.dumps({"inputs": inputs}).encode()
    body = header + struct.pack("<d", float(good_rows[0]["dep_delay"] or 0.0))
    response = client.post(
        INFER,
        content=body,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(header)),
        },
    )
    assert response.status_code == 200, response.text


def test_text_that_is_not_utf8_gets_a_400_that_says_so(client: TestClient) -> None:
    response = client.post(PREDICT, content=b'{"instances": [{"carrier": "\xff\xfe"}]}')
    assert response.status_code == 400
    assert response.json()["error"].startswith("the body is not UTF-8 text: byte 0xff at offset")
    response = client.post(PREDICT, content=b'{"instances": [{"carrier": "\\ud800"}]}')
    assert response.status_code == 400
    assert "lone UTF-16 surrogate" in response.json()["error"]


def test_a_fault_inside_a_handler_is_a_counted_json_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, good_rows: list[dict[str, Any]]
) -> None:
    from leanml.serve import protocol

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("a bug")

    monkeypatch.setattr(protocol, "v1_response", broken)
    response = client.post(PREDICT, json={"instances": good_rows[:1]})
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error (ValueError)"}
    monkeypatch.undo()
    metrics = client.get("/metrics").text
    assert "leanml_internal_errors_total 1.0" in metrics
    assert 'leanml_requests_total{endpoint="v1",model="flights",status="500"} 1.0' in metrics
    assert client.post(PREDICT, json={"instances": good_rows[:1]}).status_code == 200


def test_metric_labels_come_only_from_served_models(client: TestClient) -> None:
    for i in range(30):
        name = f"nope{i}-" + "x" * 2000
        assert client.post(f"/v1/models/{name}:predict", json={"instances": [{}]}).status_code == 404
        assert client.post(f"/v2/models/{name}/infer", json={"inputs": []}).status_code == 404
    metrics = client.get("/metrics").text
    assert "nope" not in metrics
    assert f'leanml_requests_total{{endpoint="v1",model="{UNKNOWN_MODEL}",status="404"}} 30.0' in metrics
    assert f'leanml_requests_total{{endpoint="v2",model="{UNKNOWN_MODEL}",status="404"}} 30.0' in metrics


def test_metrics_are_rendered_off_the_event_loop(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    app = client.app
    metrics = app.state.metrics  # type: ignore[attr-defined]
    threads: list[str] = []
    original = metrics.render

    def render() -> bytes:
        threads.append(threading.current_thread().name)
        return original()

    monkeypatch.setattr(metrics, "render", render)
    loop_thread = client.portal.call(lambda: threading.current_thread().name)  # type: ignore[union-attr]
    assert client.get("/metrics").status_code == 200
    assert threads and threads[0] != loop_thread


def test_response_header_values(client: TestClient, good_rows: list[dict[str, Any]]) -> None:
    response = client.post(PREDICT, json={"instances": good_rows[:2]})
    assert response.status_code == 200
    assert response.headers["x-model-version"] == "v1" == response.json()["model_version"]
    for header in ("x-queue-ms", "x-preprocess-ms", "x-model-ms"):
        assert 0.0 <= float(response.headers[header]) < 60_000
    assert response.headers["content-type"] == "application/json"
    response = client.post(INFER, json={"inputs": tensors(good_rows[0])})
    assert response.headers["x-model-version"] == "v1"


def test_api_key_as_header_or_bearer_token(module_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANML_EDGE_KEY", "s3cret")
    app = create_app(str(module_store), ServeConfig(api_key_env="LEANML_EDGE_KEY"))
    with TestClient(app, raise_server_exceptions=False) as keyed:
        for headers, status in [
            ({}, 401),
            ({"Authorization": "Bearer wrong"}, 401),
            ({"Authorization": "Basic s3cret"}, 401),
            ({"Authorization": "Bearer s3cret"}, 200),
            ({"Authorization": "bearer s3cret"}, 200),
            ({"X-API-Key": "s3cret"}, 200),
        ]:
            response = keyed.get("/v1/models/flights", headers=headers)
            assert response.status_code == status, headers
            if status == 401:
                assert "Bearer" in response.json()["error"]
        assert keyed.get("/v2/health/ready").status_code == 200
        assert keyed.get("/openapi.json", headers={"X-API-Key": "s3cret"}).json()["security"]


def test_a_missing_api_key_variable_is_a_config_error(
    module_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from leanml.errors import ConfigError

    monkeypatch.delenv("LEANML_UNSET_KEY", raising=False)
    with pytest.raises(ConfigError, match="LEANML_UNSET_KEY is not set"):
        create_app(str(module_store), ServeConfig(api_key_env="LEANML_UNSET_KEY"))


def test_openapi_document_describes_each_model_with_its_inputs(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    predict = document["paths"]["/v1/models/flights:predict"]["post"]
    instance = predict["requestBody"]["content"]["application/json"]["schema"]["properties"]["instances"][
        "items"
    ]
    assert set(instance["required"]) == {
        "dep_delay",
        "distance",
        "sched_dep_time",
        "carrier",
        "dest",
        "origin",
        "time_hour",
    }
    assert (
        instance["properties"]["distance"]["minimum"] == 50
        and instance["properties"]["distance"]["maximum"] == 3000
    )
    assert "UA" in instance["properties"]["carrier"]["enum"]  # unknown carriers are refused
    assert instance["properties"]["time_hour"]["format"] == "date-time"
    infer = document["paths"]["/v2/models/flights/infer"]["post"]
    assert {"200", "400", "404", "413", "415", "422", "503", "504"} <= set(infer["responses"])
