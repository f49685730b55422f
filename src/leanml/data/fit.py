"""Analyze: reduce the training rows to a frozen :class:`~leanml.data.state.PreprocessState`.

``fit_preprocessor`` runs streaming passes over a lazy frame: one pass for all statistics, preceded by
one for outlier bounds when a column has an IQR or z-score rule (the bounds must be frozen before the
statistics they change). The per-column expressions are those of :mod:`leanml.data.transform`, so the
statistics are computed on exactly the values ``transform`` will see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from statistics import NormalDist

import numpy as np
import polars as pl

from leanml.config import CategoricalColumn, ColumnSpec, DatetimeColumn, NumericColumn
from leanml.data import convert
from leanml.data.io import collect_each, sample_rows
from leanml.data.state import (
    CategoricalState,
    DatetimeOutput,
    DatetimeState,
    NumericState,
    OutlierState,
    PreprocessState,
    ScaleState,
    TargetState,
)
from leanml.data.stats import Moments, ValueCounts, moment_exprs, moments_from_row, value_counts_query
from leanml.data.transform import (
    AnyState,
    Frame,
    check_columns,
    convert_exprs,
    handled_column,
    outlier_exprs,
    outlier_flag,
    part_column,
    value_column,
)
from leanml.errors import DataError

Collect = Callable[[list[pl.LazyFrame]], list[pl.DataFrame]]
"""Runs one round of analyze queries and returns their results, in order."""


def fit_preprocessor(
    frame: Frame,
    columns: Mapping[str, ColumnSpec],
    target: TargetState,
    null_values: Sequence[str],
    collect: Collect | None = None,
) -> PreprocessState:
    """Analyze the training rows: compute and freeze every statistic ``transform`` needs.

    ``frame`` holds training rows only (the split happens before this). Raises :class:`DataError` when a
    configured column is absent, or has no usable value in the training rows.

    ``collect``, when given, runs each round of queries (at most two: outlier bounds, then statistics)
    instead of running them here; the cluster's analyze answers them with results merged from the
    pieces of a sharded input (:mod:`leanml.cluster.prepare`).
    """
    run = collect or partial(_collect, in_memory=isinstance(frame, pl.DataFrame))
    lazy = frame.lazy()
    schema = lazy.collect_schema()
    check_columns(schema, columns, None)
    nulls = list(null_values)
    active = {name: spec for name, spec in columns.items() if spec.type != "ignore"}
    active = with_datetime_formats(lazy, schema, active, nulls)
    stage1 = lazy.with_columns(
        [expr for name, spec in active.items() for expr in convert_exprs(name, spec, schema[name], nulls)]
    )
    outliers = _fit_outliers(stage1, active, run)

    stage2_exprs: list[pl.Expr] = []
    for name, spec in active.items():
        if isinstance(spec, NumericColumn):
            stage2_exprs += outlier_exprs(name, outliers.get(name), "train")
        elif isinstance(spec, DatetimeColumn):
            stage2_exprs.append(convert.epoch_seconds(pl.col(value_column(name))).alias(handled_column(name)))
        else:
            stage2_exprs.append(pl.col(value_column(name)).alias(handled_column(name)))
    stage2 = stage1.with_columns(stage2_exprs)
    part_exprs = [
        convert.datetime_part(convert.from_epoch_seconds(pl.col(handled_column(name))), part).alias(
            part_column(name, part)
        )
        for name, spec in active.items()
        if isinstance(spec, DatetimeColumn)
        for part in spec.parts
    ]
    drop_reasons = [pl.col(outlier_flag(name)) for name, rule in outliers.items() if rule.action == "drop"]
    kept = stage2.with_columns(part_exprs)
    if drop_reasons:
        kept = kept.filter(~pl.any_horizontal(drop_reasons))

    aggregates: list[pl.Expr] = [pl.len().alias("__rows")]
    counted: dict[str, str] = {}  # what is counted (a column, or "COLUMN|PART") → its column in ``kept``
    for name, spec in active.items():
        if isinstance(spec, CategoricalColumn):
            counted[name] = handled_column(name)
            continue
        aggregates += moment_exprs(handled_column(name), f"{name}|")
        if _needs_counts(spec):
            counted[name] = handled_column(name)
        if isinstance(spec, DatetimeColumn):
            for part in spec.parts:
                aggregates += moment_exprs(part_column(name, part), f"{name}|{part}|")
                if spec.scale in QUANTILE_SCALES:
                    counted[f"{name}|{part}"] = part_column(name, part)
    queries = [kept.select(aggregates)] + [value_counts_query(kept, c) for c in counted.values()]
    results = run(queries)
    row = results[0].row(0, named=True)
    rows = int(row["__rows"])
    if rows == 0:
        raise DataError("no training rows are left to fit on (after splitting and cleaning)")
    counts = {key: ValueCounts.from_frame(res) for key, res in zip(counted, results[1:], strict=True)}

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
            parts = {
                part: (moments_from_row(row, f"{name}|{part}|"), counts.get(f"{name}|{part}"))
                for part in spec.parts
            }
            states.append(
                _datetime_state(name, spec, rows, moments_from_row(row, f"{name}|"), counts.get(name), parts)
            )
    ignored = [name for name, spec in columns.items() if spec.type == "ignore"]
    return PreprocessState(
        null_values=nulls, target=target, columns=states, ignored=ignored, training_rows=rows
    )


def _fit_outliers(
    frame: pl.LazyFrame, active: Mapping[str, ColumnSpec], collect: Collect
) -> dict[str, OutlierState]:
    rules = {n: s.outliers for n, s in active.items() if isinstance(s, NumericColumn) and s.outliers}
    if not rules:
        return {}
    zscore = [n for n, r in rules.items() if r.method == "zscore"]
    iqr = [n for n, r in rules.items() if r.method == "iqr"]
    queries: list[pl.LazyFrame] = []
    if zscore:
        queries.append(frame.select([e for n in zscore for e in moment_exprs(value_column(n), f"{n}|")]))
    queries += [value_counts_query(frame, value_column(n)) for n in iqr]
    results = list(collect(queries))  # a copy: results are popped below
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


FORMAT_SAMPLE_ROWS = 20_000


def with_datetime_formats(
    frame: pl.LazyFrame, schema: pl.Schema, active: dict[str, ColumnSpec], nulls: list[str]
) -> dict[str, ColumnSpec]:
    """Datetime specs of text columns get the formats inferred from values sampled across the training
    rows when they name none, so the state (and serving) read one fixed list of formats."""
    result = dict(active)
    pending = [
        name
        for name, spec in active.items()
        if isinstance(spec, DatetimeColumn)
        and not (spec.format or spec.formats)
        and schema[name] == pl.String
    ]
    if not pending:
        return result
    sample, _ = sample_rows(frame.select(pending), FORMAT_SAMPLE_ROWS)
    for name in pending:
        text = sample[name].str.strip_chars(convert.WHITESPACE)
        present = text.filter(text.is_not_null() & text.is_in(nulls).not_())
        formats, _ = convert.infer_datetime_formats(present)
        result[name] = active[name].model_copy(update={"formats": formats or list(convert.ISO_FORMATS)})
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


QUANTILE_SCALES = ("robust", "quantile")
"""Scalings fitted on exact quantiles (value counts) rather than moments."""
QUANTILE_KNOTS = 128
"""Quantiles a ``quantile`` scaling is fitted at (probabilities ``0, 1/127, …, 1``)."""
NORMAL_BOUND = 1e-7
"""Probabilities are clipped to ``[1e-7, 1 - 1e-7]`` before the normal quantile, as scikit-learn does."""


def _needs_counts(spec: NumericColumn | DatetimeColumn) -> bool:
    """Whether a column's statistics need its exact value counts (quantiles), not only its moments."""
    quantiles = spec.scale in QUANTILE_SCALES and (isinstance(spec, NumericColumn) or spec.epoch)
    ple = isinstance(spec, NumericColumn) and spec.encode == "ple"
    return spec.impute in ("median", "most_frequent") or quantiles or ple


def ple_edges(counts: ValueCounts, bins: int) -> list[float]:
    """Bin edges of a piecewise-linear encoding (Gorishniy et al., NeurIPS 2022, "On Embeddings for
    Numerical Features in Tabular Deep Learning"): the distinct quantiles at ``bins + 1`` evenly spaced
    probabilities, as their reference code computes them (``torch.quantile(x, linspace(0, 1, bins +
    1)).unique()``), so tied quantiles give fewer bins. A constant column ``c`` gets the one bin
    ``[c, c + max(1, |c|)]`` (its feature is then ``x - c`` over that width, 0 on the training values)."""
    edges = np.unique(counts.quantiles(np.linspace(0.0, 1.0, bins + 1)))
    if len(edges) < 2:
        return [float(edges[0]), float(edges[0] + max(1.0, abs(edges[0])))]
    return edges.tolist()


def _fit_scale(method: str, moments: Moments, counts: ValueCounts | None = None) -> ScaleState:
    eps = 10 * np.finfo(float).eps
    if method == "robust":
        assert counts is not None
        median, spread = counts.median(), counts.quantile(0.75) - counts.quantile(0.25)
        if spread <= eps:  # more than half the values are equal: half the range, else nothing to divide by
            spread = (moments.max - moments.min) / 2
        return ScaleState(method="robust", offset=median, divisor=spread if spread > eps else 1.0)
    if method == "quantile":
        assert counts is not None
        return ScaleState(method="quantile", **quantile_map(counts, QUANTILE_KNOTS))
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


def quantile_map(counts: ValueCounts, n: int) -> dict[str, list[float]]:
    """The ``knots``, ``scores``, ``before`` and ``after`` of a ``quantile`` scaling (see
    :class:`~leanml.data.state.ScaleState`), as scikit-learn's ``QuantileTransformer(n_quantiles=n,
    output_distribution="normal")`` maps values: the knots are the distinct quantiles at ``n`` evenly spaced
    probabilities; a value at a knot gets the mean probability of the quantiles sharing it (the smallest
    and largest knots 0 and 1), values between knots interpolate from the last probability sharing the
    lower knot to the first sharing the upper one. Probabilities are clipped to :data:`NORMAL_BOUND`
    before the normal quantile; the interpolation is linear in the score, not in the probability."""
    probabilities = np.linspace(0.0, 1.0, n)
    quantiles = counts.quantiles(probabilities).tolist()
    knots: list[float] = []
    groups: list[list[float]] = []
    for value, p in zip(quantiles, probabilities, strict=True):
        if knots and value == knots[-1]:
            groups[-1].append(float(p))
        else:
            knots.append(value)
            groups.append([float(p)])
    normal = NormalDist()

    def score(p: float) -> float:
        return normal.inv_cdf(min(max(p, NORMAL_BOUND), 1 - NORMAL_BOUND))

    at = [float(np.mean(g)) for g in groups]
    if len(groups) >= 2:
        at[0], at[-1] = 0.0, 1.0
    return {
        "knots": knots,
        "scores": [score(p) for p in at],
        "before": [score(g[0]) for g in groups],
        "after": [score(g[-1]) for g in groups],
    }


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
    imputed_counts = counts.with_constant(fill, rows - counts.total) if counts is not None else None
    edges: list[float] = []
    if spec.encode == "ple":
        assert imputed_counts is not None
        edges = ple_edges(imputed_counts, spec.bins)
    return NumericState(
        name=name,
        impute=spec.impute,
        fill=fill,
        indicator=spec.missing_indicator,
        scale=_fit_scale(spec.scale, imputed, imputed_counts),
        ple_edges=edges,
        outliers=outliers,
        observed_min=imputed.min,
        observed_max=imputed.max,
        thousands=spec.thousands,
        decimal=spec.decimal,
        invalid=spec.invalid,
    )


def _categorical_state(
    name: str, spec: CategoricalColumn, rows: int, counts: ValueCounts
) -> CategoricalState:
    if spec.impute == "most_frequent":
        _require_values(name, counts.total)
        fill = str(counts.mode())
    else:
        fill = spec.fill_value
    imputed = counts.with_constant(fill, rows - counts.total)
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
        strip=spec.strip,
        boolean=spec.boolean,
        invalid=spec.invalid,
    )


def _datetime_state(
    name: str,
    spec: DatetimeColumn,
    rows: int,
    moments: Moments,
    counts: ValueCounts | None,
    parts: Mapping[str, tuple[Moments, ValueCounts | None]],
) -> DatetimeState:
    fill = _numeric_fill(name, spec.impute, moments, counts, None)
    missing = rows - moments.count
    outputs = []
    if spec.epoch:
        epoch_counts = counts.with_constant(fill, missing) if counts is not None else None
        scale = _fit_scale(spec.scale, moments.with_constant(fill, missing), epoch_counts)
        outputs.append(DatetimeOutput(part="epoch", scale=scale))
    moment = convert.from_epoch_seconds(pl.lit(fill, dtype=pl.Float64))
    for part, (part_moments, part_counts) in parts.items():
        fill_part = float(pl.select(convert.datetime_part(moment, part)).item())
        imputed_counts = part_counts.with_constant(fill_part, missing) if part_counts is not None else None
        imputed = part_moments.with_constant(fill_part, missing)
        outputs.append(DatetimeOutput(part=part, scale=_fit_scale(spec.scale, imputed, imputed_counts)))
    imputed_epoch = moments.with_constant(fill, missing)
    # Typed (Parquet) datetimes name no formats: text sent for them is read with convert.ISO_FORMATS.
    formats = list(spec.formats or ([spec.format] if spec.format else []))
    return DatetimeState(
        name=name,
        format=formats[0] if formats else None,
        formats=formats,
        invalid=spec.invalid,
        impute=spec.impute,
        fill_epoch=fill,
        indicator=spec.missing_indicator,
        outputs=outputs,
        observed_min=imputed_epoch.min,
        observed_max=imputed_epoch.max,
    )
