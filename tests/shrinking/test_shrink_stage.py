"""The shrink stage end to end: a new, smaller version with lineage, reports, budget gate, clean errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from typer.testing import CliRunner

import leanml
from leanml.bundle import ModelStore, load_bundle
from leanml.cli import app
from leanml.config import Config, parse_config
from leanml.errors import ConfigError, StateError
from leanml.shrinking import run_shrink, shrink_options
from serving import running_server

runner = CliRunner()
DECISIONS = {"parent", "kept", "rolled back", "not kept"}


def tree_digest(folder: Path) -> str:
    """One hash over every file's name and bytes under ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_shrink_writes_a_smaller_version_whose_lineage_names_its_parent(
    store_copy: tuple[Path, Config], flights: pl.DataFrame
) -> None:
    store, config = store_copy
    result = run_shrink(store / "flights", config)

    assert result.reason is None and result.bundle is not None
    assert result.bundle.version == "v2" and ModelStore(store).aliases("flights")["latest"] == "v2"
    steps = result.steps
    assert steps[0].decision == "parent" and {s.decision for s in steps} <= DECISIONS
    assert [s.step for s in steps if s.step.startswith("distill")], "distillation ran"
    assert any(s.step == "int8" for s in steps)
    parent, final = steps[0].measurement, result.final.measurement
    assert final.parameters < parent.parameters / 4 and final.onnx_bytes < parent.onnx_bytes / 4
    assert result.budget.allows(final.metrics["roc_auc"])
    for record in steps:  # every row has every figure
        m = record.measurement
        assert m.p50_batch1_us > 0 and m.p99_batch1_us >= m.p50_batch1_us and m.p50_batch1024_us > 0
        assert m.compressed_bytes > 0 and "roc_auc" in m.metrics

    shrunk = load_bundle(result.bundle.path)  # verifies checksums and replays the reference rows
    manifest = shrunk.manifest
    assert manifest["lineage"]["stage"] == "shrink" and manifest["lineage"]["parent"] == "v1"
    assert manifest["metrics"]["parent"]["version"] == "v1"
    assert manifest["model"]["parameters"] == final.parameters
    summary = json.loads((result.bundle.path / "shrink.json").read_text())
    assert summary["written"] and len(summary["steps"]) == len(steps)
    assert set(result.test) == {"parent", "final"} and "roc_auc" in result.test["final"]
    assert set(result.batch1_p50_us) == {"parent", "final"} and min(result.batch1_p50_us.values()) > 0
    assert summary["batch1_p50_us_side_by_side"] == result.batch1_p50_us

    names = {p.name for p in result.files}
    assert names == {"shrink.json", "steps.csv", "shrink.png", "report.html"}
    csv = pl.read_csv(result.folder / "steps.csv")
    assert csv.height == len(steps) and {"p99_batch1024_us", "roc_auc", "decision"} <= set(csv.columns)
    page = (result.folder / "report.html").read_text()
    assert "data:image/png;base64," in page and "<td>kept</td>" in page
    assert (result.folder / "plots" / "shrink.png").read_bytes()[:4] == b"\x89PNG"

    # served like any other bundle
    rows = flights.head(3).select(c for c in config.columns if c in flights.columns).to_dicts()
    for row in rows:
        row["time_hour"] = row["time_hour"].isoformat()
    with running_server(str(store)) as (url, _):
        reply = httpx.post(f"{url}/v1/models/flights:predict", json={"instances": rows}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["model_version"] == "v2" and len(reply.json()["predictions"]) == 3


def test_a_budget_that_cannot_be_met_leaves_the_parent_untouched_and_says_why(
    store_copy: tuple[Path, Config],
) -> None:
    store, config = store_copy
    before = tree_digest(store)
    tight = shrink_options(config, target_size_kb=0.05, methods=["prune"])
    result = run_shrink(store / "flights", tight)
    assert result.bundle is None
    assert "misses its target" in (result.reason or "") and "0.05 KB" in (result.reason or "")
    assert tree_digest(store) == before  # no version, no alias change, no file touched
    assert json.loads((result.folder / "shrink.json").read_text())["written"] is False

    impossible = shrink_options(config, max_metric_drop=0.0, methods=["distill"])
    impossible = parse_config(
        {
            **impossible.model_dump(mode="json"),
            "shrink": {**impossible.shrink.model_dump(), "distill": {"student": [1], "epochs": 1}},
        }
    )
    result = run_shrink(store / "flights", impossible)
    assert result.bundle is None and result.reason is not None
    assert result.reason.startswith("no step kept roc_auc") and "fell" in result.reason
    assert tree_digest(store) == before


def test_the_cli_shrinks_and_exits_1_when_the_budget_cannot_be_met(store_copy: tuple[Path, Config]) -> None:
    store, config = store_copy
    config_file = store.parent / "leanml.yaml"
    config_file.write_text(json.dumps(config.model_dump(mode="json")))  # JSON is YAML
    model = str(store / "flights")
    args = [
        "shrink",
        model,
        "--config",
        str(config_file),
        "--methods",
        "prune",
        "--set",
        "shrink.prune.max_steps=1",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "bundle flights v2 (parent v1)" in result.output and "report.html" in result.output

    result = runner.invoke(app, [*args, "--target-latency-us", "0.001"])
    assert result.exit_code == 1
    assert "no model written" in result.output and "latency" in result.output
    assert ModelStore(store).versions("flights") == ["v1", "v2"]

    result = runner.invoke(app, [*args, "--methods", "distill,squeeze"])
    assert result.exit_code == 2 and "shrink.methods" in result.output and "Traceback" not in result.output


def test_the_python_api_takes_the_bundled_config(store_copy: tuple[Path, Config]) -> None:
    store, _ = store_copy
    # the bundled config names the fixture's workdir; the new version goes to the store the parent is in
    result = leanml.shrink(store / "flights", methods=["prune"], max_metric_drop=0.05)
    assert result.bundle is not None and result.bundle.path.parent.parent == store


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"metric": "rmse"}, "shrink.metric: 'rmse' is not a metric of a binary task"),
        ({"methods": []}, "shrink.methods"),
        ({"max_metric_drop": -1}, "shrink.max_metric_drop"),
        ({"prune": {"step": 1.5}}, "shrink.prune.step"),
    ],
)
def test_bad_shrink_settings_name_the_key(
    store_copy: tuple[Path, Config], setting: dict[str, Any], message: str
) -> None:
    store, config = store_copy
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        raw = config.model_dump(mode="json")
        run_shrink(store / "flights", parse_config({**raw, "shrink": {**raw["shrink"], **setting}}))


def test_data_prepared_with_other_preprocessing_is_refused(store_copy: tuple[Path, Config]) -> None:
    store, config = store_copy
    raw = config.model_dump(mode="json")
    raw["columns"] = {**raw["columns"], "distance": {"type": "numeric", "scale": "minmax"}}
    with pytest.raises(StateError, match="not made with the preprocessing of this bundle"):
        run_shrink(store / "flights", parse_config(raw))


@pytest.mark.parametrize(
    ("loader", "target", "task", "metric"),
    [("load_wine", "target", "multiclass", "accuracy"), ("load_diabetes", "target", "regression", "rmse")],
)
def test_multiclass_and_regression_models_shrink(
    loader: str, target: str, task: str, metric: str, tmp_path: Path
) -> None:
    from sklearn import datasets

    frame = pl.from_pandas(getattr(datasets, loader)(as_frame=True).frame)
    frame = frame.with_columns(pl.col(target).cast(pl.Utf8) if task == "multiclass" else pl.col(target))
    frame.write_parquet(tmp_path / "data.parquet")
    config = parse_config(
        {
            "name": "small",
            "data": {"train": str(tmp_path / "data.parquet"), "split": {"validation": 0.2, "test": 0.2}},
            "target": target,
            "task": task,
            "columns": {c: {"type": "numeric"} for c in frame.columns if c != target},
            "model": {"arch": "mlp", "hidden": [128, 64], "dropout": 0.0},
            "train": {"epochs": 40, "batch_size": 32, "lr": 0.003},
            "shrink": {
                "methods": ["distill", "quantize"],
                "max_metric_drop": 0.1,
                "distill": {"student": [8], "epochs": 60, "batch_size": 32, "lr": 0.01},
                "latency_runs": 50,
            },
            "workdir": str(tmp_path / "runs"),
            "store": str(tmp_path / "models"),
        }
    )
    leanml.train(config)
    result = run_shrink(tmp_path / "models" / "small", config)
    assert result.metric == metric
    distilled = next(s for s in result.steps if s.step == "distill")
    assert distilled.model == "mlp [8]"
    assert distilled.decision == "kept", distilled.why
    assert result.bundle is not None
    shrunk = load_bundle(result.bundle.path)
    predictions = shrunk.predict(frame.drop(target).head(5))
    assert predictions.height == 5 and predictions["prediction"].null_count() == 0
    if metric == "accuracy":  # ~36 validation rows: one row is ~2.8 points, more than a 1-point budget
        strict = shrink_options(config, max_metric_drop=0.01)
        refused = run_shrink(tmp_path / "models" / "small", strict)
        assert refused.bundle is None and refused.reason is not None
        assert "validation rows moves accuracy by" in refused.reason
        assert "data.split.validation (at least 100 rows)" in refused.reason
        assert [s.step for s in refused.steps] == ["parent"]  # nothing was trained


def test_training_rows_larger_than_the_memory_budget_are_streamed(store_copy: tuple[Path, Config]) -> None:
    store, config = store_copy
    raw = config.model_dump(mode="json")
    raw["train"] = {**raw["train"], "memory_budget_mb": 0.05}  # the 8,000 training rows take ~3 MB
    raw["shrink"] = {**raw["shrink"], "methods": ["distill"], "distill": {"student": [8], "epochs": 1}}
    streamed = parse_config(raw)
    result = run_shrink(store / "flights", streamed)
    distilled = next(s for s in result.steps if s.step == "distill")
    assert distilled.model == "mlp [8]" and distilled.measurement.metrics["roc_auc"] > 0.6


def test_tune_does_not_take_a_shrunk_version_for_the_trained_config(
    teacher_store: dict[str, Any], tmp_path: Path
) -> None:
    from leanml.tuning.stage import bundled_from

    raw = teacher_store["config"].model_dump(mode="json")
    raw.update(store=str(tmp_path / "models"), workdir=str(tmp_path / "runs"))
    raw["model"] = {"arch": "mlp", "hidden": [16], "dropout": 0.0}
    raw["train"] = {**raw["train"], "epochs": 1}
    config = parse_config(raw)
    leanml.train(config)
    found = bundled_from(config)
    assert found is not None and found[0].version == "v1"
    quick = shrink_options(config, methods=["prune"], max_metric_drop=0.05)
    assert run_shrink(tmp_path / "models" / "flights", quick).bundle is not None
    assert bundled_from(config) is None  # latest is now the shrunk v2: tune must train the config itself


def test_a_budget_below_the_validation_noise_is_refused_unless_the_noise_is_accepted(
    store_copy: tuple[Path, Config],
) -> None:
    store, config = store_copy
    before = tree_digest(store)
    fine = shrink_options(config, max_metric_drop=0.0005, methods=["distill"])  # 0.05 AUC points
    result = run_shrink(store / "flights", fine)
    assert result.bundle is None and result.reason is not None
    assert "which these rows cannot verify" in result.reason and "validation rows" in result.reason
    assert all(s.decision != "kept" for s in result.steps if s.step == "distill")
    assert tree_digest(store) == before

    accepted = parse_config(
        {**fine.model_dump(mode="json"), "shrink": {**fine.shrink.model_dump(), "margin_se": 0.0}}
    )
    result = run_shrink(store / "flights", accepted)
    assert "cannot verify" not in (result.reason or "")
    assert all("cannot verify" not in s.why for s in result.steps)
