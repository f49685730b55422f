"""Metrics of the three tasks, on numpy arrays (no framework needed to score predictions).

Model *outputs* come in one shape per task, the shape :func:`leanml.models.predict.predict` returns:

* ``binary``: ``[n]`` probability of class index 1 (the positive class); label = probability ≥ 0.5;
* ``multiclass``: ``[n, K]`` class probabilities; label = the most probable class;
* ``regression``: ``[n]`` predicted values.

Targets are class indices (classification) or numbers (regression). Definitions follow scikit-learn's
(``tests/test_metrics.py`` checks them against it): F1 is of the positive class for binary and the
unweighted mean over classes for multiclass; ROC AUC is one-vs-rest macro for multiclass; log loss clips
probabilities to ``[eps, 1 - eps]``.
"""

from __future__ import annotations

import math

import numpy as np

from leanml.errors import ConfigError

CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")
MAIN_METRIC = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
"""The metric a task is judged by by default (early stopping, plateau schedule, best epoch)."""
HIGHER_IS_BETTER = {
    "accuracy": True,
    "f1": True,
    "roc_auc": True,
    "log_loss": False,
    "rmse": False,
    "mae": False,
    "r2": True,
    "loss": False,
}
EPS = float(np.finfo(np.float64).eps)


def task_metrics(task: str) -> tuple[str, ...]:
    """Names of the metrics reported for ``task``."""
    if task == "regression":
        return REGRESSION_METRICS
    if task in ("binary", "multiclass"):
        return CLASSIFICATION_METRICS
    raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")


def metric_value(task: str, name: str, y_true: np.ndarray, output: np.ndarray) -> float:
    """One metric of ``task`` (as :func:`evaluate` computes it), without computing the others."""
    if name in ("accuracy", "f1"):
        labels = predicted_classes(task, output)
        if name == "accuracy":
            return accuracy(y_true, labels)
        return f1(y_true, labels, average="binary" if task == "binary" else "macro")
    functions = {"roc_auc": roc_auc, "log_loss": log_loss, "rmse": rmse, "mae": mae, "r2": r2}
    if name not in functions or name not in task_metrics(task):
        raise ValueError(f"{name!r} is not a metric of a {task} task")
    return functions[name](y_true, output)


def evaluate(task: str, y_true: np.ndarray, output: np.ndarray) -> dict[str, float]:
    """Every metric of ``task`` for model ``output`` against ``y_true`` (see the module docstring)."""
    y_true = np.asarray(y_true)
    output = np.asarray(output, dtype=np.float64)
    if len(y_true) != len(output):
        raise ValueError(f"{len(y_true)} targets but {len(output)} predictions")
    if len(y_true) == 0:
        return {}
    if task == "regression":
        return {"rmse": rmse(y_true, output), "mae": mae(y_true, output), "r2": r2(y_true, output)}
    labels = predicted_classes(task, output)
    return {
        "accuracy": accuracy(y_true, labels),
        "f1": f1(y_true, labels, average="binary" if task == "binary" else "macro"),
        "roc_auc": roc_auc(y_true, output),
        "log_loss": log_loss(y_true, output),
    }


def predicted_classes(task: str, output: np.ndarray) -> np.ndarray:
    """Class indices from probabilities: threshold 0.5 (binary) or the most probable class."""
    output = np.asarray(output)
    if task == "binary":
        return (output >= 0.5).astype(np.int64)
    return np.argmax(output, axis=1).astype(np.int64)


def classify(task: str, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class indices and the ``[n, C]`` probability matrix from classification scores.

    ``scores`` is what a model predicts: ``[n]`` P(class 1) for binary, ``[n, K]`` for multiclass. The
    one rule from scores to answers, used by the server, ``Bundle.predict`` and the reports.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if task == "binary":
        flat = scores.reshape(-1)
        return predicted_classes(task, flat), np.stack([1.0 - flat, flat], axis=1)
    if task == "multiclass":
        return predicted_classes(task, scores), scores
    raise ValueError(f"classify needs a binary or multiclass task, got {task!r}")


def metric_problem(task: str, metric: str, key: str, also: tuple[str, ...] = ()) -> str | None:
    """Why ``metric`` (the value of config key ``key``) is not valid for ``task``, or ``None`` when it is.

    The one rule for "is this metric valid for this task", used by train, tune, its trials and shrink.
    ``also`` names further accepted values (early stopping may monitor ``loss``).
    """
    allowed = (*task_metrics(task), *also)
    if metric in allowed:
        return None
    return f"{key}: {metric!r} is not a metric of a {task} task; use one of {', '.join(allowed)}"


def check_metric(task: str, metric: str, key: str, also: tuple[str, ...] = ()) -> None:
    """Raise a :class:`~leanml.errors.ConfigError` naming ``key`` when ``metric`` does not fit ``task``."""
    problem = metric_problem(task, metric, key, also)
    if problem is not None:
        raise ConfigError(f"invalid config:\n  {problem}")


def is_improvement(metric: str, value: float, best: float | None, min_delta: float = 0.0) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta`` in the metric's direction."""
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    if HIGHER_IS_BETTER[metric]:
        return value > best + min_delta
    return value < best - min_delta


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of rows whose predicted class is the true class."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` counts: row = true class, column = predicted class."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def f1(y_true: np.ndarray, y_pred: np.ndarray, average: str = "binary") -> float:
    """F1 of class 1 (``average="binary"``) or the mean F1 over the classes present (``"macro"``).

    A class with no true and no predicted rows scores 0, as in scikit-learn.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if average == "binary":
        classes = np.array([1])
    elif average == "macro":
        classes = np.union1d(y_true, y_pred)
    else:
        raise ValueError(f"average must be 'binary' or 'macro', got {average!r}")
    scores = []
    for cls in classes:
        tp = np.sum((y_pred == cls) & (y_true == cls))
        predicted = np.sum(y_pred == cls)
        actual = np.sum(y_true == cls)
        scores.append(2.0 * tp / (predicted + actual) if predicted + actual else 0.0)
    return float(np.mean(scores))


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive rates at each distinct score threshold (highest first), and the thresholds.

    ``y_true`` is 0/1; the curve starts at (0, 0). Rates are NaN when a class is absent.
    """
    y_true = np.asarray(y_true) == 1
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="mergesort")
    score, y_sorted = score[order], y_true[order]
    # The last row of each run of equal scores: ties move the curve diagonally, not in steps.
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]
    tps = np.cumsum(y_sorted)[last]
    fps = last + 1 - tps
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] else np.full(len(fps), np.nan)
        tpr = tps / tps[-1] if tps[-1] else np.full(len(tps), np.nan)
    thresholds = np.r_[np.inf, score[last]]
    return fpr, tpr, thresholds


def roc_auc(y_true: np.ndarray, output: np.ndarray) -> float:
    """Area under the ROC curve: binary from ``[n]`` scores; multiclass one-vs-rest macro from ``[n, K]``.

    NaN when it is undefined (a single class in ``y_true``). For multiclass, classes absent from
    ``y_true`` are left out of the mean.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    output = np.asarray(output, dtype=np.float64)
    if output.ndim == 1:
        return _binary_auc(y_true, output)
    aucs = [_binary_auc((y_true == k).astype(np.int64), output[:, k]) for k in range(output.shape[1])]
    present = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(present)) if len(present) >= 2 else math.nan


def _binary_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    positives = int(np.sum(y_true == 1))
    if positives == 0 or positives == len(y_true):
        return math.nan
    fpr, tpr, _ = roc_curve(y_true, score)
    return float(np.trapezoid(tpr, fpr))


def log_loss(y_true: np.ndarray, output: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class (natural log), probabilities clipped to [eps, 1-eps]."""
    y_true = np.asarray(y_true, dtype=np.int64)
    proba = np.clip(np.asarray(output, dtype=np.float64), EPS, 1.0 - EPS)
    if proba.ndim == 1:
        picked = np.where(y_true == 1, proba, 1.0 - proba)
    else:
        proba = proba / proba.sum(axis=1, keepdims=True)
        picked = proba[np.arange(len(y_true)), y_true]
    return float(-np.mean(np.log(picked)))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    diff = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    return float(np.sqrt(np.mean(diff * diff)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    diff = np.asarray(y_pred, dtype=np.float64) - np.asarray(y_true, dtype=np.float64)
    return float(np.mean(np.abs(diff)))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination; 1.0 (perfect) or 0.0 when the target is constant, as scikit-learn."""
    y_true = np.asarray(y_true, dtype=np.float64)
    residual = float(np.sum((y_true - np.asarray(y_pred, dtype=np.float64)) ** 2))
    total = float(np.sum((y_true - y_true.mean()) ** 2))
    if total == 0.0:
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total
