"""``leanml init``: look at a table and write a commented starter config.

The file is read as the pipeline will read it: the CSV separator is sniffed and a non-UTF-8 encoding
detected (both written to ``data`` when they are not the defaults). Each column's type is inferred from
up to :data:`SAMPLE_ROWS` rows taken evenly across the whole file (a month-sorted file shows every month)
with the same converters the pipeline uses:

* typed numbers → numeric; booleans (typed, or text that is only true/false, yes/no, ...) → categorical
  with ``boolean: true``; dates and datetimes → datetime;
* text that converts to numbers (≥ 95 % of present values) → numeric, with ``thousands`` / ``decimal``
  when the numbers are written like ``1,234.5`` or ``1,5``;
* text that reads as dates (≥ 95 %) → datetime with the ``formats`` found (several when the column mixes
  them); otherwise the comment says how much read as dates;
* numeric columns with at least :data:`PLE_MIN_DISTINCT` distinct values add ``encode: ple``;
* text with at most :data:`MAX_CATEGORIES` distinct values → categorical (rare values grouped when there
  are more than :data:`GROUP_RARE_ABOVE`), with ``strip: true`` when values carry surrounding spaces;
* an index (a first column, or one named like ``Unnamed: 0`` / ``index`` / ``id``, holding unique
  consecutive integers over the whole file, as pandas writes it), ids (every value distinct), free text,
  high-cardinality text, constant and all-missing columns → ignore, with the reason in a comment.

Duplicate rows (equal in the target and every used column) are counted over the whole file.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import polars as pl

from leanml.config import DEFAULT_NULL_VALUES, parse_config
from leanml.data import convert
from leanml.data.io import (
    detect_encoding,
    expand_paths,
    is_pandas_index,
    not_a_column_hint,
    sample_rows,
    scan_table,
    sniff_separator,
    table_format,
    utf8_paths,
)
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
PLE_MIN_DISTINCT = 64
"""Numeric columns with at least this many distinct values get ``encode: ple`` (piecewise-linear bins
beside the scaled value): measured on seven tables × three seeds (BENCHMARKS.md, model quality), it
closed hotels' 4.4 % RMSE gap to LightGBM (to −2.9 %) and kept every other table within 1 point / 3 %;
fewer distinct values (digits' 17 pixel levels) gain nothing from bins."""
DATE_SAMPLE_VALUES = 5000
"""Distinct values of a text column tried against every candidate date format."""
INDEX_NAMES = ("", "unnamed: 0", "index", "id", "row", "rowid", "row_id", "row_number", "_id")


@dataclass(frozen=True)
class ColumnGuess:
    """The inferred spec of one column (as YAML flow text) and the facts behind it.

    ``index`` marks a column that may be an index (unique integers in the sample); the whole file
    decides (see :func:`_confirm_indexes`).
    """

    name: str
    spec: str
    comment: str
    index: bool = False


def infer_config(data: str, target: str, name: str | None = None, config_dir: str | Path = ".") -> str:
    """Return the text of a starter ``leanml.yaml`` for ``data`` with ``target`` as the target.

    The data path is written relative to ``config_dir``, the folder the config will live in.
    """
    paths = expand_paths(data)
    separator, encoding = None, "utf-8"
    if table_format(paths[0]) in ("csv", "csv.gz", "zip"):
        encoding = detect_encoding(paths[0])
        separator = sniff_separator(utf8_paths(paths[:1], encoding)[0])
    frame = scan_table(paths, separator, encoding)
    schema = frame.collect_schema()
    check_reserved(schema)
    if target not in schema:
        raise DataError(f"target '{target}' is not a column; {not_a_column_hint([target], schema.names())}")
    sample, total = sample_rows(frame, SAMPLE_ROWS)
    if sample.height == 0:
        raise DataError(f"'{data}': the table has a header but no rows")
    nulls = list(DEFAULT_NULL_VALUES)
    target_state = infer_target(sample.lazy(), target, "auto", nulls)
    guesses = [
        _guess(sample, column, nulls, position)
        for position, column in enumerate(schema.names())
        if column != target
    ]
    guesses = _confirm_indexes(frame, guesses, nulls)
    if all(g.spec.startswith("{type: ignore") for g in guesses):
        raise DataError(f"'{data}': no column other than the target is usable as a feature")
    duplicates = _count_duplicates(frame, [g.name for g in guesses if "type: ignore" not in g.spec], target)

    stem = Path(paths[0]).name.split(".")[0]
    config_name = name or "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in stem) or "model"
    width = max(len(g.name) for g in guesses) + 1
    sampled = f"{total:,} rows" + (
        f", {sample.height:,} sampled across the file" if sample.height < total else ""
    )
    dedupe = "  dedupe: false"
    if duplicates:
        dedupe += (
            f"   # {duplicates:,} rows ({duplicates / total:.1%}) duplicate an earlier row (target and used "
            f"columns): they can leak across splits; true drops them"
        )
    split = starter_split(total)
    lines = [
        f"# leanml config written by `leanml init` from {data} ({sampled}).",
        "# Edit the column specs below; `leanml prepare THIS_FILE` validates and runs them.",
        f"name: {config_name}",
        "data:",
        f"  train: {_yaml_str(os.path.relpath(os.path.abspath(data), os.path.abspath(config_dir)))}",
        *([f"  separator: {json.dumps(separator)}"] if separator not in (None, ",") else []),
        *([f"  encoding: {encoding}   # not UTF-8"] if encoding != "utf-8" else []),
        f"  null_values: [{', '.join(_yaml_str(v) for v in nulls)}]",
        f"  split: {_flow(split)}   # or {{by: DATETIME_COLUMN}}"
        + ("" if split["validation"] == 0.1 else f"; {VERIFY_ROWS:,} validation rows verify shrink"),
        dedupe,
        "  max_invalid: 0.01   # prepare fails when more of a column cannot be read as its type",
        f"target: {_yaml_str(target)}",
        f"task: {target_state.task}"
        + (f"   # classes: {', '.join(map(str, target_state.labels[:10]))}" if target_state.labels else ""),
        "columns:",
    ]
    for g in guesses:
        key = _yaml_str(g.name) + ":"
        lines.append(f"  {key:<{width + 2}} {g.spec}" + (f"   # {g.comment}" if g.comment else ""))
    lines += [
        "# The defaults that won bench/quality.py against LightGBM: a 3 x 256 MLP over periodic embeddings",
        "# of the numeric features (with piecewise-linear bins of those with many distinct values), AdamW",
        "# with a warm-up and a cosine schedule, the best epoch kept.",
        f"model: {_flow(STARTER_MODEL)}   # arch: linear | mlp | resmlp | tabm",
        f"train: {_flow(starter_train(total))}",
        "shrink: {methods: [distill, prune, quantize], max_metric_drop: 0.01}   # leanml shrink MODEL",
        "serve: {host: 127.0.0.1, port: 8000, max_batch_size: 64, max_wait_ms: 0}",
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


def _flow_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _guess(sample: pl.DataFrame, name: str, nulls: list[str], position: int) -> ColumnGuess:
    dtype = sample.schema[name]
    rows = sample.height
    if dtype.is_temporal():
        if dtype == pl.Duration or dtype == pl.Time:
            return ColumnGuess(name, "{type: ignore}", f"{dtype} values are not supported yet")
        return _datetime_guess(sample, name, nulls, dtype, rows, None)
    if dtype == pl.Object:
        return ColumnGuess(name, "{type: ignore}", f"{dtype} values are not supported")
    try:
        spaced = dtype == pl.String and bool(
            sample.select((pl.col(name) != pl.col(name).str.strip_chars(convert.WHITESPACE)).any()).item()
        )
        key = convert.to_category(name, dtype, nulls, convert.CategoryOptions(strip=spaced)).value
    except DataError:
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
    text = sample[name].str.strip_chars(convert.WHITESPACE) if dtype == pl.String else None
    present_text = text.filter(text.is_not_null() & text.is_in(nulls).not_()) if text is not None else None

    if dtype == pl.Boolean or (present_text is not None and convert.is_boolean_text(present_text)):
        return ColumnGuess(
            name,
            f"{{type: categorical, boolean: true, impute: constant{indicator}, encode: onehot}}",
            f"{note}: booleans (true/false, yes/no, 1/0 read alike)",
        )
    if dtype.is_numeric():
        return _numeric_guess(sample, name, nulls, dtype, None, note, indicator, position)
    if present_text is not None:
        options = convert.detect_number_options(present_text) or convert.NumberOptions()
        share = _share(sample, convert.to_number(name, dtype, nulls, options))
        if share >= PARSE_SHARE:
            return _numeric_guess(sample, name, nulls, dtype, options, note, indicator, position)
        if share >= 0.5 and distinct > GROUP_RARE_ABOVE:
            # Mostly numbers and some junk: a number column whose junk the user must decide about.
            invalid = convert.to_number("v", pl.String, [], options).invalid
            bad = present_text.to_frame("v").filter(invalid)["v"].head(3).to_list()
            note += (
                f"; {1 - share:.0%} are not numbers (e.g. {', '.join(map(repr, bad))}): fix them, "
                f"or set invalid: reject / raise data.max_invalid"
            )
            return _numeric_guess(sample, name, nulls, dtype, options, note, indicator, position)

    date_note = ""
    if present_text is not None:
        formats, share = _date_formats(sample, name, nulls, present_text)
        if formats and share >= PARSE_SHARE:
            return _datetime_guess(sample, name, nulls, dtype, rows, formats)
        if formats and share >= 0.5:
            date_note = f"; only {share:.0%} read as dates ({', '.join(formats[:4])}), so not a datetime"
    if dtype == pl.String and distinct == present and rows > 50:
        return ColumnGuess(name, "{type: ignore}", "every value distinct: looks like an id" + date_note)
    if dtype == pl.String and (facts["length"] or 0) > FREE_TEXT_LENGTH:
        return ColumnGuess(
            name, "{type: ignore}", f"free text (mean length {facts['length']:.0f}){date_note}"
        )
    if distinct > MAX_CATEGORIES:
        return ColumnGuess(
            name, "{type: ignore}", f"{distinct:,} distinct values: too many to one-hot encode{date_note}"
        )
    rare = ""
    if distinct > GROUP_RARE_ABOVE:
        rare = f", min_frequency: {max(10, math.ceil(rows * 0.001))}"
    strip = ", strip: true" if spaced else ""
    spaces = ", values had surrounding spaces" if spaced else ""
    return ColumnGuess(
        name,
        f"{{type: categorical, impute: constant{indicator}, encode: onehot{rare}{strip}}}",
        note + spaces + date_note,
    )


def _numeric_guess(
    sample: pl.DataFrame,
    name: str,
    nulls: list[str],
    dtype: pl.DataType,
    options: convert.NumberOptions | None,
    note: str,
    indicator: str,
    position: int,
) -> ColumnGuess:
    rows = sample.height
    values = sample.select(convert.to_number(name, dtype, nulls, options).value.alias("v"))["v"]
    present = values.drop_nulls()
    unique_integers = (
        present.len() == rows
        and rows > 1
        and bool((present == present.floor()).all())
        and present.n_unique() == rows
    )
    index = unique_integers and (
        position == 0 or name.strip().lower() in INDEX_NAMES or is_pandas_index(name)
    )
    if unique_integers and dtype.is_integer() and rows > 50:
        return ColumnGuess(name, "{type: ignore}", "every value distinct: looks like an id", index=index)
    lo, hi = values.min(), values.max()
    outliers = ""
    tail_share = _tail_share(values)
    distinct = present.n_unique()
    if distinct > 20 and TAIL_SHARE[0] <= tail_share <= TAIL_SHARE[1]:
        outliers = f", outliers: {{method: iqr, k: {TAIL_K}, action: clip}}"
        note += f", {tail_share:.1%} beyond {TAIL_K}·IQR"
    encode = ""
    if distinct >= PLE_MIN_DISTINCT:
        encode = ", encode: ple"
        note += ", piecewise-linear bins (many distinct values)"
    written = ""
    if options is not None and options != convert.NumberOptions():
        keys = [f"thousands: {json.dumps(options.thousands)}"] if options.thousands else []
        keys += [f"decimal: {json.dumps(options.decimal)}"] if options.decimal != "." else []
        written = ", " + ", ".join(keys)
        note += f", numbers written like {convert.format_number_example(options)}"
    return ColumnGuess(
        name,
        f"{{type: numeric{written}, impute: median{indicator}, scale: standard{outliers}{encode}}}",
        f"{note}, range {_num(lo)}..{_num(hi)}",
        index=index,
    )


def _date_formats(
    sample: pl.DataFrame, name: str, nulls: list[str], present: pl.Series
) -> tuple[list[str], float]:
    """Formats that read a text column as dates, chosen on up to DATE_SAMPLE_VALUES distinct values
    (spread across the sample), and the share of the column's present values they read."""
    with_digits = present.head(1000).str.contains("[0-9]").mean() if present.len() else 0.0
    if not with_digits or float(with_digits) < 0.5:  # type: ignore[arg-type]
        return [], 0.0
    distinct = present.unique(maintain_order=True)
    if distinct.len() > DATE_SAMPLE_VALUES:
        distinct = distinct.gather_every(math.ceil(distinct.len() / DATE_SAMPLE_VALUES))
    formats, _ = convert.infer_datetime_formats(distinct)
    if not formats:
        return [], 0.0
    return formats, _share(sample, convert.to_datetime(name, pl.String, nulls, formats))


def _datetime_guess(
    sample: pl.DataFrame,
    name: str,
    nulls: list[str],
    dtype: pl.DataType,
    rows: int,
    formats: list[str] | None,
) -> ColumnGuess:
    value = convert.to_datetime(name, dtype, nulls, formats).value
    facts = sample.select(
        value.min().alias("lo"), value.max().alias("hi"), value.is_null().sum().alias("nulls")
    )
    lo, hi, missing = facts.row(0)
    if lo is None:
        return ColumnGuess(name, "{type: ignore}", "every sampled value is missing")
    has_time = sample.select((value.dt.hour() + value.dt.minute() + value.dt.second()).max()).item()
    parts = "[hour, dayofweek, month]" if has_time else "[dayofweek, month]"
    indicator = ", missing_indicator: true" if missing / rows >= 0.05 else ""
    written = f", formats: {_flow_list(formats)}" if formats else ""
    note = f"{missing / rows:.1%} missing or unreadable, {lo} .. {hi}"
    if formats and len(formats) > 1:
        note += f", {len(formats)} formats mixed"
    if formats and {"%d/%m/%Y", "%m/%d/%Y"} <= {f.split(" ")[0] for f in formats}:
        note += "; day/month order is ambiguous: check the order of formats"
    return ColumnGuess(name, f"{{type: datetime{written}, parts: {parts}, epoch: true{indicator}}}", note)


def _confirm_indexes(frame: pl.LazyFrame, guesses: list[ColumnGuess], nulls: list[str]) -> list[ColumnGuess]:
    """Over the whole file, a candidate index is one when it holds the integers lo..lo+n-1, once each
    (checked by count, range, sum and sum of squares in one streaming pass); else an id (unique integers
    in a first or index-named column) when there are enough rows to tell."""
    candidates = [g for g in guesses if g.index]
    if not candidates:
        return guesses
    schema = frame.collect_schema()
    exprs = [pl.len().alias("__n")]
    for i, g in enumerate(candidates):
        v = convert.to_number(g.name, schema[g.name], nulls).value
        exprs += [
            v.count().alias(f"{i}|count"),
            v.min().alias(f"{i}|lo"),
            v.max().alias(f"{i}|hi"),
            v.sum().alias(f"{i}|sum"),
            ((v - v.min()) ** 2).sum().alias(f"{i}|sq"),
        ]
    row = frame.select(exprs).collect(engine="streaming").row(0, named=True)
    n = int(row["__n"])
    confirmed = set()
    for i, g in enumerate(candidates):
        lo, hi = row[f"{i}|lo"], row[f"{i}|hi"]
        if lo is None or row[f"{i}|count"] != n or hi - lo + 1 != n:
            continue
        sums = math.isclose(row[f"{i}|sum"], n * lo + n * (n - 1) / 2, rel_tol=1e-9)
        if sums and math.isclose(row[f"{i}|sq"], (n - 1) * n * (2 * n - 1) / 6, rel_tol=1e-9):
            confirmed.add(g.name)
    result = []
    for g in guesses:
        if g.name in confirmed:
            reason = "an index (unique consecutive integers), as pandas writes one: not a feature"
            result.append(replace(g, spec="{type: ignore}", comment=reason, index=False))
        elif g.index and n > 50:
            result.append(ColumnGuess(g.name, "{type: ignore}", "every value distinct: looks like an id"))
        else:
            result.append(replace(g, index=False))
    return result


def _count_duplicates(frame: pl.LazyFrame, used: list[str], target: str) -> int:
    """Rows equal to an earlier row in the target and every used column (one hash per distinct row)."""
    key = pl.struct([pl.col(c) for c in [*used, target]]).hash(seed=0)
    return int(frame.select(pl.len() - key.n_unique()).collect(engine="streaming").item())


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


STARTER_MODEL: dict[str, Any] = {
    "arch": "mlp",
    "hidden": [256, 256, 256],
    "dropout": 0.1,
    "embedding": "periodic",
}
"""The ``model`` section ``init`` writes (the default that won bench/quality.py against LightGBM)."""


VERIFY_ROWS = 4000
"""Validation rows ``init`` keeps where the table allows (up to :data:`MAX_VALIDATION` of it): shrink judges
a student's drop on them, and a budget of half a point or 1 % of RMSE needs a standard error below it. On
801 and 1,232 rows (10 % of two small tables) no student could be verified; on 2,460 rows of the
regression the errors were still 0.75-1.2 % (against 1 %), on 3,700 it was verified and kept within budget
on the test rows (BENCHMARKS.md, Quality). The error shrinks with the square root of the rows."""
MAX_VALIDATION = 0.3


def starter_split(rows: int) -> dict[str, Any]:
    """The ``data.split`` section ``init`` writes for a table of ``rows`` rows: 10 % validation, more on a
    small table so that it holds :data:`VERIFY_ROWS` rows (at most :data:`MAX_VALIDATION`), 10 % test."""
    wanted = math.ceil(100 * VERIFY_ROWS / max(rows, 1)) / 100
    return {
        "validation": min(MAX_VALIDATION, max(0.1, wanted)),
        "test": 0.1,
        "seed": 0,
        "stratify": True,
    }


def starter_train(rows: int) -> dict[str, Any]:
    """The ``train`` section ``init`` writes for a table of ``rows`` rows: the whole cosine schedule, then
    the weights of the epoch with the best validation metric (``restore_best``), as RealMLP selects its
    best epoch (Holzmüller et al., 2024). Early stopping (patience 6) ended diamonds' runs halfway down the
    schedule on a noisy validation metric, before the low learning rates that refine a fit: run to the end,
    its teacher went from 2.1 % behind LightGBM to level (three seeds); tables whose best epoch comes early
    keep that epoch's weights, so their models did not change (BENCHMARKS.md, model quality)."""
    return {
        "optimizer": "adamw",
        "lr": 1.0e-3,
        "weight_decay": 1.0e-4,
        "batch_size": batch_size(rows),
        "epochs": 30,
        "warmup_epochs": 1,
        "schedule": "cosine",
        "restore_best": True,
    }


def _flow(value: Any) -> str:
    """``value`` (a dict or list of numbers and plain words) as one YAML flow line: ``{a: 1, b: [2, 3]}``."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and 0 < abs(value) < 1e-2:
        return f"{value:.1e}".replace("e-0", "e-")  # 1.0e-3: YAML 1.1 (PyYAML) reads a float only with a dot
    return str(value)


def batch_size(rows: int) -> int:
    """The starter batch size for a table of ``rows``: small batches generalize better on small tables,
    larger ones keep an epoch of a few hundred thousand rows within a minute or two on a laptop."""
    if rows <= 10_000:
        return 64
    if rows <= 50_000:
        return 256
    return 512 if rows <= 500_000 else 1024
