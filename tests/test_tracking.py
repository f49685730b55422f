"""MLflow tracking of train, tune and shrink runs (``tracking: {mlflow: ...}``), and nothing without it.

Creating an MLflow SQLite store runs its migrations (seconds), so one empty store is made per module and
copied wherever a test needs one. A module-wide tracked training run on breast_cancer (569 rows) feeds the
train and shrink checks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl
import pytest
from sklearn import datasets

import leanml
from leanml.config import parse_config
from leanml.errors import ConfigError
from leanml.tracking import tracked_run, tracking_uri
from leanml.training.stage import TrainOutcome, train_and_bundle

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from the tests
MlflowClient = pytest.importorskip("mlflow").MlflowClient


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with its tables and no experiment."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # SQLAlchemy's, inside MLflow
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """breast_cancer with four of its features (every column costs a histogram in the prepare report)."""
    frame = pl.from_pandas(datasets.load_breast_cancer(as_frame=True).frame)
    frame = frame.select("mean radius", "mean texture", "worst area", "worst concave points", "target")
    path = tmp_path_factory.mktemp("bc") / "bc.parquet"
    frame.rename({c: c.replace(" ", "_") for c in frame.columns}).write_parquet(path)
    return path


def bc_config(data: Path, root: Path, tracking: Any, **sections: Any) -> Any:
    """A tiny MLP on breast_cancer with ``tracking.mlflow`` set to ``tracking``."""
    columns = pl.read_parquet_schema(data)
    return parse_config(
        {
            "name": "bc",
            "data": {"train": str(data), "split": {"validation": 0.25, "test": 0.25}},
            "target": "target",
            "columns": {c: {"type": "numeric"} for c in columns if c != "target"},
            "model": {"arch": "mlp", "hidden": [8], "dropout": 0.0},
            "train": {"optimizer": "adam", "lr": 0.01, "batch_size": 64, "epochs": 2},
            "tracking": {"mlflow": tracking},
            "workdir": str(root / "runs"),
            "store": str(root / "models"),
            **sections,
        }
    )


@pytest.fixture(scope="module")
def tracked_training(
    breast_cancer: Path, empty_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, TrainOutcome, MlflowClient]:
    """``tracking: {mlflow: true}``: a training run logged to the local store under WORKDIR/NAME/mlruns."""
    root = tmp_path_factory.mktemp("tracked")
    config = bc_config(breast_cancer, root, True)
    uri, folder = tracking_uri(config)
    assert folder == (root / "runs" / "bc" / "mlruns").resolve() and uri.startswith("sqlite:///")
    folder.mkdir(parents=True)
    shutil.copy(empty_store, folder / "mlflow.db")
    outcome = train_and_bundle(config)
    return config, outcome, MlflowClient(tracking_uri=uri)


def runs_of(client: MlflowClient, stage: str) -> list[Any]:
    experiment = client.get_experiment_by_name("bc")
    found = client.search_runs([experiment.experiment_id], filter_string=f"tags.`leanml.stage` = '{stage}'")
    return sorted(found, key=lambda run: run.info.run_name)


def artifacts(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    return {Path(item.path).name for item in client.list_artifacts(run_id, folder)}


def test_a_training_run_logs_the_config_every_epoch_the_report_and_a_loadable_bundle(
    tracked_training: tuple[Any, TrainOutcome, MlflowClient],
) -> None:
    config, outcome, client = tracked_training
    (run,) = runs_of(client, "train")
    assert run.info.status == "FINISHED" and run.info.run_name == "train bc"
    params = run.data.params
    assert params["train.lr"] == "0.01" and params["model.hidden"] == "[8]"
    assert params["columns.mean_radius.type"] == "numeric" and params["tracking.mlflow"] == "True"
    for name in ("train_loss", "val_loss", "val_roc_auc", "lr"):
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in history] == [1, 2], name
    assert run.data.metrics["test/roc_auc"] == pytest.approx(outcome.result.test["roc_auc"])
    assert run.data.metrics["validation/accuracy"] == pytest.approx(outcome.result.validation["accuracy"])
    assert {"report.html", "learning_curves.png"} <= artifacts(client, run.info.run_id, "report")
    assert run.data.tags["leanml.bundle"] == f"bc@{outcome.bundle.version}"
    # the artifacts live under WORKDIR/NAME/mlruns, and the bundle there passes leanml's verified loader
    folder = config.stage_dir("mlruns").resolve() / "artifacts"
    assert run.info.artifact_uri.startswith(folder.as_uri())
    local = Path(urlparse(run.info.artifact_uri).path) / "bundle"
    assert leanml.load(str(local)).version == outcome.bundle.version


def test_a_shrink_run_logs_every_step_and_the_test_metrics(
    tracked_training: tuple[Any, TrainOutcome, MlflowClient],
) -> None:
    _, outcome, client = tracked_training
    # the bundle's own config carries tracking: the run goes to the same local store
    result = leanml.shrink(str(outcome.bundle.path), methods=["quantize"], max_metric_drop=0.05)
    (run,) = runs_of(client, "shrink")
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    expected = {"parent/roc_auc", "parent/onnx_bytes", "final/p50_batch1_us", "test/final/roc_auc"}
    assert expected <= set(metrics)
    assert metrics["parent/parameters"] == result.steps[0].measurement.parameters
    assert any(key.startswith("int8/") for key in metrics)
    assert run.data.tags["leanml.parent"] == f"bc@{outcome.bundle.version}"
    assert run.data.tags["leanml.outcome"] == (result.reason or "written")
    assert "steps.csv" in artifacts(client, run.info.run_id, "report")


def test_a_tune_run_nests_a_run_per_trial_and_the_best_training(
    breast_cancer: Path, empty_store: Path, tmp_path: Path
) -> None:
    store = tmp_path / "mlflow.db"
    shutil.copy(empty_store, store)
    tune = {"sampler": "grid", "pruner": "none", "space": {"train.lr": [0.01, 0.003]}}
    config = bc_config(breast_cancer, tmp_path, f"sqlite:///{store}", tune=tune)
    result = leanml.tune(config)
    client = MlflowClient(tracking_uri=f"sqlite:///{store}")
    (parent,) = runs_of(client, "tune")
    trials = runs_of(client, "trial")
    (best,) = runs_of(client, "train")
    assert parent.info.status == "FINISHED" and parent.data.params["tune.sampler"] == "grid"
    assert parent.info.artifact_uri.startswith((tmp_path / "artifacts").as_uri())  # beside the database
    assert parent.data.metrics["best/roc_auc"] == pytest.approx(result.best.value)
    assert {"best.yaml", "trials.csv", "report.html"} <= artifacts(client, parent.info.run_id, "report")
    assert [t.info.run_name for t in trials] == ["trial 0", "trial 1"]
    for trial in [*trials, best]:
        assert trial.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert {t.data.params["train.lr"] for t in trials} == {"0.01", "0.003"}
    for trial in trials:
        steps = client.get_metric_history(trial.info.run_id, "val_roc_auc")
        assert [m.step for m in steps] == [1, 2] and "validation/roc_auc" in trial.data.metrics
    assert best.info.run_name == f"best: trial {result.best.number}"
    assert best.data.tags["leanml.bundle"] == f"bc@{result.bundle.version}"


def test_tracking_needs_mlflow_and_a_real_uri(
    breast_cancer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"tracking.mlflow: expected true, false or a tracking URI"):
        bc_config(breast_cancer, tmp_path, " ")
    bogus = bc_config(breast_cancer, tmp_path, "bogus://host")
    with (
        pytest.raises(ConfigError, match=r"cannot open the MLflow store bogus://host"),
        tracked_run(bogus, "train"),
    ):
        pass
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    config = bc_config(breast_cancer, tmp_path, True)
    with pytest.raises(ConfigError, match=r"pip install 'leanml\[mlflow\]'"), tracked_run(config, "train"):
        pass


def test_without_tracking_nothing_imports_mlflow(
    breast_cancer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = "leanml.cli, leanml.tracking"
    script = f"import sys, {modules}; assert 'mlflow' not in sys.modules"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # a run of the train stage would fail here if it even tried to import mlflow
    monkeypatch.setitem(sys.modules, "mlflow", None)
    config = bc_config(breast_cancer, tmp_path, False, train={"epochs": 1})
    assert train_and_bundle(config).bundle.version == "v1"
