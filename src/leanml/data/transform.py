"""Transform: frozen preprocessing statistics turned back into Polars expressions.

``annotate`` and ``transform`` turn a :class:`PreprocessState` (fitted by
:func:`leanml.data.fit.fit_preprocessor`) into expressions, so the same description runs over a lazy scan of a
file larger than memory, an in-memory frame, or a single JSON record.

The per-column order is fixed: convert the raw value → handle outliers → impute → scale / encode
(a numeric column's piecewise-linear encoding is computed from the imputed value, beside its scaling).
Scaling statistics are those of the *imputed* column, exactly as a scikit-learn
``SimpleImputer`` → ``StandardScaler`` pipeline computes them.

``mode`` says whose rules apply: ``"train"`` drops rows whose outliers have ``action: drop``;
``"serve"`` applies the column's serving policy (clip, flag or reject) to such rows instead and rejects
unseen categories of columns with ``handle_unknown: error``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import polars as pl

from leanml.config import ColumnSpec
from leanml.data import convert
from leanml.data.io import is_pandas_index, not_a_column_hint
from leanml.data.state import (
    CategoricalState,
    DatetimeState,
    NumericState,
    OutlierState,
    PreprocessState,
    ScaleState,
    feature_names,
)
from leanml.errors import DataError

Mode = Literal["train", "serve"]
REASON = "__reason"
FLAGS = "__flags"
AnyState = NumericState | CategoricalState | DatetimeState
Frame = pl.LazyFrame | pl.DataFrame


# Names of the intermediate columns added by ``annotate``; the "__" prefix is reserved for them.
def value_column(name: str) -> str:
    return f"__v:{name}"


def missing_column(name: str) -> str:
    return f"__miss:{name}"


def invalid_flag(name: str) -> str:
    return f"__inv:{name}"


def outlier_flag(name: str) -> str:
    return f"__out:{name}"


def handled_column(name: str) -> str:
    return f"__h:{name}"


def part_column(name: str, part: str) -> str:
    return f"__p:{name}:{part}"


def feature_column(feature: str) -> str:
    """Name of a feature's column in an annotated frame (kept apart from the raw column of that name)."""
    return f"__f:{feature}"


# --------------------------------------------------------------------------------------------------
# Stage 1: convert raw values
# --------------------------------------------------------------------------------------------------
def convert_exprs(name: str, column: Any, dtype: pl.DataType, null_values: list[str]) -> list[pl.Expr]:
    """The typed value, missing flag and invalid flag of a column (a spec or a state) as expressions."""
    converted = convert.convert_column(name, column, dtype, null_values)
    return [
        converted.value.alias(value_column(name)),
        converted.missing.fill_null(True).alias(missing_column(name)),
        converted.invalid.fill_null(False).alias(invalid_flag(name)),
    ]


def _input_dtype(schema: pl.Schema, name: str) -> pl.DataType:
    # A column absent from a request or record is all-null; the validator reports it when required.
    return schema.get(name, pl.Null)


# --------------------------------------------------------------------------------------------------
# Stage 2: outliers and other row rules
# --------------------------------------------------------------------------------------------------
def effective_action(rule: OutlierState, mode: Mode) -> str:
    """What happens to a value outside the bounds: clip, null, drop, flag or reject."""
    if rule.action != "drop":
        return rule.action
    return "drop" if mode == "train" else rule.serving


def outlier_exprs(name: str, rule: OutlierState | None, mode: Mode) -> list[pl.Expr]:
    value = pl.col(value_column(name))
    if rule is None:
        return [pl.lit(False).alias(outlier_flag(name)), value.alias(handled_column(name))]
    flagged = pl.lit(False)
    if rule.lower is not None:
        flagged = flagged | (value < rule.lower)
    if rule.upper is not None:
        flagged = flagged | (value > rule.upper)
    flagged = flagged.fill_null(False)
    action = effective_action(rule, mode)
    if action == "clip":
        handled = value.clip(rule.lower, rule.upper)
    elif action == "null":
        handled = pl.when(flagged).then(None).otherwise(value)
    else:
        handled = value
    return [flagged.alias(outlier_flag(name)), handled.alias(handled_column(name))]


def rejection_rules(states: Sequence[AnyState], mode: Mode) -> list[tuple[str, str, pl.Expr]]:
    """Per column, the conditions (over an annotated frame) that drop a row (train) or reject it (serve).

    Each entry is ``(column, reason, condition)``; the reason reads ``invalid:COL`` (a value that cannot
    be read as the column's type, under ``invalid: reject``), ``outlier:COL`` or ``unseen_category:COL``.
    ``annotate`` uses the first that holds as ``__reason``; the server's validator reports every one.
    """
    rules: list[tuple[str, str, pl.Expr]] = []
    for state in states:
        # Any value reads as a category unless the column holds booleans: only then can one be invalid.
        can_be_invalid = not isinstance(state, CategoricalState) or state.boolean
        if state.invalid == "reject" and can_be_invalid:
            rules.append((state.name, f"invalid:{state.name}", pl.col(invalid_flag(state.name))))
    for state in states:
        rule = state.outliers if isinstance(state, NumericState) else None
        if rule is not None and effective_action(rule, mode) in ("drop", "reject"):
            rules.append((state.name, f"outlier:{state.name}", pl.col(outlier_flag(state.name))))
        if isinstance(state, CategoricalState) and state.handle_unknown == "error" and mode == "serve":
            rules.append((state.name, f"unseen_category:{state.name}", unseen_expr(state)))
    return rules


def _row_rules(states: Sequence[AnyState], mode: Mode) -> tuple[pl.Expr, pl.Expr]:
    """The reason a row is dropped (train) or rejected (serve), and the columns flagged, per row."""
    reasons = [
        pl.when(condition).then(pl.lit(reason)) for _, reason, condition in rejection_rules(states, mode)
    ]
    flags = [
        pl.when(pl.col(outlier_flag(state.name))).then(pl.lit(state.name))
        for state in states
        if isinstance(state, NumericState)
        and state.outliers is not None
        and effective_action(state.outliers, mode) == "flag"
    ]
    reason = pl.coalesce(reasons) if reasons else pl.lit(None, dtype=pl.String)
    if flags:
        joined = pl.concat_str(flags, separator=",", ignore_nulls=True)
        flag = pl.when(joined == "").then(None).otherwise(joined)
    else:
        flag = pl.lit(None, dtype=pl.String)
    return reason.alias(REASON), flag.alias(FLAGS)


def unseen_expr(state: CategoricalState) -> pl.Expr:
    handled = pl.col(handled_column(state.name))
    return handled.is_not_null() & handled.is_in([*state.categories, *state.infrequent]).not_()


# --------------------------------------------------------------------------------------------------
# Stage 3: impute, scale, encode
# --------------------------------------------------------------------------------------------------
def _scaled(expr: pl.Expr, scale: ScaleState) -> pl.Expr:
    if scale.method == "none":
        return expr
    if scale.method == "quantile":
        return _quantile_scaled(expr, scale)
    z = (expr - scale.offset) / scale.divisor
    if scale.method == "robust":
        return soft_clip(z)
    return z


def unscale(scale: ScaleState, values: np.ndarray) -> np.ndarray:
    """Features back in the column's units (approximately between a quantile scaling's knots): what a
    report labels its histogram edges with."""
    if scale.method == "quantile":
        return np.interp(values, scale.scores, scale.knots) if len(scale.knots) >= 2 else values
    if scale.method == "robust":
        bounded = np.clip(values / 3.0, -1 + 1e-9, 1 - 1e-9)
        values = values / np.sqrt(1 - bounded * bounded)
    return values * scale.divisor + scale.offset


def soft_clip(z: Any) -> Any:
    """RealMLP's smooth clipping ``z / sqrt(1 + (z / 3)²)`` (Holzmüller et al., 2024): about ``z`` near 0,
    bounded by ±3. The serving graph computes it with the same operations in the same order."""
    third = z / 3.0
    return z / (third * third + 1.0).sqrt()


def quantile_table(scale: ScaleState) -> dict[str, list[float]]:
    """A ``quantile`` scaling's ``knots``, ``scores``, ``before`` and ``after``, with at least two knots
    (a constant column's one knot gets a second: every value maps to 0)."""
    if len(scale.knots) >= 2:
        return {"knots": scale.knots, "scores": scale.scores, "before": scale.before, "after": scale.after}
    knot = scale.knots[0] if scale.knots else 0.0
    return {"knots": [knot, knot + 1.0], "scores": [0.0, 0.0], "before": [0.0, 0.0], "after": [0.0, 0.0]}


def _quantile_scaled(expr: pl.Expr, scale: ScaleState) -> pl.Expr:
    """The knots around ``x`` (clipped to the first and last) are found by a sorted search; at a knot its
    score, between two the line from ``after`` the lower to ``before`` the upper. The graph does the same
    arithmetic."""
    values = quantile_table(scale)
    table = {key: pl.lit(pl.Series(column, dtype=pl.Float64)) for key, column in values.items()}
    knots = table["knots"]
    x = expr.clip(values["knots"][0], values["knots"][-1])
    upper = knots.search_sorted(x, side="right").cast(pl.Int64).clip(1, len(values["knots"]) - 1)
    lower = upper - 1
    lo, hi = knots.gather(lower), knots.gather(upper)
    start, end = table["after"].gather(lower), table["before"].gather(upper)
    between = start + (x - lo) * (end - start) / (hi - lo)
    return (
        pl.when(x == lo)
        .then(table["scores"].gather(lower))
        .when(x == hi)
        .then(table["scores"].gather(upper))
        .otherwise(between)
    )


class PleBin(NamedTuple):
    """One bin of a piecewise-linear encoding: its feature is ``clip((x - start) / width, low, high)``."""

    start: float
    width: float
    low: float
    high: float


def ple_bins(edges: Sequence[float]) -> list[PleBin]:
    """The bins of a piecewise-linear encoding over strictly increasing ``edges`` (Gorishniy et al., 2022).

    Bin ``t`` spans ``[edges[t], edges[t + 1]]``; its feature is 0 below the bin, 1 above it and linear in
    between, except that the first bin is unbounded below and the last one above (as in the paper), so
    values beyond the training range stay distinguishable. ``edges[0] + Σ feature_t · width_t`` gives
    ``x`` back. The serving graph computes the same ``(x - start) / width``, clipped, in float64.
    """
    last = len(edges) - 2
    return [
        PleBin(
            start=float(edges[t]),
            width=float(edges[t + 1]) - float(edges[t]),
            low=-math.inf if t == 0 else 0.0,
            high=math.inf if t == last else 1.0,
        )
        for t in range(len(edges) - 1)
    ]


def _ple_exprs(value: pl.Expr, edges: Sequence[float]) -> list[pl.Expr]:
    return [((value - b.start) / b.width).clip(b.low, b.high) for b in ple_bins(edges)]


def _feature_exprs(state: AnyState) -> list[pl.Expr]:
    handled = pl.col(handled_column(state.name))
    names = feature_names(state)
    exprs: list[pl.Expr]
    if isinstance(state, NumericState):
        filled = handled.fill_null(state.fill)
        exprs = [_scaled(filled, state.scale), *_ple_exprs(filled, state.ple_edges)]
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
    stage1 = [
        expr
        for c in state.columns
        for expr in convert_exprs(c.name, c, _input_dtype(schema, c.name), state.null_values)
    ]
    stage2: list[pl.Expr] = []
    for c in state.columns:
        if isinstance(c, NumericState):
            stage2 += outlier_exprs(c.name, c.outliers, mode)
        elif isinstance(c, DatetimeState):
            stage2 += [
                pl.lit(False).alias(outlier_flag(c.name)),
                convert.epoch_seconds(pl.col(value_column(c.name))).alias(handled_column(c.name)),
            ]
        else:
            stage2 += [
                pl.lit(False).alias(outlier_flag(c.name)),
                pl.col(value_column(c.name)).alias(handled_column(c.name)),
            ]
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
            + not_a_column_hint(missing, schema.names())
        )


def check_reserved(schema: pl.Schema) -> None:
    """Raise a :class:`DataError` when raw data uses the ``__`` prefix leanml keeps for its own columns."""
    reserved = [name for name in schema.names() if name.startswith("__") and not is_pandas_index(name)]
    if reserved:
        raise DataError(f"column names starting with '__' are reserved for leanml: {', '.join(reserved)}")


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
        handled = pl.col(handled_column(name))
        outlier = pl.col(outlier_flag(name))
        action = effective_action(c.outliers, mode) if isinstance(c, NumericState) and c.outliers else None
        zero = pl.lit(0, dtype=pl.UInt32)
        metrics = {
            "missing": pl.col(missing_column(name)).sum(),
            "invalid": pl.col(invalid_flag(name)).sum(),
            "outliers": outlier.sum(),
            "clipped": outlier.sum() if action == "clip" else zero,
            "flagged": outlier.sum() if action == "flag" else zero,
            "imputed": handled.is_null().sum(),
            "unseen": unseen_expr(c).sum() if isinstance(c, CategoricalState) else zero,
            "infrequent": handled.is_in(c.infrequent).sum() if isinstance(c, CategoricalState) else zero,
        }
        exprs += [expr.cast(pl.Int64).alias(f"{name}|{metric}") for metric, expr in metrics.items()]
    return exprs
