"""Bundles, the model store and batch prediction, on a small model trained on real flights data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

import leanml
from leanml.bundle import BundleError, ModelStore, load_bundle, resolve_reference
from leanml.bundle.artifact import MANIFEST, PREPROCESS, REFERENCE, sha256_file
from leanml.bundle.predict import evaluate_file, predict_file
from leanml.data.split import ROW_ID
from leanml.errors import DataError
from leanml.metrics import evaluate


@pytest.fixture
def trained(trained_flights: dict[str, Any]) -> dict[str, Any]:
    return trained_flights


def test_train_writes_a_complete_bundle(trained: dict[str, Any]) -> None:
    ref = trained["outcome"].bundle
    assert (ref.name, ref.version) == ("flights", "v1")
    names = sorted(p.name for p in ref.path.iterdir())
    assert names == [
        "config.json",
        "drift.json",
        "manifest.json",
        "model.json",
        "model.onnx",
        "model.safetensors",
        "pipeline.onnx",
        "preprocess.json",
        "reference.parquet",
    ]
    manifest = json.loads((ref.path / MANIFEST).read_text())
    assert set(manifest["files"]) == set(names) - {MANIFEST}
    for name, digest in manifest["files"].items():
        assert sha256_file(ref.path / name) == digest
    assert manifest["task"] == "binary" and manifest["labels"] == [False, True]
    pipeline = manifest["pipeline"]
    assert [i["name"] for i in pipeline["inputs"]] == [c["name"] for c in manifest["input_schema"]]
    assert pipeline["missing"]["STRING"] == "" and "unseen_category:carrier" in pipeline["problems"]
    assert manifest["metrics"]["test"]["accuracy"] > 0.8
    assert manifest["lineage"]["data_fingerprint"] and manifest["lineage"]["config_hash"]
    schema = {c["name"]: c for c in manifest["input_schema"]}
    assert schema["carrier"]["unknown"] == "error" and "UA" in schema["carrier"]["categories"]
    assert schema["distance"]["bounds"] == [50, 3000]
    assert ModelStore(trained["root"] / "models").aliases("flights")["latest"] == "v1"


def test_copied_bundle_loads_and_predicts_identically(trained: dict[str, Any], tmp_path: Path) -> None:
    ref = trained["outcome"].bundle
    copy = tmp_path / "elsewhere" / "bundle"
    shutil.copytree(ref.path, copy)
    frame = pl.read_parquet(trained["data"]).head(500)
    original, moved = load_bundle(ref.path), load_bundle(copy)
    assert original.predict(frame).equals(moved.predict(frame))
    torch_runtime = load_bundle(copy, runtime="torch").predict(frame)
    np.testing.assert_allclose(
        torch_runtime["proba_True"].to_numpy(), original.predict(frame)["proba_True"].to_numpy(), atol=1e-5
    )


@pytest.mark.parametrize(
    "damage", ["flip_byte", "missing_file", "newer_format", "bad_json", "reference_drift"]
)
def test_damaged_bundles_are_refused(trained: dict[str, Any], tmp_path: Path, damage: str) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(trained["outcome"].bundle.path, bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    if damage == "flip_byte":
        data = bytearray((bundle / "model.safetensors").read_bytes())
        data[-1] ^= 0xFF
        (bundle / "model.safetensors").write_bytes(bytes(data))
        expected = "model.safetensors does not match its checksum"
    elif damage == "missing_file":
        (bundle / "model.onnx").unlink()
        expected = "model.onnx is missing"
    elif damage == "newer_format":
        manifest["format_version"] = 99
        (bundle / MANIFEST).write_text(json.dumps(manifest))
        expected = "format version 99 is newer"
    elif damage == "bad_json":
        (bundle / MANIFEST).write_text("{")
        expected = "cannot read manifest.json"
    else:
        # A consistent-looking bundle (checksums updated) whose preprocessing no longer matches its outputs.
        state = json.loads((bundle / PREPROCESS).read_text())
        state["columns"][0]["scale"]["offset"] += 5.0
        (bundle / PREPROCESS).write_text(json.dumps(state))
        manifest["files"][PREPROCESS] = sha256_file(bundle / PREPROCESS)
        (bundle / MANIFEST).write_text(json.dumps(manifest))
        expected = "does not reproduce its reference outputs"
    with pytest.raises(BundleError, match=expected):
        load_bundle(bundle)


def test_predict_file_equals_in_memory_predict_with_messy_rows(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    bundle = leanml.load(str(trained["root"] / "models" / "flights"))
    frame = (
        pl.read_parquet(trained["data"])
        .head(3000)
        .with_columns(
            # nulls, a category never seen, and out-of-range distances (rejected by the serving policy)
            pl.when(pl.int_range(pl.len()) % 7 == 0)
            .then(None)
            .otherwise(pl.col("dep_delay"))
            .alias("dep_delay"),
            pl.when(pl.int_range(pl.len()) % 11 == 0)
            .then(pl.lit("ZZ"))
            .otherwise(pl.col("carrier"))
            .alias("carrier"),
            pl.when(pl.int_range(pl.len()) % 13 == 0)
            .then(9999.0)
            .otherwise(pl.col("distance"))
            .alias("distance"),
        )
    )
    source = tmp_path / "messy.csv"
    as_text = frame.with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    as_text.write_csv(source, null_value="NA")
    out = tmp_path / "pred.parquet"
    summary = predict_file(bundle, str(source), out, keep=["flight", "dep_delay"], chunk_rows=700)
    from_file = pl.read_parquet(out)
    in_memory = bundle.predict(frame)
    assert summary.rows == 3000 and from_file.height == 3000
    assert from_file[ROW_ID].to_list() == list(range(3000))
    assert from_file["flight"].cast(pl.Int64).equals(frame["flight"])
    # a kept column's missing values stay missing (the CSV spells them "NA", a null token)
    assert from_file["dep_delay"].null_count() == frame["dep_delay"].null_count() > 0
    reasons = from_file["__reason"]
    assert reasons.is_not_null().sum() == summary.rejected > 0
    assert set(reasons.drop_nulls()) == {"unseen_category:carrier", "outlier:distance"}
    assert from_file["prediction"].is_null().sum() == summary.rejected
    np.testing.assert_allclose(
        from_file["proba_True"].to_numpy(), in_memory["proba_True"].to_numpy(), atol=1e-6
    )
    assert from_file["prediction"].equals(in_memory["prediction"])
    csv_out = tmp_path / "pred.csv"
    predict_file(bundle, str(source), csv_out)
    assert pl.read_csv(csv_out).height == 3000


def test_evaluate_file_matches_direct_metrics(trained: dict[str, Any]) -> None:
    bundle = leanml.load(str(trained["outcome"].bundle.path))
    result = evaluate_file(bundle, str(trained["data"]))
    frame = pl.read_parquet(trained["data"]).filter(pl.col("delayed").is_not_null())
    predicted = bundle.predict(frame).with_columns(frame["delayed"])
    usable = predicted.filter(pl.col("__reason").is_null())
    direct = evaluate("binary", usable["delayed"].cast(pl.Int64).to_numpy(), usable["proba_True"].to_numpy())
    assert result["metrics"] == pytest.approx(direct)
    assert result["skipped"]["missing_target"] == pl.read_parquet(trained["data"])["delayed"].null_count()
    assert result["evaluated"] == usable.height


def test_store_versions_aliases_promote_and_rollback(trained: dict[str, Any], tmp_path: Path) -> None:
    store_root = tmp_path / "models"
    store = ModelStore(store_root)
    shutil.copytree(trained["outcome"].bundle.path.parent, store_root / "flights")
    for version in ("v2", "v3"):  # more versions: copies with their manifests' version fields
        shutil.copytree(store_root / "flights" / "v1", store_root / "flights" / version)
    assert store.versions("flights") == ["v1", "v2", "v3"]
    assert store.resolve("flights").version == "v1"  # latest alias still says v1
    assert store.promote("flights", "v2").version == "v2"
    assert store.promote("flights", "v3").version == "v3"
    assert store.resolve("flights").version == "v3"  # production wins over latest
    assert store.rollback("flights").version == "v2"
    assert resolve_reference(f"{store_root}/flights@v1").version == "v1"
    assert (
        resolve_reference(f"{store_root}/flights@production").version
        == store.aliases("flights")["production"]
    )
    with pytest.raises(BundleError, match="no version 'v9'"):
        store.resolve("flights", "v9")
    with pytest.raises(BundleError, match="no model 'nope'"):
        store.resolve("nope")
    with pytest.raises(BundleError, match="neither a bundle folder"):
        resolve_reference(tmp_path / "nothing")


def test_rollback_walks_back_through_promotions(trained: dict[str, Any], tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    shutil.copytree(trained["outcome"].bundle.path.parent, tmp_path / "models" / "flights")
    for version in ("v2", "v3"):
        shutil.copytree(tmp_path / "models" / "flights" / "v1", tmp_path / "models" / "flights" / version)
    for version in ("v1", "v2", "v3"):
        store.promote("flights", version)
    assert [store.rollback("flights").version for _ in range(2)] == ["v2", "v1"]
    with pytest.raises(BundleError, match="no earlier production version"):
        store.rollback("flights")


def test_promote_refuses_a_damaged_bundle(trained: dict[str, Any], tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    shutil.copytree(trained["outcome"].bundle.path.parent, tmp_path / "models" / "flights")
    (tmp_path / "models" / "flights" / "v1" / REFERENCE).write_bytes(b"garbage")
    with pytest.raises(BundleError, match=r"reference\.parquet does not match its checksum"):
        store.promote("flights", "v1")
    assert store.aliases("flights").get("production") is None


def test_a_second_training_run_adds_a_version_and_frames_must_have_the_inputs(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    config = trained["config"].model_copy(update={"store": str(tmp_path / "models")})
    shutil.copytree(trained["root"] / "models" / "flights", tmp_path / "models" / "flights")
    outcome = leanml.train(config)  # the Python API: same as `leanml train`
    assert outcome.bundle.version == "v2"
    assert ModelStore(tmp_path / "models").aliases("flights")["latest"] == "v2"
    bundle = leanml.load(str(outcome.bundle.path))
    with pytest.raises(DataError, match="lacks input column"):
        bundle.predict(pl.DataFrame({"dep_delay": [1.0]}))
    one = bundle.predict([{"dep_delay": 30, "carrier": "UA", "time_hour": "2013-05-01T08:00:00Z"}])
    assert one.height == 1 and one["prediction"].dtype == pl.Boolean


def test_the_served_graph_is_pipeline_onnx_packed_and_answers_alike(
    trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from leanml.bundle import graph
    from leanml.bundle.runtime import PipelineRuntime

    bundle = load_bundle(trained["outcome"].bundle.path)
    kinds = {c.type for c in bundle.state.columns}
    assert len(bundle.pipeline.input_names) == len(kinds) < len(bundle.state.columns)
    contract = PipelineRuntime(bundle.path / "pipeline.onnx", threads=1)
    assert contract.input_names == [c.name for c in bundle.state.columns]
    frame = pl.read_parquet(trained["data"]).head(300)
    feed = graph.graph_inputs(frame, bundle.state)
    served, reference = bundle.pipeline.run(feed), contract.run(feed)
    assert list(served) == list(reference)
    for name, values in reference.items():
        np.testing.assert_array_equal(served[name], values, err_msg=name)

    # A packed twin that disagrees with pipeline.onnx is refused like a damaged bundle.
    build = graph.build_pipeline

    def shifted(state: Any, model: Any, spec: Any, packed: bool = False) -> Any:
        if packed:
            data = state.model_dump(mode="json")
            numeric = next(c for c in data["columns"] if c["type"] == "numeric")
            numeric["scale"]["offset"] += 5.0
            state = type(state).model_validate(data)
        return build(state, model, spec, packed)

    monkeypatch.setattr(graph, "build_pipeline", shifted)
    with pytest.raises(BundleError, match=r"packed twin of pipeline\.onnx"):
        load_bundle(bundle.path)
