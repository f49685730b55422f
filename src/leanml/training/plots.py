"""Training plots (matplotlib, Agg, no pyplot state): learning curves, confusion matrix, ROC, residuals.

Every file is written atomically (temporary file + rename) into the plots folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from leanml.figures import save_figure
from leanml.metrics import confusion_matrix, predicted_classes, roc_auc, roc_curve

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
    """Train and validation loss per epoch, and each validation metric per epoch."""
    fig = Figure(figsize=(11, 4.2))
    loss_ax, metric_ax = fig.subplots(1, 2)
    epochs = [record["epoch"] for record in history]
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker=".", label="train")
    if history and history[0]["val_loss"] is not None:
        loss_ax.plot(epochs, [r["val_loss"] for r in history], marker=".", label="validation")
    loss_ax.set(title="Loss", xlabel="epoch", ylabel="loss")
    loss_ax.legend()
    names = list(history[0]["val_metrics"]) if history else []
    for name in names:
        metric_ax.plot(epochs, [r["val_metrics"][name] for r in history], marker=".", label=name)
    metric_ax.set(title="Validation metrics", xlabel="epoch")
    if names:
        metric_ax.legend()
    return save_figure(fig, path)


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
    return save_figure(fig, path)
