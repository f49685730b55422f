"""The shrink report: a terminal table, ``steps.csv``, ``shrink.json``, a plot and one HTML page.

Every file is written atomically; the HTML page embeds the plot, so it stands alone.
"""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leanml.figures import log_scale, plain_numbers, save_figure
from leanml.files import atomic_path, write_json
from leanml.reports import (
    add_column,
    fits,
    html_table,
    human_number,
    metric_text,
    paragraph,
    png_tag,
    write_page,
)

if TYPE_CHECKING:
    from leanml.shrinking.results import StepRecord

COLOURS = {"parent": "#4c72b0", "kept": "#55a868", "rolled back": "#c44e52", "not kept": "#8c8c8c"}
LEGEND_TOP = 0.96
"""The panels fill the figure up to here; the legend has the strip above."""
NARROW_COLUMNS = ("step", "model", "onnx_kb", "p50_batch1_us", "p50_batch1024_us", "metric", "decision")
COMPACT_COLUMNS = ("step", "onnx_kb", "p50_batch1_us", "metric", "decision")
COLUMNS = (
    ("step", "step"),
    ("model", "model"),
    ("parameters", "parameters"),
    ("onnx_kb", "model.onnx KB"),
    ("compressed_kb", "zlib KB"),
    ("p50_batch1_us", "p50 b1 µs"),
    ("p99_batch1_us", "p99 b1 µs"),
    ("p50_batch1024_us", "p50 b1024 µs"),
    ("p99_batch1024_us", "p99 b1024 µs"),
    ("metric", "METRIC"),
    ("drop", "drop"),
    ("drop_se", "± se"),
    ("decision", "decision"),
    ("why", "why"),
)


def write_reports(
    folder: Path, summary: dict[str, Any], records: Sequence[StepRecord], metric: str, console: Console | None
) -> list[Path]:
    """Write ``shrink.json``, ``steps.csv``, ``plots/shrink.png`` and ``report.html``; show the table."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [table_row(r, metric) for r in records]
    write_json(folder / "shrink.json", summary)
    written = [folder / "shrink.json", _write_csv(rows, metric, folder / "steps.csv")]
    image = plot_steps(records, metric, summary["budget"]["limit"], folder / "plots" / "shrink.png")
    written += [image, _write_html(folder / "report.html", summary, rows, metric, image)]
    if console is not None:
        render_steps(rows, metric, summary, console)
    return written


def table_row(record: StepRecord, metric: str) -> dict[str, Any]:
    """One step as the table shows it."""
    m = record.measurement
    return {
        "step": record.step,
        "model": record.model,
        "parameters": m.parameters,
        "onnx_kb": m.onnx_bytes / 1024,
        "compressed_kb": m.compressed_bytes / 1024,
        "p50_batch1_us": m.p50_batch1_us,
        "p99_batch1_us": m.p99_batch1_us,
        "p50_batch1024_us": m.p50_batch1024_us,
        "p99_batch1024_us": m.p99_batch1024_us,
        "metric": m.metrics[metric],
        "drop": record.drop,
        "drop_se": record.drop_se,
        "decision": record.decision,
        "why": record.why,
    }


def render_steps(
    rows: Sequence[dict[str, Any]], metric: str, summary: dict[str, Any], console: Console
) -> None:
    """The step table, then the outcome. A narrower terminal gets fewer columns (the files have them all)
    rather than cut headings: the widest layout that fits, down to the model under its step."""
    every = [key for key, _ in COLUMNS if key != "why"]
    layouts = [every, [k for k in every if k in NARROW_COLUMNS], list(COMPACT_COLUMNS)]
    for keys in layouts:
        table = _steps_table(rows, metric, summary, keys)
        if fits(table, console):
            break
    console.print(table)
    final, parent = summary["final"], summary["steps"][0]
    if not summary["written"]:
        console.print(f"[bold red]no model written:[/bold red] {escape(summary['reason'] or '')}")
        return
    smaller = parent["onnx_bytes"] / max(final["onnx_bytes"], 1)
    paired = summary["batch1_p50_us_side_by_side"] or {
        "parent": parent["p50_batch1_us"],
        "final": final["p50_batch1_us"],
    }
    faster = paired["parent"] / max(paired["final"], 1e-9)
    test = {name: values.get(metric, float("nan")) for name, values in summary["test"].items()}
    console.print(
        f"[green]✓[/green] {escape(final['model'])}: {smaller:.1f}× smaller, {faster:.1f}× faster at "
        f"batch 1 (timed side by side); test {metric} {test['final']:.4f} (parent {test['parent']:.4f})"
    )
    drop = summary["test_drop"]
    if drop is not None and drop > summary["budget"]["max_metric_drop"]:
        console.print(
            f"[yellow]note:[/yellow] on the test split the drop is {drop:.4f}, beyond the budget the "
            "validation split decided on; a larger validation split makes the decisions firmer"
        )


def _steps_table(
    rows: Sequence[dict[str, Any]], metric: str, summary: dict[str, Any], keys: Sequence[str]
) -> Table:
    """The columns ``keys``; without a ``model`` column, the model goes under its step."""
    headings = dict(COLUMNS)
    table = Table(title=f"shrink: {summary['budget']['text']}", title_justify="left")
    for key in keys:
        justify = "left" if key in ("step", "model", "decision") else "right"
        add_column(table, headings[key].replace("METRIC", metric), justify=justify)
    for row in rows:
        colour = {"kept": "green", "parent": "cyan", "rolled back": "red"}.get(row["decision"], "dim")
        cells = [_cell(key, row[key], colour) for key in keys]
        if "model" not in keys:
            cells[keys.index("step")] += "\n" + _cell("model", row["model"], colour)
        table.add_row(*cells)
    return table


def plot_steps(records: Sequence[StepRecord], metric: str, limit: float, path: Path) -> Path:
    """Write :func:`steps_figure` to ``path``."""
    return save_figure(steps_figure(records, metric, limit), path, top=LEGEND_TOP)


def steps_figure(records: Sequence[StepRecord], metric: str, limit: float) -> Figure:
    """Four panels over the steps: size on disk, p50 at batch 1 and 1024, and the validation metric with
    the budget's limit as a dashed line. Each bar carries its value; the legend sits above the panels,
    where it covers no bar."""
    labels = [f"{r.step}\n{r.model}" for r in records]
    colours = [COLOURS.get(r.decision, "#8c8c8c") for r in records]
    panels = (
        ("model.onnx (KB, log scale)", [r.measurement.onnx_bytes / 1024 for r in records], True),
        ("p50 latency at batch 1 (µs)", [r.measurement.p50_batch1_us for r in records], False),
        (
            "p50 latency at batch 1024 (µs, log scale)",
            [r.measurement.p50_batch1024_us for r in records],
            True,
        ),
        (f"validation {metric}", [r.measurement.metrics[metric] for r in records], False),
    )
    fig = Figure(figsize=(max(8.0, 1.1 * len(records) + 3), 9.0))
    axes = fig.subplots(2, 2)
    for ax, (title, values, log) in zip(axes.flat, panels, strict=True):
        bars = ax.bar(range(len(values)), values, color=colours)
        ax.set_title(title)
        ax.set_xticks(range(len(values)), labels, rotation=60, ha="right", fontsize=7)
        text = metric_text if title.startswith("validation") else human_number
        ax.bar_label(bars, [text(v) for v in values], fontsize=7, padding=2)
        if log:
            log_scale(ax, values)
        elif title.startswith("validation"):  # zoom in: the differences are a fraction of a point
            ax.axhline(limit, color="black", linestyle="--", linewidth=1)
            low, high = min(*values, limit), max(*values, limit)
            margin = max((high - low) * 0.3, 1e-3)
            ax.set_ylim(low - margin, high + margin)
            plain_numbers(ax.yaxis)
        else:
            ax.set_ylim(0, max(values, default=1.0) * 1.15 or 1.0)  # room for the bar labels
            plain_numbers(ax.yaxis)
    handles = [Patch(color=colour, label=decision) for decision, colour in COLOURS.items()]
    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1, label="budget limit"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    return fig


def _write_csv(rows: Sequence[dict[str, Any]], metric: str, path: Path) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([key if key != "metric" else metric for key, _ in COLUMNS])
    for row in rows:
        writer.writerow([row[key] for key, _ in COLUMNS])
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())
    return path


def _write_html(
    path: Path, summary: dict[str, Any], rows: Sequence[dict[str, Any]], metric: str, image: Path
) -> Path:
    outcome = (
        f"<p>Written: the final model is <b>{html.escape(summary['final']['model'])}</b>.</p>"
        if summary["written"]
        else f"<p><b>No model written:</b> {html.escape(summary['reason'] or '')}</p>"
    )
    targets = summary["targets"]
    conditions = (
        f"Budget: {summary['budget']['text']}. Targets: batch-1 p50 latency "
        f"{human_number(targets['latency_us']) or '—'} µs, "
        f"model.onnx {human_number(targets['size_kb']) or '—'} KB. "
        "Latencies: ONNX Runtime with one thread, on validation rows."
    )
    head = [h.replace("METRIC", metric) for _, h in COLUMNS]
    cells = [[_text(key, row[key]) for key, _ in COLUMNS] for row in rows]
    numeric = [key not in ("step", "model", "decision", "why") for key, _ in COLUMNS]
    classes = [row["decision"].replace(" ", "-") for row in rows]
    test_names = sorted({k for values in summary["test"].values() for k in values})
    test = [
        [name, *[metric_text(values.get(k)) for k in test_names]] for name, values in summary["test"].items()
    ]
    sections = [
        paragraph(conditions),
        outcome,
        html_table(head, cells, numeric, classes),
        "<h2>Test split</h2>",
        html_table(["model", *test_names], test, [False, *[True] * len(test_names)]),
        png_tag(image, "shrink steps"),
    ]
    name = f"{summary['parent']['name']} {summary['parent']['version']}"
    return write_page(path, f"leanml shrink: {name}", sections)


def _text(key: str, value: Any) -> str:
    if isinstance(value, float):
        if key in ("metric", "drop", "drop_se"):
            return metric_text(value)
        return human_number(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cell(key: str, value: Any, colour: str) -> str:
    text = _text(key, value).replace("[", "\\[")
    return f"[{colour}]{text}[/{colour}]" if key == "decision" else text
