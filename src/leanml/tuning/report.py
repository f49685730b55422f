"""What a study leaves behind: the trial table (terminal and CSV), plots, an HTML report, and best.yaml.

Everything is written atomically. The HTML report is one standalone file: the plots are embedded.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from matplotlib.figure import Figure
from optuna.trial import TrialState
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from leanml.config import Config
from leanml.figures import integer_ticks, plain_numbers, save_figure
from leanml.files import atomic_path
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
from leanml.tuning.space import SearchSpace, override_text

STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}
FEW_TRIALS = 10
"""Below this many completed trials, the importance chart carries a warning."""


@dataclass(frozen=True)
class TrialRow:
    """One trial as the reports show it; ``values`` are config values (``{"train.lr": 0.003}``)."""

    number: int
    state: str
    value: float | None
    values: dict[str, Any]
    epochs: int | None
    seconds: float | None
    reason: str | None
    validation: dict[str, float] = field(default_factory=dict)
    """Every validation metric of a completed trial."""


def trial_rows(study: optuna.Study, space: SearchSpace) -> list[TrialRow]:
    """Every trial of ``study``, in order."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        value = trial.value if trial.values else None
        rows.append(
            TrialRow(
                number=trial.number,
                state=STATES.get(trial.state, trial.state.name.lower()),
                value=value if value is None or math.isfinite(value) else None,
                values=space.decode(trial.params),
                epochs=trial.user_attrs.get("epochs"),
                seconds=trial.duration.total_seconds() if trial.duration is not None else None,
                reason=trial.user_attrs.get("reason"),
                validation=trial.user_attrs.get("validation", {}),
            )
        )
    return rows


def best_row(rows: Sequence[TrialRow], direction: str) -> TrialRow | None:
    """The completed trial with the best value (the first one on ties), or ``None``."""
    complete = [r for r in rows if r.state == "complete" and r.value is not None]
    if not complete:
        return None
    sign = -1.0 if direction == "maximize" else 1.0
    return min(complete, key=lambda r: (sign * r.value, r.number))  # type: ignore[operator]


def render_trials(
    rows: Sequence[TrialRow], keys: Sequence[str], metric: str, best: TrialRow | None, console: Console
) -> None:
    """The trial table on the terminal; the best trial is starred.

    Headings are never cut: when one column per searched key does not fit the terminal, the values go
    into one folded column of ``key=value`` pairs instead.
    """
    table = _trials_table(rows, keys, metric, best, wide=True)
    if not fits(table, console):
        table = _trials_table(rows, keys, metric, best, wide=False)
    console.print(table)


def _trials_table(
    rows: Sequence[TrialRow], keys: Sequence[str], metric: str, best: TrialRow | None, wide: bool
) -> Table:
    """A column per searched key (``wide``), or one ``values`` column with a ``key=value`` line each and
    the reason last."""
    table = Table(title=f"Trials ({metric} on validation)", title_justify="left")
    add_column(table, "#", justify="right")
    add_column(table, "state")
    add_column(table, metric, justify="right")
    add_column(table, "epochs", justify="right")
    add_column(table, "s", justify="right")
    if wide:
        for key in keys:
            add_column(table, key)
        add_column(table, "reason", fold=True)
    else:
        add_column(table, "values", fold=True)
    colours = {"complete": "green", "pruned": "yellow", "failed": "red"}
    for row in rows:
        star = " ★" if best is not None and row.number == best.number else ""
        colour = colours.get(row.state, "dim")
        values = [_value_text(k, row.values[k]) if k in row.values else "" for k in keys]
        if wide:
            cells = [*values, row.reason or ""]
        else:
            lines = [f"{k}={v}" for k, v in zip(keys, values, strict=True) if v]
            cells = ["\n".join([*lines, *([f"reason: {row.reason}"] if row.reason else [])])]
        table.add_row(
            f"{row.number}{star}",
            f"[{colour}]{row.state}[/{colour}]",
            metric_text(row.value),
            "" if row.epochs is None else str(row.epochs),
            _seconds(row.seconds),
            *[escape(c) for c in cells],
        )
    return table


def write_trials_csv(rows: Sequence[TrialRow], keys: Sequence[str], metric: str, path: Path) -> Path:
    """``trials.csv``: number, state, the metric, epochs, seconds, one column per searched key, reason."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", metric, "epochs", "seconds", *keys, "reason"])
        for row in rows:
            writer.writerow(
                [
                    row.number,
                    row.state,
                    "" if row.value is None else repr(row.value),
                    "" if row.epochs is None else row.epochs,
                    "" if row.seconds is None else f"{row.seconds:.3f}",
                    *[_value_text(k, row.values[k]) if k in row.values else "" for k in keys],
                    row.reason or "",
                ]
            )
    return path


def write_best_config(config: Config, path: Path, comments: Sequence[str]) -> Path:
    """``best.yaml``: ``config`` (the base with the best trial's values) as plain YAML, after comments."""
    header = "".join(f"# {line}\n" for line in comments)
    body = yaml.safe_dump(
        config.model_dump(mode="json", exclude_defaults=True), sort_keys=False, default_flow_style=None
    )
    with atomic_path(path) as tmp:
        tmp.write_text(header + body)
    return path


def plot_history(rows: Sequence[TrialRow], metric: str, direction: str, path: Path) -> Path:
    """Write :func:`history_figure` to ``path``."""
    return save_figure(history_figure(rows, metric, direction), path)


def history_figure(rows: Sequence[TrialRow], metric: str, direction: str) -> Figure:
    """Each trial's score and the best score so far, by trial number."""
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    for state, marker, colour in (("complete", "o", "tab:blue"), ("pruned", "x", "tab:orange")):
        points = [(r.number, r.value) for r in rows if r.state == state and r.value is not None]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, color=colour, label=state, zorder=3)
    best: list[tuple[int, float]] = []
    pick = max if direction == "maximize" else min
    for row in rows:
        if row.state == "complete" and row.value is not None:
            best.append((row.number, row.value if not best else pick(best[-1][1], row.value)))
    if best:
        ax.step(*zip(*best, strict=True), where="post", color="tab:red", label="best so far")
    ax.set(title=f"Optimization history ({direction} {metric})", xlabel="trial", ylabel=metric)
    integer_ticks(ax.xaxis)
    plain_numbers(ax.yaxis)
    ax.grid(alpha=0.3)
    if best or any(r.state == "pruned" for r in rows):
        ax.legend()
    return fig


def param_importances(study: optuna.Study) -> dict[str, float] | None:
    """Each searched key's share of the variation of the score (Optuna's PED-ANOVA), or ``None`` when
    there are too few completed trials to tell."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(complete) < 2:
        return None
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (ValueError, RuntimeError, ZeroDivisionError):
        return None


def plot_importance(importances: dict[str, float], path: Path, trials: int | None = None) -> Path:
    """Write :func:`importance_figure` to ``path``."""
    return save_figure(importance_figure(importances, trials), path)


def importance_figure(importances: dict[str, float], trials: int | None = None) -> Figure:
    """A horizontal bar per searched key: its importance. Given fewer than :data:`FEW_TRIALS` completed
    ``trials``, the chart says so in red: importances from a handful of trials are mostly noise."""
    names = list(importances)[::-1]
    fig = Figure(figsize=(8, 1.6 + 0.45 * len(names)))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (Optuna PED-ANOVA, sums to 1)")
    ax.set_title("Parameter importance", loc="left")
    if trials is not None and trials < FEW_TRIALS:
        ax.set_title(few_trials_warning(trials), loc="right", color="tab:red", fontsize=9)
    plain_numbers(ax.xaxis)
    ax.grid(axis="x", alpha=0.3)
    return fig


def few_trials_warning(trials: int) -> str:
    """The warning an importance chart from fewer than :data:`FEW_TRIALS` completed trials carries."""
    return f"only {trials} completed trials: importances are unreliable below {FEW_TRIALS}"


def write_html(
    path: Path,
    title: str,
    rows: Sequence[TrialRow],
    keys: Sequence[str],
    metric: str,
    best: TrialRow | None,
    images: Sequence[Path],
) -> Path:
    """``report.html``: the summary, the plots (embedded) and the trial table, in one file."""
    counts = {state: sum(1 for r in rows if r.state == state) for state in ("complete", "pruned", "failed")}
    summary = ", ".join(f"{n} {state}" for state, n in counts.items())
    if best is not None:
        values = ", ".join(f"{k}={_value_text(k, v)}" for k, v in best.values.items())
        summary += f". Best: trial {best.number}, {metric} {metric_text(best.value)} ({values})"
    sections = [paragraph(summary)]
    for image in images:
        if image.stem == "importance" and counts["complete"] < FEW_TRIALS:
            sections.append(
                paragraph(f"Parameter importance: {few_trials_warning(counts['complete'])}.", "warning")
            )
        sections.append(png_tag(image, image.stem))
    head = ["#", "state", metric, "epochs", "seconds", *keys, "reason"]
    cells = [
        [
            str(row.number),
            row.state,
            metric_text(row.value),
            "" if row.epochs is None else str(row.epochs),
            _seconds(row.seconds),
            *[_value_text(k, row.values[k]) if k in row.values else "" for k in keys],
            row.reason or "",
        ]
        for row in rows
    ]
    numeric = [h in ("#", metric, "epochs", "seconds") for h in head]
    classes = ["best" if best is not None and row.number == best.number else None for row in rows]
    sections += ["<h2>Trials</h2>", html_table(head, cells, numeric, classes)]
    return write_page(path, title, sections)


def _value_text(key: str, value: Any) -> str:
    """A searched value as people read it: floats to three significant digits, the rest as YAML."""
    if isinstance(value, float):
        return human_number(value)
    return override_text(key, value).partition("=")[2]


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:,.1f}"
