"""The metrics equal scikit-learn's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from leanml.metrics import (
    MAIN_METRIC,
    accuracy,
    confusion_matrix,
    evaluate,
    f1,
    is_improvement,
    log_loss,
    mae,
    r2,
    rmse,
    roc_auc,
    roc_curve,
    task_metrics,
)


def _binary_case(seed: int, rows: int = 300, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    p = 1 / (1 + np.exp(-(rng.normal(size=rows) + 1.5 * (y - 0.5))))
    if ties:
        p = np.round(p, 1)  # many equal scores
    return y, p


def _multiclass_case(seed: int, rows: int = 300, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, rows)
    logits = rng.normal(size=(rows, k))
    logits[np.arange(rows), y] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_binary_metrics_equal_sklearn(seed: int, ties: bool) -> None:
    y, p = _binary_case(seed, ties=ties)
    labels = (p >= 0.5).astype(int)
    assert accuracy(y, labels) == pytest.approx(skm.accuracy_score(y, labels), abs=1e-12)
    assert f1(y, labels) == pytest.approx(skm.f1_score(y, labels), abs=1e-12)
    assert roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p), abs=1e-12)
    fpr, tpr, thresholds = roc_curve(y, p)
    sk_fpr, sk_tpr, sk_thresholds = skm.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thresholds[1:], sk_thresholds[1:])


@pytest.mark.parametrize("seed", range(5))
def test_multiclass_metrics_equal_sklearn(seed: int) -> None:
    y, p = _multiclass_case(seed)
    labels = p.argmax(axis=1)
    assert accuracy(y, labels) == pytest.approx(skm.accuracy_score(y, labels), abs=1e-12)
    assert f1(y, labels, average="macro") == pytest.approx(
        skm.f1_score(y, labels, average="macro"), abs=1e-12
    )
    assert roc_auc(y, p) == pytest.approx(
        skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12
    )
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p), abs=1e-12)
    np.testing.assert_array_equal(
        confusion_matrix(y, labels, 4), skm.confusion_matrix(y, labels, labels=range(4))
    )


def test_f1_macro_with_a_class_never_predicted_or_present() -> None:
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 3])  # class 2 never predicted, class 3 never true
    with np.errstate(all="ignore"):
        expected = skm.f1_score(y, pred, average="macro", zero_division=0.0)
    assert f1(y, pred, average="macro") == pytest.approx(expected)


def test_log_loss_clips_certain_mistakes() -> None:
    y = np.array([1, 0, 1])
    p = np.array([0.0, 1.0, 1.0])
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p))
    assert math.isfinite(log_loss(y, p))


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(100, 30, 500)
    pred = y + rng.normal(0, 10, 500)
    assert rmse(y, pred) == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)), rel=1e-12)
    assert mae(y, pred) == pytest.approx(skm.mean_absolute_error(y, pred), rel=1e-12)
    assert r2(y, pred) == pytest.approx(skm.r2_score(y, pred), rel=1e-12)


def test_r2_of_a_constant_target_follows_sklearn() -> None:
    y = np.full(5, 3.0)
    assert r2(y, y) == skm.r2_score(y, y) == 1.0
    assert r2(y, y + 1) == skm.r2_score(y, y + 1) == 0.0


def test_auc_is_nan_when_only_one_class_is_present() -> None:
    assert math.isnan(roc_auc(np.ones(4, dtype=int), np.linspace(0, 1, 4)))


def test_evaluate_reports_every_metric_of_the_task() -> None:
    y, p = _binary_case(0)
    assert list(evaluate("binary", y, p)) == list(task_metrics("binary"))
    y, p = _multiclass_case(0)
    assert list(evaluate("multiclass", y, p)) == list(task_metrics("multiclass"))
    assert list(evaluate("regression", np.arange(3.0), np.arange(3.0))) == ["rmse", "mae", "r2"]
    assert evaluate("binary", np.zeros(0), np.zeros(0)) == {}
    for task, metric in MAIN_METRIC.items():
        assert metric in task_metrics(task)


def test_improvement_respects_direction_and_min_delta() -> None:
    assert is_improvement("roc_auc", 0.8, None)
    assert is_improvement("roc_auc", 0.81, 0.8)
    assert not is_improvement("roc_auc", 0.805, 0.8, min_delta=0.01)
    assert is_improvement("rmse", 1.0, 2.0)
    assert not is_improvement("loss", 2.0, 1.0)
    assert not is_improvement("accuracy", math.nan, 0.5)


def test_classify_gives_labels_and_probability_matrix() -> None:
    from leanml.metrics import classify

    classes, probabilities = classify("binary", np.array([0.2, 0.5, 0.9]))
    assert classes.tolist() == [0, 1, 1]
    np.testing.assert_allclose(probabilities, [[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]])
    classes, probabilities = classify("multiclass", np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]))
    assert classes.tolist() == [1, 0] and probabilities.shape == (2, 3)
    with pytest.raises(ValueError, match="regression"):
        classify("regression", np.zeros(2))


def test_one_metric_rule_names_the_key() -> None:
    from leanml.errors import ConfigError
    from leanml.metrics import check_metric, metric_problem

    assert metric_problem("binary", "roc_auc", "tune.metric") is None
    assert metric_problem("regression", "loss", "train.early_stopping.metric", also=("loss",)) is None
    problem = metric_problem("regression", "roc_auc", "shrink.metric")
    assert problem is not None
    assert problem.startswith("shrink.metric: 'roc_auc' is not a metric of a regression")
    with pytest.raises(ConfigError, match=r"tune\.metric: 'rmse' is not a metric of a binary task; use one"):
        check_metric("binary", "rmse", "tune.metric")
