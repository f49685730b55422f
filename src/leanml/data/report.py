"""The prepare report: the data-quality report as one standalone HTML page, with a histogram per numeric
column of the prepared training split.

The page shows what ``quality.json`` holds (rows per split and drops by reason, then per column: missing,
invalid, imputed, clipped and the other counts, and the categories kept), plus the distribution of each
numeric column as the model sees it: after imputation and outlier handling, in the column's own units.
The histograms are counted by the streaming engine, one column at a time, so memory stays bounded
whatever the size of the split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from matplotlib.figure import Figure

from leanml.data.io import collect_each
from leanml.data.prepared import PreparedData
from leanml.data.preprocessor import QUALITY_METRICS
from leanml.data.split import SPLITS
from leanml.data.state import CategoricalState, NumericState, PreprocessState
from leanml.data.transform import unscale
from leanml.figures import figure_png, integer_ticks, plain_numbers
from leanml.reports import html_table, human_number, paragraph, png_tag, write_page

REPORT_FILE = "report.html"
BINS = 30
MAX_HISTOGRAMS = 60
"""Numeric columns drawn at most (the first ones, in config order); the tables list every column."""
PANELS_PER_FIGURE = 12
PANEL_COLUMNS = 4


@dataclass(frozen=True)
class Histogram:
    """Counts of one column's values in ``len(counts)`` equal bins between ``edges[0]`` and ``edges[-1]``."""

    column: str
    edges: np.ndarray
    counts: np.ndarray


def numeric_histograms(
    split: Path | list[Path], state: PreprocessState, bins: int = BINS, limit: int = MAX_HISTOGRAMS
) -> list[Histogram]:
    """A histogram of each numeric column of a prepared ``split`` (its file, or its shards), in the
    column's own units.

    The prepared values are scaled (``(x - offset) / divisor``); the bin edges are scaled back. One
    streaming pass finds every column's range, then one pass per column counts its bins.
    """
    columns = [c for c in state.columns if isinstance(c, NumericState)][:limit]
    if not columns:
        return []
    frame = pl.scan_parquet(split)
    finite = {c.name: pl.col(c.name).filter(pl.col(c.name).is_finite()) for c in columns}
    ranges = frame.select(
        *[finite[c.name].min().alias(f"{c.name}|min") for c in columns],
        *[finite[c.name].max().alias(f"{c.name}|max") for c in columns],
    ).collect(engine="streaming")
    queries, spans = [], []
    for column in columns:
        low, high = ranges[f"{column.name}|min"][0], ranges[f"{column.name}|max"][0]
        if low is None:  # an empty split
            continue
        low, high = float(low), float(high)
        width = (high - low) / bins if high > low else 1.0
        index = ((pl.col(column.name) - low) / width).floor().clip(0, bins - 1).cast(pl.Int32)
        queries.append(
            frame.filter(pl.col(column.name).is_finite()).select(index.alias("bin")).group_by("bin").len()
        )
        spans.append((column, low, high if high > low else low + 1.0))
    histograms = []
    for (column, low, high), counted in zip(spans, collect_each(queries), strict=True):
        counts = np.zeros(bins, dtype=np.int64)
        counts[counted["bin"].to_numpy()] = counted["len"].to_numpy()
        scaled = np.linspace(low, high, bins + 1)
        edges = unscale(column.scale, scaled)
        histograms.append(Histogram(column.name, edges, counts))
    return histograms


def plot_histograms(histograms: Sequence[Histogram]) -> list[bytes]:
    """PNG figures of up to :data:`PANELS_PER_FIGURE` histograms each."""
    figures = []
    for start in range(0, len(histograms), PANELS_PER_FIGURE):
        group = histograms[start : start + PANELS_PER_FIGURE]
        rows = -(-len(group) // PANEL_COLUMNS)
        columns = min(len(group), PANEL_COLUMNS)
        fig = Figure(figsize=(3.4 * columns, 2.6 * rows))
        axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
        for ax, histogram in zip(axes, group, strict=False):
            edges = histogram.edges
            ax.stairs(histogram.counts, edges, fill=True, color="tab:blue", alpha=0.8)
            ax.set_title(histogram.column, fontsize=9)
            plain_numbers(ax.xaxis, max_ticks=4)
            integer_ticks(ax.yaxis)
            ax.tick_params(labelsize=7)
        for ax in axes[len(group) :]:
            ax.set_visible(False)
        figures.append(figure_png(fig))
    return figures


def write_prepare_report(prepared: PreparedData, report: dict[str, Any], state: PreprocessState) -> Path:
    """Write ``report.html`` into the prepared folder: the quality report and the histograms of the
    numeric columns of its training split."""
    histograms = numeric_histograms(prepared.split("train"), state)
    sections = [paragraph(_summary(report))]
    sections += [paragraph(f"Note: {note}", "warning") for note in report["notes"]]
    sections += ["<h2>Rows</h2>", _rows_table(report)]
    if report["dropped_by_reason"]:
        reasons = [[reason, n] for reason, n in report["dropped_by_reason"].items()]
        sections += ["<h2>Dropped rows by reason</h2>", html_table(["reason", "rows"], reasons)]
    sections += ["<h2>Columns (all splits)</h2>", _columns_table(report, state)]
    if histograms:
        numeric = sum(isinstance(c, NumericState) for c in state.columns)
        caption = "Numeric columns in the prepared training split, after imputation and outlier handling"
        if numeric > len(histograms):
            caption += f" (the first {len(histograms)} of {numeric})"
        sections += ["<h2>Distributions</h2>", paragraph(caption + ".", "muted")]
        sections += [png_tag(png, "histograms") for png in plot_histograms(histograms)]
    return write_page(prepared.folder / REPORT_FILE, f"leanml prepare: {report['name']}", sections)


def _summary(report: dict[str, Any]) -> str:
    rows = report["rows"]
    text = (
        f"Task {report['task']}, target '{report['target']}'"
        + (f" ({len(report['classes'])} classes)" if report.get("classes") else "")
        + f"; {report['features']} features. Rows: {rows['read']:,} read, {rows['kept']:,} kept, "
        f"{rows['dropped']:,} dropped; {rows['duplicates']:,} duplicates. "
        f"Split: {report['split']['method']}. Source: {', '.join(report['sources'])}."
    )
    return text


def _rows_table(report: dict[str, Any]) -> str:
    rows = report["rows"]
    before = rows["before_split"]["dropped"]
    body: list[list[Any]] = [
        ["before split", sum(before.values()), None, sum(before.values()), _reasons(before)]
    ]
    for split in SPLITS:
        info = rows[split]
        dropped = info["dropped"]
        body.append([split, info["rows"], info["kept"], sum(dropped.values()), _reasons(dropped)])
    body.append(["all", rows["read"], rows["kept"], rows["dropped"], ""])
    return html_table(["split", "rows", "kept", "dropped", "reasons"], body, [False, True, True, True, False])


def _columns_table(report: dict[str, Any], state: PreprocessState) -> str:
    states = {c.name: c for c in state.columns}
    head = ["column", "type", *QUALITY_METRICS, "categories"]
    body = []
    for name, entry in report["columns"].items():
        column = states.get(name)
        categories = ""
        if isinstance(column, CategoricalState):
            categories = f"{len(column.categories):,}"
            if column.infrequent:
                categories += f" (+{len(column.infrequent):,} infrequent)"
        body.append([name, entry["type"], *[entry["total"][m] for m in QUALITY_METRICS], categories])
    numeric = [False, False, *[True] * len(QUALITY_METRICS), True]
    return html_table(head, body, numeric)


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {human_number(n)}" for reason, n in dropped.items())
