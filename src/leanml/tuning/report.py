"""What a study leaves behind: the trial table (terminal and CSV), plots, an HTML report, and best.yaml.

Everything is written atomically. The HTML report is one standalone file: the plots are embedded.
"""

from __future__ import annotations

import base64
import csv
import html
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
from leanml.figures import save_figure
from leanml.files import atomic_path
from leanml.tuning.space import SearchSpace, override_text

STATES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
    TrialState.RUNNING: "running",
    TrialState.WAITING: "waiting",
}


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
    """The trial table on the terminal; the best trial is starred."""
    table = Table(title=f"Trials ({metric} on validation)", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("state")
    table.add_column(metric, justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("s", justify="right")
    for key in keys:
        table.add_column(key)
    table.add_column("reason", overflow="fold")
    colours = {"complete": "green", "pruned": "yellow", "failed": "red"}
    for row in rows:
        star = " ★" if best is not None and row.number == best.number else ""
        colour = colours.get(row.state, "dim")
        table.add_row(
            f"{row.number}{star}",
            f"[{colour}]{row.state}[/{colour}]",
            _number(row.value),
            "" if row.epochs is None else str(row.epochs),
            _number(row.seconds, 1),
            *[escape(_value_text(k, row.values[k])) if k in row.values else "" for k in keys],
            escape(row.reason or ""),
        )
    console.print(table)


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
    ax.grid(alpha=0.3)
    if best or any(r.state == "pruned" for r in rows):
        ax.legend()
    return save_figure(fig, path)


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


def plot_importance(importances: dict[str, float], path: Path) -> Path:
    """A horizontal bar per searched key: its importance."""
    names = list(importances)[::-1]
    fig = Figure(figsize=(8, 1.2 + 0.45 * len(names)))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(title="Parameter importance", xlabel="importance (Optuna PED-ANOVA, sums to 1)")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)


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
        values = ", ".join(override_text(k, v) for k, v in best.values.items())
        summary += f". Best: trial {best.number}, {metric} {best.value:.4f} ({values})"
    head = ["#", "state", metric, "epochs", "seconds", *keys, "reason"]
    body = []
    for row in rows:
        cells = [
            str(row.number),
            row.state,
            _number(row.value),
            "" if row.epochs is None else str(row.epochs),
            _number(row.seconds, 1),
            *[_value_text(k, row.values[k]) if k in row.values else "" for k in keys],
            row.reason or "",
        ]
        marker = ' class="best"' if best is not None and row.number == best.number else ""
        body.append(f"<tr{marker}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    figures = "\n".join(
        f'<img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}">'
        for p in images
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 0.3em 0.6em; text-align: left; }}
tr.best {{ background: #e8f5e9; font-weight: bold; }}
img {{ max-width: 48%; margin: 0.5em 1% 0.5em 0; vertical-align: top; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{html.escape(summary)}</p>
{figures}
<h2>Trials</h2>
<table><thead><tr>{"".join(f"<th>{html.escape(h)}</th>" for h in head)}</tr></thead>
<tbody>
{chr(10).join(body)}
</tbody></table>
</body></html>
"""
    with atomic_path(path) as tmp:
        tmp.write_text(page)
    return path


def _value_text(key: str, value: Any) -> str:
    return override_text(key, value).partition("=")[2]


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"
