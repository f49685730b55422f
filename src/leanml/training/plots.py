"""Training plots (matplotlib, Agg, no pyplot state): learning curves, confusion matrix, ROC, residuals.

Every file is written atomically (temporary file + rename) into the plots folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from leanml.figures import integer_ticks, plain_numbers, save_figure
from leanml.metrics import HIGHER_IS_BETTER, confusion_matrix, predicted_classes, roc_auc, roc_curve

MAX_SCATTER_POINTS = 20_000


def write_plots(
    task: str,
    history: Sequence[dict[str, Any]],
    y_true: np.ndarray,
    output: np.ndarray,
    class_names: Sequence[str],
    plots_dir: str | Path,
    split: str = "test",
) -> list[Path]:
    """Write every plot for ``task`` into ``plots_dir``; ``y_true``/``output`` come from ``split``."""
    plots_dir = Path(plots_dir)
    written = [plot_learning_curves(history, plots_dir / "learning_curves.png")]
    if len(y_true) == 0:
        return written
    if task == "regression":
        written.append(plot_residuals(y_true, output, plots_dir / "residuals.png", split))
        return written
    labels = predicted_classes(task, output)
    written.append(
        plot_confusion_matrix(y_true, labels, class_names, plots_dir / "confusion_matrix.png", split)
    )
    written.append(plot_roc(y_true, output, class_names, plots_dir / "roc.png", split))
    return written


def plot_learning_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write :func:`learning_curves_figure` to ``path``."""
    return save_figure(learning_curves_figure(history), path)


def learning_curves_figure(history: Sequence[dict[str, Any]]) -> Figure:
    """Train and validation loss per epoch, then the validation metrics per epoch: errors (lower is better:
    log_loss, rmse, mae) and scores (higher is better: accuracy, roc_auc, r2) on panels of their own, since
    their scales differ (an R² near 1 drawn beside an rmse of 5,000 is a flat line at 0)."""
    names = list(history[0]["val_metrics"]) if history else []
    groups = [
        (title, [n for n in names if HIGHER_IS_BETTER.get(n, False) is higher])
        for title, higher in (("Validation errors (lower is better)", False), ("Validation scores", True))
    ]
    groups = [(title, group) for title, group in groups if group]
    fig = Figure(figsize=(5.2 * (1 + len(groups)), 4.2))
    axes = np.atleast_1d(fig.subplots(1, 1 + len(groups)))
    epochs = [record["epoch"] for record in history]
    loss_ax = axes[0]
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker=".", label="train")
    if history and history[0]["val_loss"] is not None:
        loss_ax.plot(epochs, [r["val_loss"] for r in history], marker=".", label="validation")
    loss_ax.set(title="Loss", ylabel="loss")
    loss_ax.legend()
    for ax, (title, group) in zip(axes[1:], groups, strict=True):
        for name in group:
            ax.plot(epochs, [r["val_metrics"][name] for r in history], marker=".", label=name)
        ax.set(title=title)
        ax.legend()
    for ax in axes:
        ax.set_xlabel("epoch")
        integer_ticks(ax.xaxis)
        plain_numbers(ax.yaxis)
        ax.grid(alpha=0.3)
    return fig


def plot_confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str], path: Path, split: str = "test"
) -> Path:
    """Counts of true (rows) against predicted (columns) classes."""
    n = len(class_names)
    counts = confusion_matrix(y_true, y_pred, n)
    size = min(3.5 + 0.45 * n, 14)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.subplots()
    image = ax.imshow(counts, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xticklabels=class_names,
        yticklabels=class_names,
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion matrix ({split})",
    )
    if n <= 20:
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(n):
            for j in range(n):
                color = "white" if counts[i, j] > threshold else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    return save_figure(fig, path)


def plot_roc(
    y_true: np.ndarray, output: np.ndarray, class_names: Sequence[str], path: Path, split: str = "test"
) -> Path:
    """ROC curve: of class index 1 (binary) or one-vs-rest per class (multiclass)."""
    fig = Figure(figsize=(5.5, 5))
    ax = fig.subplots()
    y_true = np.asarray(y_true, dtype=np.int64)
    curves = (
        [(class_names[-1], y_true, output)]
        if output.ndim == 1
        else [(name, (y_true == k).astype(np.int64), output[:, k]) for k, name in enumerate(class_names)]
    )
    for name, positives, score in curves:
        auc = roc_auc(positives, score)
        if np.isnan(auc):
            continue
        fpr, tpr, _ = roc_curve(positives, score)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC ({split})")
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


def plot_residuals(y_true: np.ndarray, y_pred: np.ndarray, path: Path, split: str = "test") -> Path:
    """Write :func:`residuals_figure` to ``path``."""
    return save_figure(residuals_figure(y_true, y_pred, split), path)


def residuals_figure(y_true: np.ndarray, y_pred: np.ndarray, split: str = "test") -> Figure:
    """Residuals (true − predicted) against predictions, and their histogram."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    residuals = y_true - y_pred
    shown = np.arange(len(residuals))
    if len(shown) > MAX_SCATTER_POINTS:  # a scatter of millions of points says nothing more, slowly
        shown = np.random.default_rng(0).choice(len(shown), MAX_SCATTER_POINTS, replace=False)
    fig = Figure(figsize=(11, 4.2))
    scatter_ax, hist_ax = fig.subplots(1, 2)
    scatter_ax.scatter(y_pred[shown], residuals[shown], s=4, alpha=0.4)
    scatter_ax.axhline(0.0, color="grey", linewidth=1)
    scatter_ax.set(xlabel="predicted", ylabel="true − predicted", title=f"Residuals ({split})")
    hist_ax.hist(residuals, bins=50)
    hist_ax.set(xlabel="true − predicted", ylabel="rows", title="Residual distribution")
    for axis in (scatter_ax.xaxis, scatter_ax.yaxis, hist_ax.xaxis):
        plain_numbers(axis, max_ticks=5)
    integer_ticks(hist_ax.yaxis)  # rows are counted
    return fig
