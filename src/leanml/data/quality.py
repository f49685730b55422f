"""The data-quality report: what preparing did to every column and every row, as JSON and a Rich table.

Per column and split: ``missing`` (null, a null token or NaN), ``invalid`` (present but not convertible:
imputed like a missing value), ``outliers`` (outside the frozen bounds), ``clipped``, ``flagged``,
``imputed`` (missing, invalid or nulled outliers that received the fill value), ``unseen`` (categories
not seen in training) and ``infrequent`` (grouped under ``min_frequency``). Per split: rows in, rows kept,
rows dropped by reason. ``rows.read`` always equals kept plus dropped. ``rows.duplicates`` counts rows
that repeat an earlier one in the target and every used column, whether or not ``data.dedupe`` drops
them: kept, they can land in training and in validation or test, and flatter the metrics.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from leanml._version import __version__
from leanml.config import PREPARE_SECTIONS, Config
from leanml.data.preprocessor import QUALITY_METRICS
from leanml.data.split import SPLITS
from leanml.data.state import CategoricalState, NumericState, PreprocessState

REPORT_FORMAT_VERSION = 1


def build_report(
    *,
    config: Config,
    state: PreprocessState,
    counts: dict[str, Any],
    sources: list[str],
    fingerprint: str,
    split_method: str,
    unlisted: list[str],
) -> dict[str, Any]:
    """Assemble the JSON report from the counts gathered while writing the splits."""
    dropped_total: dict[str, int] = dict(counts["before_split"])
    rows: dict[str, Any] = {"before_split": {"dropped": counts["before_split"]}}
    for split in SPLITS:
        info = counts["splits"][split]
        dropped = info["dropped"]
        rows[split] = {"rows": info["rows"], "kept": info["rows"] - sum(dropped.values()), "dropped": dropped}
        for reason, n in dropped.items():
            dropped_total[reason] = dropped_total.get(reason, 0) + n
    read = sum(counts["before_split"].values()) + sum(counts["splits"][s]["rows"] for s in SPLITS)
    kept = sum(rows[s]["kept"] for s in SPLITS)

    columns: dict[str, Any] = {}
    for column in state.columns:
        entry: dict[str, Any] = {"type": column.type}
        total = dict.fromkeys(QUALITY_METRICS, 0)
        for split in SPLITS:
            split_counts = {
                m: int(counts["splits"][split]["columns"][f"{column.name}|{m}"]) for m in QUALITY_METRICS
            }
            entry[split] = split_counts
            for metric, n in split_counts.items():
                total[metric] += n
        entry["total"] = total
        columns[column.name] = entry

    return {
        "format_version": REPORT_FORMAT_VERSION,
        "leanml_version": __version__,
        "name": config.name,
        "sources": sources,
        "data_fingerprint": fingerprint,
        "config_hash": config.digest(PREPARE_SECTIONS),
        "target": state.target.name,
        "task": state.target.task,
        "classes": state.target.labels,
        "split": {"method": split_method, **config.data.split.model_dump()},
        "rows": {
            "read": read,
            "kept": kept,
            "dropped": sum(dropped_total.values()),
            "duplicates": int(counts.get("duplicates", 0)),
            **rows,
        },
        "dropped_by_reason": dict(sorted(dropped_total.items())),
        "columns": columns,
        "features": len(state.feature_names),
        "ignored": state.ignored,
        "unlisted": unlisted,
        "notes": _notes(state, unlisted, columns, read, int(counts.get("duplicates", 0)), config.data.dedupe),
    }


def _notes(
    state: PreprocessState,
    unlisted: list[str],
    columns: dict[str, Any],
    read: int,
    duplicates: int,
    dedupe: bool,
) -> list[str]:
    notes = []
    if unlisted:
        notes.append(f"not in the config, so not used: {', '.join(unlisted)}")
    if duplicates and dedupe:
        notes.append(f"{duplicates:,} duplicate rows dropped (data.dedupe)")
    elif duplicates:
        notes.append(
            f"{duplicates:,} rows ({duplicates / max(read, 1):.1%}) duplicate an earlier row (target and "
            f"every used column equal); they can leak across splits and flatter validation and test "
            f"metrics: set data.dedupe: true to drop them"
        )
    for name, entry in columns.items():
        invalid = entry["total"]["invalid"]
        if invalid:
            column = next(c for c in state.columns if c.name == name)
            what = "rejected (invalid: reject)" if column.invalid == "reject" else "imputed (invalid: null)"
            notes.append(f"column '{name}': {invalid:,} values that cannot be read as its type, {what}")
    for column in state.columns:
        if isinstance(column, NumericState) and column.observed_min == column.observed_max:
            notes.append(f"column '{column.name}' is constant in the training split; its feature is constant")
        if isinstance(column, CategoricalState) and len(column.categories) + bool(column.infrequent) <= 1:
            notes.append(f"column '{column.name}' has a single category in the training split")
    return notes


def render_report(report: dict[str, Any], console: Console) -> None:
    """Print the report as Rich tables: per column counts, then rows per split and drop reasons."""
    # Only the counts that are non-zero somewhere (missing and imputed always): the JSON has them all.
    shown = [
        m
        for m in QUALITY_METRICS
        if m in ("missing", "imputed") or any(e["total"][m] for e in report["columns"].values())
    ]
    table = Table(
        title=f"Data quality: {report['name']} (all splits)", title_justify="left", box=box.SIMPLE_HEAD
    )
    table.add_column("column", overflow="fold")
    table.add_column("type")
    for metric in shown:
        table.add_column(metric, justify="right")
    for name, entry in report["columns"].items():
        total = entry["total"]
        table.add_row(name, _TYPES[entry["type"]], *[_count(total[m]) for m in shown])
    console.print(table)

    rows = Table(title="Rows", title_justify="left", box=box.SIMPLE_HEAD)
    for heading in ("split", "rows", "kept", "dropped", "reasons"):
        rows.add_column(heading, justify="left" if heading in ("split", "reasons") else "right")
    before = report["rows"]["before_split"]["dropped"]
    rows.add_row(
        "before split", _count(sum(before.values())), "", _count(sum(before.values())), _reasons(before)
    )
    for split in SPLITS:
        info = report["rows"][split]
        dropped = info["dropped"]
        rows.add_row(
            split,
            _count(info["rows"]),
            _count(info["kept"]),
            _count(sum(dropped.values())),
            _reasons(dropped),
        )
    rows.add_row(
        "all",
        _count(report["rows"]["read"]),
        _count(report["rows"]["kept"]),
        _count(report["rows"]["dropped"]),
        "",
        style="bold",
    )
    console.print(rows)
    console.print(
        f"task: [bold]{report['task']}[/bold]  target: {report['target']}  "
        f"features: {report['features']}  split: {report['split']['method']}"
    )
    for note in report["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")


_TYPES = {"numeric": "num", "categorical": "cat", "datetime": "time"}


def _count(n: int) -> str:
    return f"{n:,}" if n else "·"


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {n:,}" for reason, n in dropped.items()) or "·"
