"""Merging partial results computed shard by shard into the result of the whole table.

The analyze queries of :mod:`leanml.data.fit` produce two kinds of frames, and both merge exactly:

* one-row aggregate frames: ``__rows`` (a count, summed) and moment columns ``PREFIX count|mean|var|min|max``
  (merged with :meth:`leanml.data.stats.Moments.merge`);
* value-count frames: a value column and ``__n`` (counts of equal values summed).

Counters (nested dicts of integers, as the prepare stage's quality counts) merge by summing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from leanml.data.stats import Moments, moments_from_row

MOMENT_FIELDS = ("count", "mean", "var", "min", "max")
COUNT_COLUMN = "__n"
ROWS_COLUMN = "__rows"


def merge_frames(parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """The result of one analyze query over the whole table from its results over each shard."""
    first = parts[0]
    if COUNT_COLUMN in first.columns and first.width == 2:
        value = next(c for c in first.columns if c != COUNT_COLUMN)
        stacked = (
            pl.concat([p for p in parts if p.height], how="vertical_relaxed")
            if any(p.height for p in parts)
            else first
        )
        return stacked.group_by(value).agg(pl.col(COUNT_COLUMN).sum()).sort(value)
    return merge_aggregates(parts)


def merge_aggregates(parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Merge one-row aggregate frames column by column; an unknown kind of column is an error."""
    rows = [p.row(0, named=True) for p in parts]
    merged: dict[str, Any] = {}
    prefixes: list[str] = []
    for column in parts[0].columns:
        if column == ROWS_COLUMN:
            merged[column] = sum(int(r[column] or 0) for r in rows)
        elif column.endswith(MOMENT_FIELDS):
            prefix = column[: -len(next(f for f in MOMENT_FIELDS if column.endswith(f)))]
            if prefix not in prefixes:
                prefixes.append(prefix)
        else:
            raise ValueError(f"cannot merge the statistic '{column}' across shards (not a count or a moment)")
    for prefix in prefixes:
        total = Moments(0, float("nan"), 0.0, float("nan"), float("nan"))
        for row in rows:
            total = total.merge(moments_from_row(row, prefix))
        merged[f"{prefix}count"] = total.count
        merged[f"{prefix}mean"] = total.mean if total.count else None
        merged[f"{prefix}var"] = total.variance if total.count else None
        merged[f"{prefix}min"] = total.min if total.count else None
        merged[f"{prefix}max"] = total.max if total.count else None
    return pl.DataFrame([merged], schema=_schema(parts[0], merged))


def _schema(template: pl.DataFrame, merged: Mapping[str, Any]) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {}
    for name in merged:
        schema[name] = pl.Int64 if name == ROWS_COLUMN or name.endswith("count") else pl.Float64
    return {name: schema[name] for name in template.columns}


def sum_counters(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum nested dicts of integers key by key (keys missing from a part count as zero)."""
    total: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, Mapping):
                total[key] = sum_counters([total.get(key, {}), value])
            else:
                total[key] = total.get(key, 0) + value
    return total
