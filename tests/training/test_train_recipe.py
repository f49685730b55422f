"""Issue 13's training recipe: ensembles and embeddings in the loop, label smoothing, best-epoch restore."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.nn.functional as F

from leanml.config import parse_config
from leanml.data.prepare import prepare
from leanml.data.state import PreprocessState
from leanml.errors import ConfigError
from leanml.training import train_model
from leanml.training.loop import make_loss, numeric_features, smooth_labels

from .conftest import Prepared

FAST = {"epochs": 3, "batch_size": 64, "lr": 3e-3}


def test_tabm_with_embeddings_trains_and_learns(breast_cancer: Prepared, tmp_path: Path) -> None:
    model = {"arch": "tabm", "members": 4, "hidden": [32, 32], "embedding": "periodic", "embedding_dim": 4}
    result = train_model(
        breast_cancer.config(model=model, train=FAST), breast_cancer.dir, tmp_path, plots=False
    )
    assert result.spec["embedding"]["features"] == list(range(30))  # every breast-cancer input is numeric
    assert result.test["roc_auc"] > 0.95


def test_regression_tabm_answers_in_the_targets_units(diabetes: Prepared, tmp_path: Path) -> None:
    model = {"arch": "tabm", "members": 4, "hidden": [32], "embedding": "periodic"}
    train = {**FAST, "epochs": 8, "lr": 1e-2}
    result = train_model(diabetes.config(model=model, train=train), diabetes.dir, tmp_path, plots=False)
    assert result.test["rmse"] < 70  # the target's standard deviation is about 77


def test_restore_best_keeps_the_best_epoch_without_early_stopping(
    breast_cancer: Prepared, tmp_path: Path
) -> None:
    train = {**FAST, "epochs": 6, "lr": 0.05, "restore_best": True}
    result = train_model(
        breast_cancer.config(model={"hidden": [16]}, train=train), breast_cancer.dir, tmp_path
    )
    best = max(record["val_metrics"]["roc_auc"] for record in result.history)
    assert result.best_epoch is not None
    assert result.validation["roc_auc"] == pytest.approx(best)
    assert result.history[result.best_epoch - 1]["val_metrics"]["roc_auc"] == pytest.approx(best)


def test_label_smoothing_trains_a_multiclass_model(iris: Prepared, tmp_path: Path) -> None:
    train = {**FAST, "epochs": 20, "lr": 1e-2, "label_smoothing": 0.1}
    result = train_model(iris.config(model={"hidden": [16]}, train=train), iris.dir, tmp_path, plots=False)
    assert result.monitor == "accuracy" and result.test["accuracy"] > 0.8


@pytest.mark.parametrize(
    "fixture,train,message",
    [
        ("breast_cancer", {"label_smoothing": 0.1}, "monitored metric 'roc_auc'"),
        ("iris", {"label_smoothing": 0.1, "early_stopping": {"metric": "log_loss"}}, "'log_loss'"),
        ("diabetes", {"label_smoothing": 0.1}, "classification only"),
    ],
)
def test_label_smoothing_is_refused_where_it_would_mislead(
    fixture: str, train: dict, message: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    prepared: Prepared = request.getfixturevalue(fixture)
    with pytest.raises(ConfigError, match=f"train.label_smoothing: .*{message}"):
        train_model(prepared.config(train={**FAST, **train}), prepared.dir, tmp_path, plots=False)


def test_smoothed_targets() -> None:
    output = torch.tensor([[2.0], [-1.0]])
    y = torch.tensor([1.0, 0.0])
    smoothed = smooth_labels(make_loss("binary"), "binary", 0.2, 2)(output, y)
    expected = F.binary_cross_entropy_with_logits(output[:, 0], torch.tensor([0.9, 0.1]))
    torch.testing.assert_close(smoothed, expected)
    logits = torch.randn(4, 3)
    classes = torch.tensor([0, 2, 1, 2])
    smoothed = smooth_labels(make_loss("multiclass"), "multiclass", 0.3, 3)(logits, classes)
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, classes, label_smoothing=0.3))
    assert smooth_labels(make_loss("binary"), "binary", 0.0, 2) is not None


def test_an_ensembles_loss_is_the_mean_of_its_members_losses() -> None:
    members = torch.randn(5, 3, 4)
    y = torch.tensor([0, 3, 1, 2, 2])
    expected = torch.stack([F.cross_entropy(members[:, i], y) for i in range(3)]).mean()
    torch.testing.assert_close(make_loss("multiclass")(members, y), expected)
    values = torch.randn(5, 3, 1)
    target = torch.randn(5)
    expected = torch.stack([F.mse_loss(values[:, i, 0], target) for i in range(3)]).mean() / 4.0
    torch.testing.assert_close(make_loss("regression", target_std=2.0)(values, target), expected)


def test_numeric_features_skip_one_hots_and_missing_flags(tmp_path: Path) -> None:
    start = datetime(2024, 1, 1)
    frame = pl.DataFrame(
        {
            "size": [1.0, None, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0] * 4,
            "colour": ["red", "blue", "red", None, "green", "blue", "red", "green", "blue", "red"] * 4,
            "when": [start + timedelta(hours=7 * i) for i in range(40)],
            "y": [0, 1] * 20,
        }
    )
    frame.write_parquet(tmp_path / "data.parquet")
    raw = {
        "name": "t",
        "data": {"train": str(tmp_path / "data.parquet")},
        "target": "y",
        "columns": {
            "size": {"type": "numeric", "missing_indicator": True},
            "colour": {"type": "categorical", "missing_indicator": True},
            "when": {"type": "datetime", "parts": ["hour", "dayofweek"]},
        },
    }
    prepare(parse_config(raw), out_dir=tmp_path / "prepared")
    state = PreprocessState.load(tmp_path / "prepared" / "preprocess.json")
    names = state.feature_names
    chosen = [names[i] for i in numeric_features(state)]
    assert chosen == ["size", "when__epoch", "when__hour", "when__dayofweek"], names


def test_periodic_embeddings_leave_the_ple_bins_as_they_are(tmp_path: Path) -> None:
    frame = pl.DataFrame({"size": [float(i % 17) for i in range(60)], "y": [0, 1] * 30})
    frame.write_parquet(tmp_path / "data.parquet")
    raw = {
        "name": "t",
        "data": {"train": str(tmp_path / "data.parquet")},
        "target": "y",
        "columns": {"size": {"type": "numeric", "encode": "ple", "bins": 4, "missing_indicator": True}},
    }
    prepare(parse_config(raw), out_dir=tmp_path / "prepared")
    state = PreprocessState.load(tmp_path / "prepared" / "preprocess.json")
    assert state.feature_names[:2] == ["size", "size__ple0"]
    assert [state.feature_names[i] for i in numeric_features(state)] == ["size"]
