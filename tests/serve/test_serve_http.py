"""The server over real HTTP: V1 with httpx, V2 with tritonclient, errors, limits, batching, reload, drift."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import tritonclient.http as triton

from leanml.bundle import BundleInputs, ModelStore, load_bundle
from leanml.bundle.artifact import MANIFEST, MODEL_ONNX, REFERENCE
from leanml.bundle.store import ALIASES
from leanml.serve.engine import ServedModel
from serving import running_server

INPUTS = ["dep_delay", "distance", "sched_dep_time", "carrier", "dest", "origin", "time_hour"]


@pytest.fixture(scope="module")
def store(module_store: Path) -> Path:
    """This module's copy of the trained store (tests here change aliases)."""
    return module_store


@pytest.fixture(scope="module")
def rows(trained_flights: dict[str, Any]) -> pl.DataFrame:
    """Real flights as a client would send them: the inputs only, datetimes as ISO text."""
    frame = pl.read_parquet(trained_flights["data"]).filter(pl.col("distance") <= 3000).slice(200, 40)
    return frame.select(INPUTS).with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))


def instances(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


def test_v1_predictions_equal_batch_predict(store: Path, rows: pl.DataFrame) -> None:
    expected = load_bundle(store / "flights" / "v1").predict(rows)
    with running_server(str(store)) as (url, _):
        meta = httpx.get(f"{url}/v1/models/flights").json()
        assert meta["ready"] and meta["version"] == "v1" and meta["labels"] == [False, True]
        response = httpx.post(f"{url}/v1/models/flights:predict", json={"instances": instances(rows)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "v1"
    assert body["predictions"] == expected["prediction"].to_list()
    np.testing.assert_allclose(
        np.array(body["probabilities"])[:, 1], expected["proba_True"].to_numpy(), atol=1e-6
    )
    for header in ("x-queue-ms", "x-preprocess-ms", "x-model-ms", "x-model-version"):
        assert header in response.headers


@pytest.mark.parametrize("binary", [True, False])
def test_v2_with_tritonclient_equals_batch_predict(store: Path, rows: pl.DataFrame, binary: bool) -> None:
    expected = load_bundle(store / "flights" / "v1").predict(rows)
    with running_server(str(store)) as (url, _):
        client = triton.InferenceServerClient(url.removeprefix("http://"))
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("flights")
        metadata = client.get_model_metadata("flights")
        assert {i["name"] for i in metadata["inputs"]} == set(INPUTS)
        tensors = []
        for name in INPUTS:
            column = rows[name]
            numeric = column.dtype.is_numeric()
            data = (
                column.to_numpy().astype(np.float64) if numeric else np.array(column.to_list(), dtype=object)
            )
            tensor = triton.InferInput(name, [len(data)], "FP64" if numeric else "BYTES")
            tensor.set_data_from_numpy(data, binary_data=binary)
            tensors.append(tensor)
        outputs = (
            None
            if binary
            else [
                triton.InferRequestedOutput("prediction", binary_data=False),
                triton.InferRequestedOutput("probabilities", binary_data=False),
            ]
        )
        result = client.infer("flights", tensors, outputs=outputs)
    assert result.as_numpy("prediction").tolist() == expected["prediction"].to_list()
    np.testing.assert_allclose(
        result.as_numpy("probabilities")[:, 1], expected["proba_True"].to_numpy(), atol=1e-6
    )
    assert result.get_response()["model_version"] == "v1"


def test_bad_requests_get_4xx_with_every_problem(store: Path, rows: pl.DataFrame) -> None:
    good = instances(rows.head(3))
    bad = [
        {**good[0], "dep_delay": "abc"},  # wrong type
        {k: v for k, v in good[1].items() if k != "origin"} | {"carrier": "ZZ"},  # missing + unknown category
        {**good[2], "distance": 9999.0, "time_hour": "not a time"},  # out of range + bad date
    ]
    with running_server(str(store), max_rows=50, max_body_bytes=20_000) as (url, _):
        post = f"{url}/v1/models/flights:predict"
        response = httpx.post(post, json={"instances": bad})
        assert response.status_code == 422
        found = {(e["row"], e["field"]): e["error"] for e in response.json()["details"]}
        assert found[(0, "dep_delay")] == "expected a number, got 'abc'"
        assert found[(1, "origin")] == "required field is missing"
        assert found[(1, "carrier")].startswith("unknown category 'ZZ'")
        assert found[(2, "distance")] == "9999.0 is outside the accepted range [50, 3000]"
        assert found[(2, "time_hour")].startswith("expected a date like 2024-01-31T13:45:00+00:00")
        assert found[(2, "time_hour")].endswith("got 'not a time'")
        assert httpx.post(post, content=b"{not json").status_code == 400
        assert httpx.post(post, json={"rows": []}).status_code == 422
        assert httpx.post(post, json={"instances": "x"}).status_code == 422
        assert httpx.post(post, json={"instances": [1, None, [2]]}).status_code == 422
        assert httpx.post(post, json={"instances": [good[0]] * 51}).status_code == 413
        assert httpx.post(post, content=b"[" + b"1," * 20_000 + b"1]").status_code == 413
        assert httpx.post(f"{url}/v1/models/nope:predict", json={"instances": good}).status_code == 404
        assert httpx.post(f"{url}/v1/models/flights:explain", json={}).status_code == 404
        assert httpx.get(f"{url}/v2/models/flights/versions/v9").status_code == 404
        assert httpx.delete(f"{url}/v1/models/flights").status_code == 405
        v2 = {"inputs": [{"name": "dep_delay", "shape": [2], "datatype": "FP64", "data": [1.0]}]}
        response = httpx.post(f"{url}/v2/models/flights/infer", json=v2)
        assert response.status_code == 422 and "shape says 2 rows" in response.text
        v2 = {"inputs": [{"name": n, "shape": [1], "datatype": "BYTES", "data": ["x"]} for n in INPUTS]}
        response = httpx.post(f"{url}/v2/models/flights/infer", json=v2)
        assert response.status_code == 422
        assert {e["field"] for e in response.json()["details"]} >= {"dep_delay", "carrier", "time_hour"}
        # still alive and correct afterwards
        assert httpx.post(post, json={"instances": good}).status_code == 200


def test_api_key(store: Path, rows: pl.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEANML_TEST_KEY", "s3cret")
    with running_server(str(store), api_key_env="LEANML_TEST_KEY") as (url, _):
        body = {"instances": instances(rows.head(1))}
        assert httpx.post(f"{url}/v1/models/flights:predict", json=body).status_code == 401
        assert (
            httpx.post(
                f"{url}/v1/models/flights:predict", json=body, headers={"X-API-Key": "wrong"}
            ).status_code
            == 401
        )
        assert (
            httpx.post(
                f"{url}/v1/models/flights:predict", json=body, headers={"X-API-Key": "s3cret"}
            ).status_code
            == 200
        )
        assert httpx.get(f"{url}/v2/health/live").status_code == 200  # health stays open


async def _burst(url: str, body: dict[str, Any], n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(*[client.post(url, json=body) for _ in range(n)])


def test_concurrent_requests_are_batched(store: Path, rows: pl.DataFrame) -> None:
    body = {"instances": instances(rows.head(2))}
    with running_server(str(store), max_batch_size=64, max_wait_ms=20) as (url, _app):
        responses = asyncio.run(_burst(f"{url}/v1/models/flights:predict", body, 40))
        metrics = httpx.get(f"{url}/metrics").text
    assert all(r.status_code == 200 for r in responses)
    assert len({json.dumps(r.json()["probabilities"]) for r in responses}) == 1
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('leanml_batch_rows_count{model="flights"}')
    )
    assert count < 40  # fewer model calls than requests
    assert 'leanml_requests_total{endpoint="v1",model="flights",status="200"} 40.0' in metrics
    assert "leanml_queue_depth" in metrics and "leanml_request_seconds_bucket" in metrics


def test_full_queue_sheds_load_and_deadlines_give_504(
    store: Path, rows: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {"instances": instances(rows.head(1))}
    original = ServedModel.infer

    def slow_infer(self: ServedModel, jobs: list[Any]) -> list[Any]:
        time.sleep(0.5)  # a busy model: requests pile up in the queue meanwhile
        return original(self, jobs)

    monkeypatch.setattr(ServedModel, "infer", slow_infer)
    with running_server(str(store), max_queue=1, max_batch_size=1, max_wait_ms=0) as (url, _):
        responses = asyncio.run(_burst(f"{url}/v1/models/flights:predict", body, 6))
    codes = sorted(r.status_code for r in responses)
    assert 200 in codes and 503 in codes, codes
    shed = next(r for r in responses if r.status_code == 503)
    assert shed.headers["retry-after"] == "1"
    assert "at capacity" in shed.json()["error"]
    monkeypatch.setattr(ServedModel, "infer", original)
    with running_server(str(store), timeout_ms=5, max_wait_ms=200, max_batch_size=1000) as (url, _):
        response = httpx.post(f"{url}/v1/models/flights:predict", json=body)
    assert response.status_code == 504


def test_drift_endpoint_and_metric(store: Path, rows: pl.DataFrame) -> None:
    shifted = rows.with_columns(pl.lit(300.0).alias("dep_delay"), pl.lit("EWR").alias("origin"))
    with running_server(str(store)) as (url, _):
        post = f"{url}/v1/models/flights:predict"
        assert httpx.get(f"{url}/v1/models/flights/drift").json()["rows"] == 0
        assert httpx.post(post, json={"instances": instances(shifted)}).status_code == 200
        early = httpx.get(f"{url}/v1/models/flights/drift").json()
        for _ in range(12):  # 13 × 40 rows: past the 500 rows a status needs
            assert httpx.post(post, json={"instances": instances(shifted)}).status_code == 200
        report = httpx.get(f"{url}/v1/models/flights/drift").json()
        metrics = httpx.get(f"{url}/metrics").text
    assert early["columns"]["dep_delay"]["status"] == "insufficient data"
    assert report["rows"] == 13 * rows.height
    assert report["columns"]["dep_delay"]["status"] == "drifted"
    assert report["columns"]["origin"]["psi"] > 0.25
    assert report["columns"]["distance"]["psi"] < report["columns"]["dep_delay"]["psi"]
    assert 'leanml_input_drift_psi{column="dep_delay",model="flights"}' in metrics


def _add_version(store: Path) -> str:
    """A new store version of flights built from v1's parts (no retraining, no re-export)."""
    v1 = load_bundle(store / "flights" / "v1")
    reference = pl.read_parquet(v1.path / REFERENCE)
    inputs = BundleInputs(
        name="flights",
        state=v1.state,
        model=v1.model,
        spec=v1.spec,
        metrics=v1.manifest["metrics"],
        reference_rows=reference.select([c for c in reference.columns if not c.startswith("__")]),
        lineage={**v1.manifest["lineage"], "parent": "v1"},
        onnx_model=(v1.path / MODEL_ONNX).read_bytes(),
        drift=v1.drift_reference,
    )
    return ModelStore(store).add(inputs).version


def test_promote_and_rollback_under_load_switch_versions_without_errors(
    store: Path, rows: pl.DataFrame
) -> None:
    models = ModelStore(store)
    models.promote("flights", "v1")
    new_version = _add_version(store)
    body = {"instances": instances(rows.head(3))}
    seen: list[tuple[int, str]] = []
    stop = threading.Event()

    def load(url: str) -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                response = client.post(f"{url}/v1/models/flights:predict", json=body)
                seen.append((response.status_code, response.json().get("model_version", "")))

    with running_server(str(store), reload_interval_s=0.1) as (url, _):
        worker = threading.Thread(target=load, args=(url,))
        worker.start()
        time.sleep(0.5)
        models.promote("flights", new_version)
        _wait_for(lambda: seen and seen[-1][1] == new_version)
        models.rollback("flights")
        _wait_for(lambda: seen[-1][1] == "v1")
        stop.set()
        worker.join()
    assert seen and all(code == 200 for code, _ in seen)
    versions = [v for _, v in seen]
    first_new = versions.index(new_version)
    assert set(versions[:first_new]) == {"v1"} and versions[-1] == "v1"


def test_a_bundle_that_fails_its_checks_is_refused_and_the_old_one_keeps_serving(
    store: Path, rows: pl.DataFrame
) -> None:
    models = ModelStore(store)
    models.promote("flights", "v1")
    broken = _add_version(store)
    (store / "flights" / broken / MODEL_ONNX).write_bytes(b"not a model")
    body = {"instances": instances(rows.head(2))}
    with running_server(str(store), reload_interval_s=0.1) as (url, _):
        aliases = json.loads((store / "flights" / ALIASES).read_text())
        aliases["production"] = broken  # as if promoted by hand, bypassing promote's verification
        (store / "flights" / ALIASES).write_text(json.dumps(aliases))
        _wait_for(lambda: 'outcome="refused"' in httpx.get(f"{url}/metrics").text)
        response = httpx.post(f"{url}/v1/models/flights:predict", json=body)
    assert response.status_code == 200 and response.json()["model_version"] == "v1"
    models.promote("flights", "v1")


def _wait_for(condition: Any, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def test_serving_a_single_bundle_folder(store: Path, rows: pl.DataFrame) -> None:
    with running_server(str(store / "flights" / "v1")) as (url, app):
        response = httpx.post(f"{url}/v1/models/flights:predict", json={"instances": instances(rows.head(1))})
        assert response.status_code == 200
        assert sorted(app.state.registry.slots) == ["flights"]
    assert (store / "flights" / "v1" / MANIFEST).exists()
