"""Analyze and transform: preprocessing as frozen statistics plus Polars expressions.

``fit_preprocessor`` (analyze) reduces the training rows to a :class:`PreprocessState` in streaming
passes over a lazy frame: one pass for all statistics, preceded by one for outlier bounds when a column
has an IQR or z-score rule (the bounds must be frozen before the statistics they change). ``annotate`` and
``transform`` turn that state back into expressions, so the same description runs over a lazy scan of a
file larger than memory, an in-memory frame, or a single JSON record.

The per-column order is fixed: convert the raw value → handle outliers → impute → scale / encode.
Scaling statistics are those of the *imputed* column, exactly as a scikit-learn
``SimpleImputer`` → ``StandardScaler`` pipeline computes them.

``mode`` says whose rules apply: ``"train"`` drops rows whose outliers have ``action: drop``;
``"serve"`` applies the column's serving policy (clip, flag or reject) to such rows instead and rejects
unseen categories of columns with ``handle_unknown: error``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import polars as pl

from leanml.config import CategoricalColumn, ColumnSpec, DatetimeColumn, NumericColumn
from leanml.data import convert
from leanml.data.io import collect_each
from leanml.data.state import (
    CategoricalState,
    DatetimeOutput,
    DatetimeState,
    NumericState,
    OutlierState,
    PreprocessState,
    ScaleState,
    TargetState,
    feature_names,
)
from leanml.data.stats import Moments, ValueCounts, moment_exprs, moments_from_row, value_counts_query
from leanml.errors import DataError

Mode = Literal["train", "serve"]
REASON = "__reason"
FLAGS = "__flags"
AnyState = NumericState | CategoricalState | DatetimeState
Frame = pl.LazyFrame | pl.DataFrame


# Names of the intermediate columns added by ``annotate``; the "__" prefix is reserved for them.
def _value(name: str) -> str:
    return f"__v:{name}"


def _missing(name: str) -> str:
    return f"__miss:{name}"


def _invalid(name: str) -> str:
    return f"__inv:{name}"


def _outlier(name: str) -> str:
    return f"__out:{name}"


def _handled(name: str) -> str:
    return f"__h:{name}"


def _part(name: str, part: str) -> str:
    return f"__p:{name}:{part}"


def feature_column(feature: str) -> str:
    """Name of a feature's column in an annotated frame (kept apart from the raw column of that name)."""
    return f"__f:{feature}"


# --------------------------------------------------------------------------------------------------
# Stage 1: convert raw values
# --------------------------------------------------------------------------------------------------
def _convert_exprs(
    name: str, kind: str, dtype: pl.DataType, null_values: list[str], fmt: str | None = None
) -> list[pl.Expr]:
    if kind == "numeric":
        converted = convert.to_number(name, dtype, null_values)
    elif kind == "categorical":
        converted = convert.to_category(name, dtype, null_values)
    else:
        converted = convert.to_datetime(name, dtype, null_values, fmt)
    return [
        converted.value.alias(_value(name)),
        converted.missing.fill_null(True).alias(_missing(name)),
        converted.invalid.fill_null(False).alias(_invalid(name)),
    ]


def _input_dtype(schema: pl.Schema, name: str) -> pl.DataType:
    # A column absent from a request or record is all-null; the validator reports it when required.
    return schema.get(name, pl.Null)


# --------------------------------------------------------------------------------------------------
# Stage 2: outliers and other row rules
# --------------------------------------------------------------------------------------------------
def _effective_action(rule: OutlierState, mode: Mode) -> str:
    """What happens to a value outside the bounds: clip, null, drop, flag or reject."""
    if rule.action != "drop":
        return rule.action
    return "drop" if mode == "train" else rule.serving


def _outlier_exprs(name: str, rule: OutlierState | None, mode: Mode) -> list[pl.Expr]:
    value = pl.col(_value(name))
    if rule is None:
        return [pl.lit(False).alias(_outlier(name)), value.alias(_handled(name))]
    flagged = pl.lit(False)
    if rule.lower is not None:
        flagged = flagged | (value < rule.lower)
    if rule.upper is not None:
        flagged = flagged | (value > rule.upper)
    flagged = flagged.fill_null(False)
    action = _effective_action(rule, mode)
    if action == "clip":
        handled = value.clip(rule.lower, rule.upper)
    elif action == "null":
        handled = pl.when(flagged).then(None).otherwise(value)
    else:
        handled = value
    return [flagged.alias(_outlier(name)), handled.alias(_handled(name))]


def rejection_rules(states: Sequence[AnyState], mode: Mode) -> list[tuple[str, str, pl.Expr]]:
    """Per column, the conditions (over an annotated frame) that drop a row (train) or reject it (serve).

    Each entry is ``(column, reason, condition)``; the reason reads ``outlier:COL`` or
    ``unseen_category:COL``. ``annotate`` uses the first that holds as ``__reason``; the server's
    validator reports every one of them.
    """
    rules: list[tuple[str, str, pl.Expr]] = []
    for state in states:
        rule = state.outliers if isinstance(state, NumericState) else None
        if rule is not None and _effective_action(rule, mode) in ("drop", "reject"):
            rules.append((state.name, f"outlier:{state.name}", pl.col(_outlier(state.name))))
        if isinstance(state, CategoricalState) and state.handle_unknown == "error" and mode == "serve":
            rules.append((state.name, f"unseen_category:{state.name}", _unseen(state)))
    return rules


def _row_rules(states: Sequence[AnyState], mode: Mode) -> tuple[pl.Expr, pl.Expr]:
    """The reason a row is dropped (train) or rejected (serve), and the columns flagged, per row."""
    reasons = [
        pl.when(condition).then(pl.lit(reason)) for _, reason, condition in rejection_rules(states, mode)
    ]
    flags = [
        pl.when(pl.col(_outlier(state.name))).then(pl.lit(state.name))
        for state in states
        if isinstance(state, NumericState)
        and state.outliers is not None
        and _effective_action(state.outliers, mode) == "flag"
    ]
    reason = pl.coalesce(reasons) if reasons else pl.lit(None, dtype=pl.String)
    if flags:
        joined = pl.concat_str(flags, separator=",", ignore_nulls=True)
        flag = pl.when(joined == "").then(None).otherwise(joined)
    else:
        flag = pl.lit(None, dtype=pl.String)
    return reason.alias(REASON), flag.alias(FLAGS)


def _unseen(state: CategoricalState) -> pl.Expr:
    handled = pl.col(_handled(state.name))
    return handled.is_not_null() & handled.is_in([*state.categories, *state.infrequent]).not_()


# --------------------------------------------------------------------------------------------------
# Stage 3: impute, scale, encode
# --------------------------------------------------------------------------------------------------
def _scaled(expr: pl.Expr, scale: ScaleState) -> pl.Expr:
    if scale.method == "none":
        return expr
    return (expr - scale.offset) / scale.divisor


def _feature_exprs(state: AnyState) -> list[pl.Expr]:
    handled = pl.col(_handled(state.name))
    names = feature_names(state)
    exprs: list[pl.Expr]
    if isinstance(state, NumericState):
        exprs = [_scaled(handled.fill_null(state.fill), state.scale)]
    elif isinstance(state, CategoricalState):
        filled = handled.fill_null(state.fill)
        exprs = [(filled == category).cast(pl.Float64) for category in state.categories]
        if state.infrequent:
            exprs.append(filled.is_in(state.infrequent).cast(pl.Float64))
    else:
        seconds = handled.fill_null(state.fill_epoch)
        moment = convert.from_epoch_seconds(seconds)
        exprs = [
            _scaled(seconds if out.part == "epoch" else convert.datetime_part(moment, out.part), out.scale)
            for out in state.outputs
        ]
    if state.indicator:
        exprs.append(handled.is_null().cast(pl.Float64))
    return [e.cast(pl.Float64).alias(feature_column(n)) for e, n in zip(exprs, names, strict=True)]


# --------------------------------------------------------------------------------------------------
# Public: annotate and transform
# --------------------------------------------------------------------------------------------------
def annotate(frame: Frame, state: PreprocessState, mode: Mode = "serve") -> pl.LazyFrame:
    """Add every intermediate column, the features, ``__reason`` and ``__flags`` to a frame (lazily).

    ``__reason`` is null for a row that is kept and names the rule otherwise (``outlier:dep_delay``);
    ``__flags`` lists the columns whose serving policy is ``flag`` and whose value was outside its bounds.
    """
    lazy = frame.lazy()
    return apply_stages(lazy, annotation_stages(lazy.collect_schema(), state, mode))  # type: ignore[return-value]


Stages = tuple[list[pl.Expr], list[pl.Expr], list[pl.Expr]]


def annotation_stages(schema: pl.Schema, state: PreprocessState, mode: Mode) -> Stages:
    """The expressions of :func:`annotate` for input columns of ``schema``: convert, handle, features.

    They depend only on the state, the mode and the input dtypes, so a server builds them once per
    input schema and reuses them for every batch (see :func:`apply_stages`).
    """
    fmt = {c.name: c.format for c in state.columns if isinstance(c, DatetimeState)}
    stage1 = [
        expr
        for c in state.columns
        for expr in _convert_exprs(
            c.name, c.type, _input_dtype(schema, c.name), state.null_values, fmt.get(c.name)
        )
    ]
    stage2: list[pl.Expr] = []
    for c in state.columns:
        if isinstance(c, NumericState):
            stage2 += _outlier_exprs(c.name, c.outliers, mode)
        elif isinstance(c, DatetimeState):
            stage2 += [
                pl.lit(False).alias(_outlier(c.name)),
                convert.epoch_seconds(pl.col(_value(c.name))).alias(_handled(c.name)),
            ]
        else:
            stage2 += [pl.lit(False).alias(_outlier(c.name)), pl.col(_value(c.name)).alias(_handled(c.name))]
    stage3 = [*(e for c in state.columns for e in _feature_exprs(c)), *_row_rules(state.columns, mode)]
    return stage1, stage2, stage3


def apply_stages(frame: Frame, stages: Stages) -> Frame:
    """Apply the three stages of :func:`annotation_stages` (lazily to a lazy frame, eagerly to a frame)."""
    stage1, stage2, stage3 = stages
    return frame.with_columns(stage1).with_columns(stage2).with_columns(stage3)


def transform(
    frame: Frame, state: PreprocessState, *, mode: Mode = "serve", keep: Iterable[str] = ()
) -> Frame:
    """Model inputs for each row: ``keep`` columns, then the features, then ``__reason`` and ``__flags``.

    Returns the same kind of frame it was given (lazy in, lazy out). Rows are never removed here: a row
    whose ``__reason`` is set would be dropped in training or rejected in serving, and the caller decides.
    """
    features = [pl.col(feature_column(n)).alias(n) for n in state.feature_names]
    out = annotate(frame, state, mode).select([*keep, *features, REASON, FLAGS])
    return out if isinstance(frame, pl.LazyFrame) else out.collect()


def transform_records(
    records: Sequence[Mapping[str, Any]], state: PreprocessState, mode: Mode = "serve"
) -> pl.DataFrame:
    """Transform JSON-like records (one dict per row) with the same expressions as a frame."""
    return transform(records_frame(records, [c.name for c in state.columns]), state, mode=mode)  # type: ignore[return-value]


def records_frame(records: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> pl.DataFrame:
    """A frame with one column per name from JSON-like records; a key absent from a record is null."""
    return columns_frame({name: [record.get(name) for record in records] for name in columns}, len(records))


def columns_frame(columns: Mapping[str, Sequence[Any]], height: int) -> pl.DataFrame:
    """A frame from lists of JSON-like values per column; a column of mixed types becomes text."""
    data: dict[str, pl.Series] = {}
    for name, values in columns.items():
        try:
            series = pl.Series(name, values, strict=True)
        except (TypeError, pl.exceptions.PolarsError, OverflowError):
            series = pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)
        data[name] = series
    return pl.DataFrame(data, height=height)


def invalid_column(name: str) -> str:
    """Name of the flag column (in an annotated frame) that marks values of ``name`` not convertible."""
    return _invalid(name)


def feature_matrix(frame: pl.DataFrame, state: PreprocessState, dtype: Any = np.float64) -> np.ndarray:
    """The feature columns of a transformed frame as one C-contiguous 2-D array."""
    return to_matrix(frame.select(state.feature_names), dtype)


def to_matrix(frame: pl.DataFrame, dtype: Any = np.float32) -> np.ndarray:
    """Every column of ``frame`` as one C-contiguous 2-D array of ``dtype`` (cast by Polars, row-major
    as ONNX Runtime and PyTorch want it: several times faster than converting the numpy array)."""
    target = pl.Float32 if np.dtype(dtype) == np.float32 else pl.Float64
    return frame.select(pl.all().cast(target)).to_numpy(order="c")


# --------------------------------------------------------------------------------------------------
# Analyze
# --------------------------------------------------------------------------------------------------
def check_columns(schema: pl.Schema, columns: Mapping[str, ColumnSpec], target: str | None) -> None:
    """Raise a :class:`DataError` naming every configured column the data does not have."""
    missing = [name for name in columns if name not in schema]
    if target is not None and target not in schema:
        missing.insert(0, target)
    if missing:
        raise DataError(
            f"column(s) {', '.join(repr(m) for m in missing)} are in the config but not in the data; "
            f"the data has: {', '.join(schema.names())}"
        )


def check_reserved(schema: pl.Schema) -> None:
    """Raise a :class:`DataError` when raw data uses the ``__`` prefix leanml keeps for its own columns."""
    reserved = [name for name in schema.names() if name.startswith("__")]
    if reserved:
        raise DataError(f"column names starting with '__' are reserved for leanml: {', '.join(reserved)}")


def fit_preprocessor(
    frame: Frame, columns: Mapping[str, ColumnSpec], target: TargetState, null_values: Sequence[str]
) -> PreprocessState:
    """Analyze the training rows: compute and freeze every statistic ``transform`` needs.

    ``frame`` holds training rows only (the split happens before this). Raises :class:`DataError` when a
    configured column is absent, or has no usable value in the training rows.
    """
    lazy = frame.lazy()
    schema = lazy.collect_schema()
    check_columns(schema, columns, None)
    nulls = list(null_values)
    active = {name: spec for name, spec in columns.items() if spec.type != "ignore"}
    active = _with_datetime_formats(lazy, schema, active, nulls)
    stage1 = lazy.with_columns(
        [
            expr
            for name, spec in active.items()
            for expr in _convert_exprs(name, spec.type, schema[name], nulls, getattr(spec, "format", None))
        ]
    )
    outliers = _fit_outliers(stage1, active, in_memory=isinstance(frame, pl.DataFrame))

    stage2_exprs: list[pl.Expr] = []
    for name, spec in active.items():
        if isinstance(spec, NumericColumn):
            stage2_exprs += _outlier_exprs(name, outliers.get(name), "train")
        elif isinstance(spec, DatetimeColumn):
            stage2_exprs.append(convert.epoch_seconds(pl.col(_value(name))).alias(_handled(name)))
        else:
            stage2_exprs.append(pl.col(_value(name)).alias(_handled(name)))
    stage2 = stage1.with_columns(stage2_exprs)
    part_exprs = [
        convert.datetime_part(convert.from_epoch_seconds(pl.col(_handled(name))), part).alias(
            _part(name, part)
        )
        for name, spec in active.items()
        if isinstance(spec, DatetimeColumn)
        for part in spec.parts
    ]
    drop_reasons = [pl.col(_outlier(name)) for name, rule in outliers.items() if rule.action == "drop"]
    kept = stage2.with_columns(part_exprs)
    if drop_reasons:
        kept = kept.filter(~pl.any_horizontal(drop_reasons))

    aggregates: list[pl.Expr] = [pl.len().alias("__rows")]
    counted: list[str] = []
    for name, spec in active.items():
        if isinstance(spec, CategoricalColumn):
            counted.append(name)
            continue
        aggregates += moment_exprs(_handled(name), f"{name}|")
        if spec.impute in ("median", "most_frequent"):
            counted.append(name)
        if isinstance(spec, DatetimeColumn):
            for part in spec.parts:
                aggregates += moment_exprs(_part(name, part), f"{name}|{part}|")
    queries = [kept.select(aggregates)] + [value_counts_query(kept, _handled(n)) for n in counted]
    results = _collect(queries, in_memory=isinstance(frame, pl.DataFrame))
    row = results[0].row(0, named=True)
    rows = int(row["__rows"])
    if rows == 0:
        raise DataError("no training rows are left to fit on (after splitting and cleaning)")
    counts = {name: ValueCounts.from_frame(res) for name, res in zip(counted, results[1:], strict=True)}

    states: list[AnyState] = []
    for name, spec in active.items():
        if isinstance(spec, NumericColumn):
            states.append(
                _numeric_state(
                    name, spec, rows, moments_from_row(row, f"{name}|"), counts.get(name), outliers.get(name)
                )
            )
        elif isinstance(spec, CategoricalColumn):
            states.append(_categorical_state(name, spec, rows, counts[name]))
        else:
            part_moments = {p: moments_from_row(row, f"{name}|{p}|") for p in spec.parts}
            states.append(
                _datetime_state(
                    name, spec, rows, moments_from_row(row, f"{name}|"), counts.get(name), part_moments
                )
            )
    ignored = [name for name, spec in columns.items() if spec.type == "ignore"]
    return PreprocessState(
        null_values=nulls, target=target, columns=states, ignored=ignored, training_rows=rows
    )


def _fit_outliers(
    frame: pl.LazyFrame, active: Mapping[str, ColumnSpec], in_memory: bool
) -> dict[str, OutlierState]:
    rules = {n: s.outliers for n, s in active.items() if isinstance(s, NumericColumn) and s.outliers}
    if not rules:
        return {}
    zscore = [n for n, r in rules.items() if r.method == "zscore"]
    iqr = [n for n, r in rules.items() if r.method == "iqr"]
    queries: list[pl.LazyFrame] = []
    if zscore:
        queries.append(frame.select([e for n in zscore for e in moment_exprs(_value(n), f"{n}|")]))
    queries += [value_counts_query(frame, _value(n)) for n in iqr]
    results = _collect(queries, in_memory)
    moments_row = results.pop(0).row(0, named=True) if zscore else {}
    quartiles = dict(zip(iqr, results, strict=True))

    states: dict[str, OutlierState] = {}
    for name, rule in rules.items():
        lower, upper = rule.min, rule.max
        if rule.method == "zscore":
            m = moments_from_row(moments_row, f"{name}|")
            _require_values(name, m.count)
            lower, upper = m.mean - rule.k * m.std, m.mean + rule.k * m.std
        elif rule.method == "iqr":
            vc = ValueCounts.from_frame(quartiles[name])
            _require_values(name, vc.total)
            q1, q3 = vc.quantile(0.25), vc.quantile(0.75)
            lower, upper = q1 - rule.k * (q3 - q1), q3 + rule.k * (q3 - q1)
        states[name] = OutlierState(
            method=rule.method, lower=lower, upper=upper, action=rule.action, serving=rule.serving
        )
    return states


FORMAT_SAMPLE_ROWS = 2000


def _with_datetime_formats(
    frame: pl.LazyFrame, schema: pl.Schema, active: dict[str, ColumnSpec], nulls: list[str]
) -> dict[str, ColumnSpec]:
    """Datetime specs of text columns get the format inferred from their first values when none is set."""
    result = dict(active)
    for name, spec in active.items():
        if isinstance(spec, DatetimeColumn) and spec.format is None and schema[name] == pl.String:
            text = pl.col(name).str.strip_chars()
            sample = (
                frame.select(text.alias(name))
                .filter(text.is_not_null() & text.is_in(nulls).not_())
                .head(FORMAT_SAMPLE_ROWS)
                .collect()[name]
            )
            fmt = convert.infer_datetime_format(sample)
            if fmt is not None:
                result[name] = spec.model_copy(update={"format": fmt})
    return result


def _collect(queries: list[pl.LazyFrame], in_memory: bool) -> list[pl.DataFrame]:
    """Run the analyze queries: together over rows already in memory (shared work), one at a time over a
    scan (a shared scan would be cached, i.e. loaded)."""
    if in_memory:
        return pl.collect_all(queries, engine="streaming")
    return collect_each(queries)


def _require_values(name: str, count: int) -> None:
    if count == 0:
        raise DataError(
            f"column '{name}': no usable value in the training rows (all missing or not convertible); "
            f"fix the data or set 'columns.{name}.type: ignore'"
        )


def _fit_scale(method: str, moments: Moments) -> ScaleState:
    if method == "standard":
        std = moments.std
        # scikit-learn's _handle_zeros_in_scale: a constant feature is left centred, not divided by ~0.
        return ScaleState(
            method="standard", offset=moments.mean, divisor=std if std > 10 * np.finfo(float).eps else 1.0
        )
    if method == "minmax":
        span = moments.max - moments.min
        return ScaleState(
            method="minmax", offset=moments.min, divisor=span if span > 10 * np.finfo(float).eps else 1.0
        )
    return ScaleState(method="none")


def _numeric_fill(
    name: str, impute: str, moments: Moments, counts: ValueCounts | None, constant: float | None
) -> float:
    if impute == "constant":
        assert constant is not None
        return float(constant)
    _require_values(name, moments.count)
    if impute == "mean":
        return moments.mean
    assert counts is not None
    return float(counts.median() if impute == "median" else counts.mode())


def _numeric_state(
    name: str,
    spec: NumericColumn,
    rows: int,
    moments: Moments,
    counts: ValueCounts | None,
    outliers: OutlierState | None,
) -> NumericState:
    fill = _numeric_fill(name, spec.impute, moments, counts, spec.fill_value)
    imputed = moments.with_constant(fill, rows - moments.count)
    return NumericState(
        name=name,
        impute=spec.impute,
        fill=fill,
        indicator=spec.missing_indicator,
        scale=_fit_scale(spec.scale, imputed),
        outliers=outliers,
        observed_min=imputed.min,
        observed_max=imputed.max,
    )


def _categorical_state(
    name: str, spec: CategoricalColumn, rows: int, counts: ValueCounts
) -> CategoricalState:
    if spec.impute == "most_frequent":
        _require_values(name, counts.total)
        fill = str(counts.mode())
    else:
        fill = spec.fill_value
    imputed = counts.merge(ValueCounts([fill], [rows - counts.total])) if rows > counts.total else counts
    threshold = 0.0
    if spec.min_frequency is not None:
        threshold = spec.min_frequency if isinstance(spec.min_frequency, int) else spec.min_frequency * rows
    frequent = [v for v, c in zip(imputed.values, imputed.counts, strict=True) if c >= threshold]
    rare = [v for v, c in zip(imputed.values, imputed.counts, strict=True) if c < threshold]
    return CategoricalState(
        name=name,
        impute=spec.impute,
        fill=fill,
        indicator=spec.missing_indicator,
        categories=[str(v) for v in frequent],
        infrequent=[str(v) for v in rare],
        handle_unknown=spec.handle_unknown,
    )


def _datetime_state(
    name: str,
    spec: DatetimeColumn,
    rows: int,
    moments: Moments,
    counts: ValueCounts | None,
    part_moments: Mapping[str, Moments],
) -> DatetimeState:
    fill = _numeric_fill(name, spec.impute, moments, counts, None)
    missing = rows - moments.count
    outputs = []
    if spec.epoch:
        outputs.append(
            DatetimeOutput(part="epoch", scale=_fit_scale(spec.scale, moments.with_constant(fill, missing)))
        )
    moment = convert.from_epoch_seconds(pl.lit(fill, dtype=pl.Float64))
    for part in spec.parts:
        fill_part = float(pl.select(convert.datetime_part(moment, part)).item())
        imputed = part_moments[part].with_constant(fill_part, missing)
        outputs.append(DatetimeOutput(part=part, scale=_fit_scale(spec.scale, imputed)))
    imputed_epoch = moments.with_constant(fill, missing)
    return DatetimeState(
        name=name,
        format=spec.format,
        impute=spec.impute,
        fill_epoch=fill,
        indicator=spec.missing_indicator,
        outputs=outputs,
        observed_min=imputed_epoch.min,
        observed_max=imputed_epoch.max,
    )


# --------------------------------------------------------------------------------------------------
# Quality counts (used by the prepare stage's report)
# --------------------------------------------------------------------------------------------------
QUALITY_METRICS = ("missing", "invalid", "outliers", "clipped", "flagged", "imputed", "unseen", "infrequent")


def quality_exprs(state: PreprocessState, mode: Mode) -> list[pl.Expr]:
    """Aggregations over an annotated frame giving, per column, the counts of :data:`QUALITY_METRICS`.

    Result columns are named ``column|metric``.
    """
    exprs: list[pl.Expr] = []
    for c in state.columns:
        name = c.name
        handled = pl.col(_handled(name))
        outlier = pl.col(_outlier(name))
        action = _effective_action(c.outliers, mode) if isinstance(c, NumericState) and c.outliers else None
        zero = pl.lit(0, dtype=pl.UInt32)
        metrics = {
            "missing": pl.col(_missing(name)).sum(),
            "invalid": pl.col(_invalid(name)).sum(),
            "outliers": outlier.sum(),
            "clipped": outlier.sum() if action == "clip" else zero,
            "flagged": outlier.sum() if action == "flag" else zero,
            "imputed": handled.is_null().sum(),
            "unseen": _unseen(c).sum() if isinstance(c, CategoricalState) else zero,
            "infrequent": handled.is_in(c.infrequent).sum() if isinstance(c, CategoricalState) else zero,
        }
        exprs += [expr.cast(pl.Int64).alias(f"{name}|{metric}") for metric, expr in metrics.items()]
    return exprs
