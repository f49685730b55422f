"""``leanml init``: look at a table and write a commented starter config.

Each column's type is inferred from a sample (the first :data:`SAMPLE_ROWS` rows) with the same
converters the pipeline uses:

* typed numbers → numeric; booleans → categorical; dates and datetimes → datetime;
* text that converts to numbers (≥ 95 % of present values) → numeric, to datetimes → datetime;
* text with at most :data:`MAX_CATEGORIES` distinct values → categorical (rare values grouped when there
  are more than :data:`GROUP_RARE_ABOVE`);
* ids (every value distinct), free text (long strings), high-cardinality text, constant and all-missing
  columns → ignore, with the reason in a comment.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from leanml.config import DEFAULT_NULL_VALUES, parse_config
from leanml.data import convert
from leanml.data.io import expand_paths, scan_table
from leanml.data.preprocessor import check_reserved
from leanml.data.target import infer_target
from leanml.errors import DataError
from leanml.files import atomic_path

SAMPLE_ROWS = 200_000
PARSE_SHARE = 0.95
MAX_CATEGORIES = 1000
GROUP_RARE_ABOVE = 50
FREE_TEXT_LENGTH = 40
TAIL_K = 3.0
TAIL_SHARE = (0.001, 0.01)
"""Clip when this share of values lies beyond the fences: rare outliers, not a long tail."""


@dataclass(frozen=True)
class ColumnGuess:
    """The inferred spec of one column (as YAML flow text) and the facts behind it."""

    name: str
    spec: str
    comment: str


def infer_config(data: str, target: str, name: str | None = None, config_dir: str | Path = ".") -> str:
    """Return the text of a starter ``leanml.yaml`` for ``data`` with ``target`` as the target.

    The data path is written relative to ``config_dir``, the folder the config will live in.
    """
    paths = expand_paths(data)
    frame = scan_table(paths)
    schema = frame.collect_schema()
    check_reserved(schema)
    if target not in schema:
        raise DataError(f"target '{target}' is not a column; the data has: {', '.join(schema.names())}")
    sample = frame.head(SAMPLE_ROWS).collect()
    if sample.height == 0:
        raise DataError(f"'{data}': the table has a header but no rows")
    nulls = list(DEFAULT_NULL_VALUES)
    target_state = infer_target(sample.lazy(), target, "auto", nulls)
    guesses = [_guess(sample, column, nulls) for column in schema.names() if column != target]
    if all(g.spec.startswith("{type: ignore") for g in guesses):
        raise DataError(f"'{data}': no column other than the target is usable as a feature")

    stem = Path(paths[0]).name.split(".")[0]
    config_name = name or "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in stem) or "model"
    width = max(len(g.name) for g in guesses) + 1
    lines = [
        f"# leanml config written by `leanml init` from {data} ({sample.height:,} sampled rows).",
        "# Edit the column specs below; `leanml prepare THIS_FILE` validates and runs them.",
        f"name: {config_name}",
        "data:",
        f"  train: {_yaml_str(os.path.relpath(os.path.abspath(data), os.path.abspath(config_dir)))}",
        f"  null_values: [{', '.join(_yaml_str(v) for v in nulls)}]",
        "  split: {validation: 0.1, test: 0.1, seed: 0, stratify: true}   # or {by: DATETIME_COLUMN}",
        "  dedupe: false",
        f"target: {_yaml_str(target)}",
        f"task: {target_state.task}"
        + (f"   # classes: {', '.join(map(str, target_state.labels[:10]))}" if target_state.labels else ""),
        "columns:",
    ]
    for g in guesses:
        key = _yaml_str(g.name) + ":"
        lines.append(f"  {key:<{width + 2}} {g.spec}" + (f"   # {g.comment}" if g.comment else ""))
    lines += [
        "model: {arch: mlp, hidden: [128, 64], dropout: 0.1}   # arch: linear | mlp | resmlp",
        "train: {optimizer: adamw, lr: 1.0e-3, batch_size: 512, epochs: 20, early_stopping: {patience: 3}}",
        "shrink: {methods: [distill, prune, quantize], max_metric_drop: 0.01}   # leanml shrink MODEL",
        "serve: {host: 127.0.0.1, port: 8000, max_batch_size: 64, max_wait_ms: 2}",
        "workdir: runs",
        "store: models",
    ]
    text = "\n".join(lines) + "\n"
    _check_round_trip(text)
    return text


def write_config(text: str, path: str | Path) -> Path:
    """Write a config atomically; refuse to overwrite an existing file (the user's edits live there)."""
    path = Path(path)
    if path.exists():
        raise DataError(f"'{path}' exists; choose another path with -o or remove it first")
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _check_round_trip(text: str) -> None:
    import yaml

    parse_config(yaml.safe_load(text))


def _yaml_str(value: str) -> str:
    safe = value and all(ch.isalnum() or ch in "_-./" for ch in value) and not value[0].isdigit()
    return (
        value
        if safe and value.lower() not in ("true", "false", "null", "yes", "no", "on", "off")
        else ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
    )


def _guess(sample: pl.DataFrame, name: str, nulls: list[str]) -> ColumnGuess:
    dtype = sample.schema[name]
    rows = sample.height
    if dtype.is_temporal():
        if dtype == pl.Duration or dtype == pl.Time:
            return ColumnGuess(name, "{type: ignore}", f"{dtype} values are not supported yet")
        return _datetime_guess(sample, name, nulls, dtype, rows)
    key = convert.to_category(name, dtype, nulls).value if dtype != pl.Object else None
    if key is None:
        return ColumnGuess(name, "{type: ignore}", f"{dtype} values are not supported")
    facts = sample.select(
        key.is_not_null().sum().alias("present"),
        key.n_unique().alias("distinct"),
        key.drop_nulls().str.len_chars().mean().alias("length"),
    ).row(0, named=True)
    present = int(facts["present"])
    distinct = int(facts["distinct"]) - (1 if present < rows else 0)  # n_unique counts null as a value
    missing_share = 1 - present / rows
    if present == 0:
        return ColumnGuess(name, "{type: ignore}", "every sampled value is missing")
    if distinct == 1:
        return ColumnGuess(name, "{type: ignore}", "constant in the sample")
    note = (
        f"{missing_share:.1%} missing, {distinct:,} distinct" if missing_share else f"{distinct:,} distinct"
    )
    indicator = ", missing_indicator: true" if missing_share >= 0.05 else ""

    if dtype.is_numeric() or (
        dtype == pl.String and _share(sample, convert.to_number(name, dtype, nulls)) >= PARSE_SHARE
    ):
        values = sample.select(convert.to_number(name, dtype, nulls).value.alias("v"))["v"]
        if dtype.is_integer() and distinct == present and present == rows and rows > 50:
            return ColumnGuess(name, "{type: ignore}", "every value distinct: looks like an id")
        lo, hi = values.min(), values.max()
        outliers = ""
        tail_share = _tail_share(values)
        if distinct > 20 and TAIL_SHARE[0] <= tail_share <= TAIL_SHARE[1]:
            outliers = f", outliers: {{method: iqr, k: {TAIL_K}, action: clip}}"
            note += f", {tail_share:.1%} beyond {TAIL_K}·IQR"
        return ColumnGuess(
            name,
            f"{{type: numeric, impute: median{indicator}, scale: standard{outliers}}}",
            f"{note}, range {_num(lo)}..{_num(hi)}",
        )
    if dtype == pl.String and _share(sample, convert.to_datetime(name, dtype, nulls, None)) >= PARSE_SHARE:
        return _datetime_guess(sample, name, nulls, dtype, rows)
    if dtype == pl.String and distinct == present and rows > 50:
        return ColumnGuess(name, "{type: ignore}", "every value distinct: looks like an id")
    if dtype == pl.String and (facts["length"] or 0) > FREE_TEXT_LENGTH:
        return ColumnGuess(name, "{type: ignore}", f"free text (mean length {facts['length']:.0f})")
    if distinct > MAX_CATEGORIES:
        return ColumnGuess(
            name, "{type: ignore}", f"{distinct:,} distinct values: too many to one-hot encode"
        )
    rare = ""
    if distinct > GROUP_RARE_ABOVE:
        rare = f", min_frequency: {max(10, math.ceil(rows * 0.001))}"
    return ColumnGuess(
        name, f"{{type: categorical, impute: constant{indicator}, encode: onehot{rare}}}", note
    )


def _datetime_guess(
    sample: pl.DataFrame, name: str, nulls: list[str], dtype: pl.DataType, rows: int
) -> ColumnGuess:
    value = convert.to_datetime(name, dtype, nulls, None).value
    facts = sample.select(
        value.min().alias("lo"), value.max().alias("hi"), value.is_null().sum().alias("nulls")
    )
    lo, hi, missing = facts.row(0)
    if lo is None:
        return ColumnGuess(name, "{type: ignore}", "every sampled value is missing")
    has_time = sample.select((value.dt.hour() + value.dt.minute() + value.dt.second()).max()).item()
    parts = "[hour, dayofweek, month]" if has_time else "[dayofweek, month]"
    indicator = ", missing_indicator: true" if missing / rows >= 0.05 else ""
    return ColumnGuess(
        name,
        f"{{type: datetime, parts: {parts}, epoch: true{indicator}}}",
        f"{missing / rows:.1%} missing, {lo} .. {hi}",
    )


def _tail_share(values: pl.Series) -> float:
    """Share of values beyond TAIL_K interquartile ranges of the quartiles (a heavy tail worth clipping)."""
    present = values.drop_nulls()
    if present.len() == 0:
        return 0.0
    q1, q3 = present.quantile(0.25, "linear"), present.quantile(0.75, "linear")
    span = TAIL_K * (q3 - q1)
    if span == 0:
        return 0.0
    return float(((present < q1 - span) | (present > q3 + span)).mean())


def _share(sample: pl.DataFrame, converted: convert.Converted) -> float:
    present, ok = sample.select(
        converted.missing.not_().sum().alias("present"), converted.value.is_not_null().sum().alias("ok")
    ).row(0)
    return ok / present if present else 0.0


def _num(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:g}"
