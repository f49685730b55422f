"""The training loop end to end on scikit-learn's bundled datasets, prepared by leanml."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pytest
import torch
from rich.console import Console
from sklearn.linear_model import LinearRegression, LogisticRegression

from leanml.config import parse_config
from leanml.data.prepared import PreparedData
from leanml.data.state import PreprocessState
from leanml.errors import ConfigError
from leanml.models import load_model
from leanml.training import TrainingError, predict, train_model
from leanml.training import checkpoint as checkpoint_module
from leanml.training import loop as loop_module
from leanml.training.batching import ParquetBatches, load_split, target_moments
from leanml.training.loop import DataParallel

if TYPE_CHECKING:
    from .conftest import Prepared


def _split(prepared: Prepared, name: str, task: str) -> tuple[np.ndarray, np.ndarray]:
    state = PreprocessState.load(prepared.dir / "preprocess.json")
    x, y = load_split(prepared.dir / f"{name}.parquet", state.feature_names, task)
    return x.numpy(), y.numpy()


def _history_without_time(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def _assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert torch.equal(sa[name], sb[name]), name


def test_logistic_regression_by_gradient_descent_matches_sklearn(
    breast_cancer: Prepared, tmp_path: Path
) -> None:
    x_train, y_train = _split(breast_cancer, "train", "binary")
    x_test, y_test = _split(breast_cancer, "test", "binary")
    # sklearn minimises ½‖w‖² + C·Σ loss; as a mean loss that is an L2 penalty of 1/(C·n), i.e. weight decay.
    config = breast_cancer.config(
        model={"arch": "linear"},
        train={"optimizer": "gd", "lr": 1.0, "epochs": 300, "weight_decay": 1.0 / len(x_train)},
    )
    result = train_model(config, breast_cancer.dir, tmp_path, plots=False)
    reference = LogisticRegression(C=1.0, max_iter=10_000).fit(x_train, y_train)
    assert result.task == "binary"
    assert abs(result.test["accuracy"] - reference.score(x_test, y_test)) <= 0.005
    assert result.test["roc_auc"] > 0.98


def test_same_seed_gives_bitwise_the_same_model(breast_cancer: Prepared, tmp_path: Path) -> None:
    train = {"optimizer": "adamw", "lr": 0.01, "epochs": 3, "batch_size": 32, "seed": 7, "weight_decay": 0.01}
    config = breast_cancer.config(model={"arch": "mlp", "hidden": [32, 16], "dropout": 0.3}, train=train)
    first = train_model(config, breast_cancer.dir, tmp_path / "a", plots=False)
    second = train_model(config, breast_cancer.dir, tmp_path / "b", plots=False)
    _assert_same_weights(first.model, second.model)
    assert _history_without_time(first.history) == _history_without_time(second.history)

    other = breast_cancer.config(model=config.model.model_dump(), train={**train, "seed": 8})
    third = train_model(other, breast_cancer.dir, tmp_path / "c", plots=False)
    assert not torch.equal(
        first.model.state_dict()["net.layers.0.weight"], third.model.state_dict()["net.layers.0.weight"]
    )


def test_resume_after_a_kill_ends_as_an_uninterrupted_run(
    breast_cancer: Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = breast_cancer.config(
        model={"arch": "mlp", "hidden": [32, 16], "dropout": 0.2},
        train={
            "optimizer": "adamw",
            "lr": 0.01,
            "epochs": 6,
            "batch_size": 64,
            "schedule": "cosine",
            "warmup_epochs": 1,
            "grad_clip": 1.0,
            "early_stopping": {"patience": 10, "metric": "loss"},
        },
    )
    uninterrupted = train_model(config, breast_cancer.dir, tmp_path / "full", plots=False)

    real_save = checkpoint_module.save_checkpoint

    def save_then_die(path: Path, tensors: dict, state: dict) -> Path:
        written = real_save(path, tensors, state)
        if state["epochs_done"] == 3:
            raise KeyboardInterrupt  # killed after epoch 3 was checkpointed
        return written

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_model(config, breast_cancer.dir, tmp_path / "killed", plots=False)
    monkeypatch.setattr(checkpoint_module, "save_checkpoint", real_save)

    changed = breast_cancer.config(
        model=config.model.model_dump(), train={**config.train.model_dump(), "lr": 0.02}
    )
    with pytest.raises(ConfigError, match=r"cannot resume.*train\.lr"):
        train_model(changed, breast_cancer.dir, tmp_path / "killed", resume=True, plots=False)

    resumed = train_model(config, breast_cancer.dir, tmp_path / "killed", resume=True, plots=False)
    assert len(resumed.history) == 6
    assert resumed.validation == uninterrupted.validation
    assert resumed.test == uninterrupted.test
    assert resumed.best_epoch == uninterrupted.best_epoch
    assert _history_without_time(resumed.history) == _history_without_time(uninterrupted.history)
    _assert_same_weights(resumed.model, uninterrupted.model)

    # Resuming a finished run trains nothing more and gives the same model again.
    again = train_model(config, breast_cancer.dir, tmp_path / "killed", resume=True, plots=False)
    _assert_same_weights(again.model, uninterrupted.model)


def test_resume_without_a_checkpoint_starts_afresh(breast_cancer: Prepared, tmp_path: Path) -> None:
    config = breast_cancer.config(model={"arch": "linear"}, train={"epochs": 2, "lr": 0.05})
    fresh = train_model(config, breast_cancer.dir, tmp_path / "a", plots=False)
    resumed = train_model(config, breast_cancer.dir, tmp_path / "b", resume=True, plots=False)
    _assert_same_weights(fresh.model, resumed.model)


@pytest.mark.parametrize(
    "train",
    [
        {"optimizer": "gd", "lr": 0.5},
        {"optimizer": "sgd", "lr": 0.01, "batch_size": 1},
        {"optimizer": "sgd", "lr": 0.05, "batch_size": 32},
        {
            "optimizer": "momentum",
            "lr": 0.02,
            "batch_size": 32,
            "nesterov": True,
            "schedule": "step",
            "step_size": 1,
        },
        {"optimizer": "adam", "lr": 0.01, "batch_size": 32, "weight_decay": 0.001},
        {"optimizer": "adamw", "lr": 0.01, "batch_size": 32, "weight_decay": 0.01, "schedule": "plateau"},
    ],
    ids=lambda t: f"{t['optimizer']}-{t.get('batch_size', 'full')}",
)
def test_every_optimizer_trains(breast_cancer: Prepared, tmp_path: Path, train: dict[str, Any]) -> None:
    config = breast_cancer.config(
        model={"arch": "mlp", "hidden": [16], "norm": "layer"}, train={**train, "epochs": 3}
    )
    result = train_model(config, breast_cancer.dir, tmp_path, plots=False)
    losses = [record["train_loss"] for record in result.history]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert result.test["accuracy"] > 0.85


def test_early_stopping_stops_and_restores_the_best_epoch(breast_cancer: Prepared, tmp_path: Path) -> None:
    config = breast_cancer.config(
        model={"arch": "mlp", "hidden": [64, 64], "dropout": 0.0},
        train={
            "optimizer": "adam",
            "lr": 0.03,
            "epochs": 200,
            "batch_size": 16,
            "early_stopping": {"patience": 3, "metric": "loss"},
        },
    )
    result = train_model(config, breast_cancer.dir, tmp_path, plots=False)
    val_losses = [record["val_loss"] for record in result.history]
    assert result.stopped_early and len(val_losses) < 200
    assert result.best_epoch == int(np.argmin(val_losses)) + 1
    assert len(val_losses) == result.best_epoch + 3
    assert result.validation == result.history[result.best_epoch - 1]["val_metrics"]
    saved, _ = load_model(tmp_path)
    _assert_same_weights(saved, result.model)


def test_multiclass_on_iris(iris: Prepared, tmp_path: Path) -> None:
    config = iris.config(
        model={"arch": "resmlp", "hidden": [32], "blocks": 2, "norm": "batch"},
        train={"lr": 0.01, "epochs": 30, "batch_size": 16},
    )
    result = train_model(config, iris.dir, tmp_path)
    assert result.task == "multiclass" and result.spec["n_outputs"] == 3
    assert result.test["accuracy"] >= 0.85
    assert {p.name for p in result.plots} == {"learning_curves.png", "confusion_matrix.png", "roc.png"}


def test_regression_learns_in_the_targets_units(diabetes: Prepared, tmp_path: Path) -> None:
    x_train, y_train = _split(diabetes, "train", "regression")
    x_test, y_test = _split(diabetes, "test", "regression")
    config = diabetes.config(model={"arch": "linear"}, train={"optimizer": "gd", "lr": 0.2, "epochs": 200})
    result = train_model(config, diabetes.dir, tmp_path)
    reference = LinearRegression().fit(x_train, y_train)
    assert result.test["r2"] == pytest.approx(reference.score(x_test, y_test), abs=0.01)
    predictions = predict(result.model, x_test)
    assert predictions.mean() == pytest.approx(y_test.mean(), rel=0.1)  # original units, not z-scores
    assert float(result.model.state_dict()["target_scale"][0]) == pytest.approx(y_train.std(), rel=1e-4)
    assert {p.name for p in result.plots} == {"learning_curves.png", "residuals.png"}


def test_data_larger_than_the_budget_is_streamed(
    breast_cancer: Prepared, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = []
    real_open = loop_module.open_split

    def recording_open(*args: Any, **kwargs: Any) -> Any:
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(loop_module, "open_split", recording_open)
    config = breast_cancer.config(
        model={"arch": "mlp", "hidden": [16]},
        train={"lr": 0.01, "epochs": 5, "batch_size": 32, "memory_budget_mb": 0.01},
    )
    result = train_model(config, breast_cancer.dir, tmp_path, plots=False)
    assert all(isinstance(batches, ParquetBatches) for batches in opened)
    assert result.test["accuracy"] > 0.9


def test_outputs_on_disk_and_the_progress_display(breast_cancer: Prepared, tmp_path: Path) -> None:
    config = breast_cancer.config(model={"arch": "mlp", "hidden": [8]}, train={"epochs": 2, "lr": 0.01})
    out = io.StringIO()
    result = train_model(config, breast_cancer.dir, tmp_path, console=Console(file=out, width=200))
    printed = out.getvalue()
    assert "epoch   1/2" in printed and "val_loss" in printed and "roc_auc" in printed
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"] == result.test and len(metrics["history"]) == 2
    assert (tmp_path / "checkpoints" / "last.safetensors").is_file()
    for plot in result.plots:
        assert plot.read_bytes().startswith(b"\x89PNG")
    loaded, spec = load_model(tmp_path)
    assert spec == result.spec
    x_test, _ = _split(breast_cancer, "test", "binary")
    np.testing.assert_array_equal(predict(loaded, x_test), predict(result.model, x_test))


@pytest.mark.parametrize(
    "section,raw,message",
    [
        ("model", {"arch": "transformer"}, "model.arch: 'transformer' is not one of linear, mlp, resmlp"),
        ("model", {"activation": "sigmoid"}, "model.activation: 'sigmoid' is not one of"),
        ("model", {"dropout": 1.5}, "model.dropout"),
        ("train", {"optimizer": "rmsprop"}, "train.optimizer: 'rmsprop' is not one of gd, sgd, momentum"),
        ("train", {"lr": 0}, "train.lr"),
        ("train", {"batch_size": 0}, "train.batch_size"),
        ("train", {"schedule": "linear"}, "train.schedule: 'linear' is not one of"),
        ("train", {"early_stopping": {"metric": "auc"}}, "train.early_stopping.metric: 'auc' is not one of"),
        ("train", {"early_stopping": {"patience": 0}}, "train.early_stopping.patience"),
        ("train", {"nesterov": True, "optimizer": "adam"}, "nesterov applies to optimizer 'momentum' only"),
        ("train", {"learning_rate": 0.1}, "train.learning_rate: unknown key; allowed keys: optimizer, lr"),
        ("train", {"device": "tpu"}, "train.device: 'tpu' is not one of cpu, cuda, auto"),
    ],
)
def test_bad_config_values_name_the_key(section: str, raw: dict[str, Any], message: str) -> None:
    base = {"name": "t", "data": {"train": "x.csv"}, "target": "y", "columns": {"a": {"type": "numeric"}}}
    with pytest.raises(ConfigError) as error:
        parse_config({**base, section: raw})
    assert message in str(error.value)


def test_config_checks_that_need_the_data(breast_cancer: Prepared, tmp_path: Path) -> None:
    wrong_metric = breast_cancer.config(train={"early_stopping": {"metric": "rmse"}})
    with pytest.raises(
        ConfigError, match=r"train\.early_stopping\.metric: 'rmse' is not a metric of a binary task"
    ):
        train_model(wrong_metric, breast_cancer.dir, tmp_path, plots=False)
    lone_rows = breast_cancer.config(model={"norm": "batch"}, train={"optimizer": "sgd", "batch_size": 1})
    with pytest.raises(ConfigError, match=r"model\.norm: 'batch' needs train\.batch_size of at least 2"):
        train_model(lone_rows, breast_cancer.dir, tmp_path, plots=False)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"train\.device: 'cuda'"):
            train_model(
                breast_cancer.config(train={"device": "cuda"}), breast_cancer.dir, tmp_path, plots=False
            )


def test_a_diverging_loss_is_reported(diabetes: Prepared, tmp_path: Path) -> None:
    config = diabetes.config(
        model={"arch": "mlp", "hidden": [8]}, train={"optimizer": "sgd", "lr": 1.0e6, "epochs": 3}
    )
    with pytest.raises(TrainingError, match=r"lower train\.lr"):
        train_model(config, diabetes.dir, tmp_path, plots=False)


def test_a_data_parallel_replica_uses_the_whole_splits_statistics(diabetes: Prepared, tmp_path: Path) -> None:
    """``parallel`` (one Ray Train worker): gradients go through its hook before every step, and the
    target scaling and the run's identity come from the whole data, not from the replica's shard."""
    whole = PreparedData(diabetes.dir)
    shard = PreparedData(tmp_path / "shard")
    shard.folder.mkdir()
    shutil.copy(whole.state_path, shard.state_path)
    pl.scan_parquet(whole.split("train")).head(100).sink_parquet(shard.split_file("train"))
    for split in ("validation", "test"):
        shutil.copy(whole.split_file(split), shard.split_file(split))
    calls: list[int] = []
    losses: list[float] = []

    def mean(value: float) -> float:  # the mean over replicas: here a fixed value, to see it used
        losses.append(value)
        return 0.5

    parallel = DataParallel(whole=whole, average_gradients=lambda model: calls.append(1), mean=mean)
    train = {"optimizer": "adamw", "batch_size": 50, "epochs": 2}
    config = diabetes.config(model={"arch": "linear"}, train=train)
    result = train_model(config, shard, tmp_path / "out", plots=False, parallel=parallel)

    assert len(calls) == 2 * 2  # 100 rows in batches of 50, two epochs
    assert [h["train_loss"] for h in result.history] == [0.5, 0.5] and len(losses) == 2
    assert all(math.isfinite(v) and v != 0.5 for v in losses)  # the replica's own mean losses went in
    mean, std = target_moments(whole.split("train"))
    assert float(result.model.state_dict()["target_scale"][0]) == pytest.approx(std)
    assert float(result.model.state_dict()["target_shift"][0]) == pytest.approx(mean)
    saved = checkpoint_module.load_checkpoint(tmp_path / "out" / loop_module.CHECKPOINT_PATH)
    assert saved is not None
    assert saved.state["run"]["data"] == loop_module._run_identity(config, whole, result.spec)["data"]
