"""Mergeable column statistics: moments and exact value counts.

The analyze pass reduces each column to a :class:`Moments` (count, mean, M2, min, max: constant memory)
and, where a median, quantile, mode or category list is needed, to exact :class:`ValueCounts` (memory
proportional to the number of distinct values). Both merge exactly, so statistics of shards combine into
the statistics of the whole, and both give the quantities scikit-learn computes (population variance,
linearly interpolated quantiles, the smallest of tied modes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl


@dataclass(frozen=True)
class Moments:
    """Count, mean, sum of squared deviations (M2), min and max of the non-null values of a column."""

    count: int
    mean: float
    m2: float
    min: float
    max: float

    @property
    def variance(self) -> float:
        """Population variance (ddof=0), as scikit-learn's StandardScaler uses."""
        return self.m2 / self.count if self.count else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation."""
        return math.sqrt(self.variance) if self.count else math.nan

    def merge(self, other: Moments) -> Moments:
        """Moments of the union of both samples (Chan et al.'s parallel update)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        n = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / n
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / n
        return Moments(n, mean, m2, min(self.min, other.min), max(self.max, other.max))

    def with_constant(self, value: float, times: int) -> Moments:
        """Moments after ``times`` copies of ``value`` are added (imputed nulls)."""
        if times == 0:
            return self
        return self.merge(Moments(times, value, 0.0, value, value))


EMPTY_MOMENTS = Moments(0, math.nan, 0.0, math.nan, math.nan)


def moment_exprs(column: str, prefix: str) -> list[pl.Expr]:
    """Aggregations whose results :func:`moments_from_row` turns into :class:`Moments`."""
    col = pl.col(column)
    return [
        col.count().alias(f"{prefix}count"),
        col.mean().alias(f"{prefix}mean"),
        col.var(ddof=0).alias(f"{prefix}var"),
        col.min().cast(pl.Float64).alias(f"{prefix}min"),
        col.max().cast(pl.Float64).alias(f"{prefix}max"),
    ]


def moments_from_row(row: dict[str, Any], prefix: str) -> Moments:
    """Build :class:`Moments` from the aggregated row produced by :func:`moment_exprs`."""
    count = int(row[f"{prefix}count"] or 0)
    if count == 0:
        return EMPTY_MOMENTS
    var = float(row[f"{prefix}var"] or 0.0)
    return Moments(
        count,
        float(row[f"{prefix}mean"]),
        var * count,
        float(row[f"{prefix}min"]),
        float(row[f"{prefix}max"]),
    )


@dataclass(frozen=True)
class ValueCounts:
    """Exact counts of the distinct non-null values of a column, sorted by value."""

    values: list[Any]
    counts: list[int]

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> ValueCounts:
        """From a two-column frame (value, count) with nulls already removed."""
        value_col, count_col = frame.columns
        ordered = frame.sort(value_col)
        return cls(ordered[value_col].to_list(), [int(c) for c in ordered[count_col].to_list()])

    @property
    def total(self) -> int:
        """Number of non-null values counted."""
        return sum(self.counts)

    def merge(self, other: ValueCounts) -> ValueCounts:
        """Counts of the union of both samples."""
        merged: dict[Any, int] = dict(zip(self.values, self.counts, strict=True))
        for value, count in zip(other.values, other.counts, strict=True):
            merged[value] = merged.get(value, 0) + count
        keys = sorted(merged)
        return ValueCounts(keys, [merged[k] for k in keys])

    def with_constant(self, value: Any, times: int) -> ValueCounts:
        """Counts after ``times`` copies of ``value`` are added (imputed nulls), as
        :meth:`Moments.with_constant`."""
        return self.merge(ValueCounts([value], [times])) if times > 0 else self

    def mode(self) -> Any:
        """The most frequent value; among ties the smallest, as scikit-learn's SimpleImputer picks."""
        if not self.values:
            raise ValueError("mode of an empty column")
        best = max(self.counts)
        return next(v for v, c in zip(self.values, self.counts, strict=True) if c == best)

    def quantile(self, q: float) -> float:
        """Exact quantile with linear interpolation (numpy's default method)."""
        return float(self.quantiles([q])[0])

    def quantiles(self, qs: Sequence[float] | np.ndarray) -> np.ndarray:
        """Exact quantiles at the probabilities ``qs`` with linear interpolation, as ``np.quantile`` of the
        counted values computes them (one pass over the counts for all of them)."""
        n = self.total
        if n == 0:
            raise ValueError("quantile of an empty column")
        cumulative = np.cumsum(self.counts)
        values = np.asarray(self.values, dtype=np.float64)
        position = np.asarray(qs, dtype=np.float64) * (n - 1)
        lo, hi = np.floor(position), np.ceil(position)
        v_lo = values[np.searchsorted(cumulative, lo, side="right")]
        v_hi = values[np.searchsorted(cumulative, hi, side="right")]
        return v_lo + (v_hi - v_lo) * (position - lo)

    def median(self) -> float:
        """Exact median (the mean of the two middle values for an even count)."""
        return self.quantile(0.5)


def value_counts_query(frame: pl.LazyFrame, column: str) -> pl.LazyFrame:
    """Lazy query of the non-null value counts of one column, for :meth:`ValueCounts.from_frame`."""
    return frame.select(column).drop_nulls().group_by(column).agg(pl.len().alias("__n"))
