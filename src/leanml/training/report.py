"""The train report: one standalone HTML page with a run's metrics, its plots and its epochs.

The plots are the ones :mod:`leanml.training.plots` wrote into ``plots/`` (learning curves, then the
confusion matrix and ROC, or the residuals), embedded so that the page stands alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from leanml.reports import html_table, human_number, metric_text, paragraph, png_tag, write_page

if TYPE_CHECKING:
    from leanml.training.loop import TrainResult

REPORT_FILE = "report.html"


def write_train_report(name: str, result: TrainResult) -> Path:
    """Write ``report.html`` into the run's folder: the summary, validation and test metrics, the plots and
    a row per epoch."""
    epochs = len(result.history)
    summary = f"Task {result.task}; {epochs} epochs"
    if result.stopped_early:
        summary += " (stopped early)"
    if result.best_epoch is not None:
        summary += f"; best validation {result.monitor} at epoch {result.best_epoch} (marked below)"
    sections = [paragraph(summary + "."), "<h2>Metrics</h2>", _metrics_table(result)]
    sections += [png_tag(plot, plot.stem.replace("_", " ")) for plot in result.plots if plot.exists()]
    sections += ["<h2>Epochs</h2>", _history_table(result)]
    return write_page(result.out_dir / REPORT_FILE, f"leanml train: {name}", sections)


def _metrics_table(result: TrainResult) -> str:
    splits = {"validation": result.validation, "test": result.test}
    names = sorted({metric for values in splits.values() for metric in values})
    rows = [[split, *[metric_text(values.get(n)) for n in names]] for split, values in splits.items()]
    return html_table(["split", *names], rows, [False, *[True] * len(names)])


def _history_table(result: TrainResult) -> str:
    history = result.history
    metrics = list(history[0]["val_metrics"]) if history else []
    head = ["epoch", "train_loss", "val_loss", *metrics, "lr", "seconds"]
    rows = [
        [
            str(record["epoch"]),
            metric_text(record["train_loss"]),
            metric_text(record["val_loss"]),
            *[metric_text(record["val_metrics"].get(m)) for m in metrics],
            human_number(record.get("lr")),
            "" if record.get("seconds") is None else f"{record['seconds']:,.1f}",
        ]
        for record in history
    ]
    classes = ["best" if record["epoch"] == result.best_epoch else None for record in history]
    return html_table(head, rows, [True] * len(head), classes)
