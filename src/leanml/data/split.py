"""Train / validation / test split, decided before anything is fitted.

Random and stratified splits rank rows by a seeded hash of their row number, so a row's split depends
only on the seed and its position in the file. Splitting a file larger than memory takes two passes over
two small columns (row hash and class) that keep per-bucket counts, not per-row values. Counts are exact:
each class (stratified) or the whole table (random) gives ``round(n · test)`` rows to test and
``round(n · validation)`` to validation. A time split sends the latest rows to test, the ones before them
to validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from leanml.config import SplitConfig

SPLITS = ("train", "validation", "test")
ROW_ID = "__row_id"
GROUP = "__group"
TIME = "__time"
NO_CUT = np.iinfo(np.uint64).max
BUCKET_BITS = 20
"""The split ranks rows in 2**20 buckets of the row hash first, so it holds counts, not every hash."""


@dataclass(frozen=True)
class SplitPlan:
    """Frozen cut points: a row goes to test below the first cut, to validation below the second."""

    method: str
    seed: int
    hash_cuts: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per group (class index, or 0 when not stratified): (test cut, validation cut) on the row hash."""
    time_cuts: tuple[float, float] = (np.inf, np.inf)
    """(validation start, test start) in epoch seconds."""

    def expr(self) -> pl.Expr:
        """Split index per row: 0 train, 1 validation, 2 test."""
        if self.method == "time":
            start_val, start_test = self.time_cuts
            time = pl.col(TIME)
            return (
                pl.when(time >= start_test).then(2).when(time >= start_val).then(1).otherwise(0).cast(pl.Int8)
            )
        row_hash = pl.col(ROW_ID).hash(self.seed)
        return (
            pl.when(row_hash < self._cut(0)).then(2).when(row_hash < self._cut(1)).then(1).otherwise(0)
        ).cast(pl.Int8)

    def _cut(self, which: int) -> pl.Expr:
        """The per-group cut as a when/then chain (streams, unlike a replace_strict lookup)."""
        chain: Any = pl
        for group, cuts in self.hash_cuts.items():
            chain = chain.when(pl.col(GROUP) == group).then(pl.lit(cuts[which], dtype=pl.UInt64))
        return chain.otherwise(None) if self.hash_cuts else pl.lit(None, dtype=pl.UInt64)


def split_counts(n: int, config: SplitConfig) -> tuple[int, int]:
    """(test, validation) row counts for a group of ``n`` rows; at least one row is left to train on."""
    n_test, n_val = round(n * config.test), round(n * config.validation)
    while n > 0 and n_test + n_val >= n:
        if n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_test, n_val


def plan_split(frame: pl.LazyFrame, config: SplitConfig) -> SplitPlan:
    """Compute the cut points from ``frame``, which holds the usable rows with ``__row_id`` and either
    ``__group`` (stratification key, or constant) or ``__time`` (epoch seconds, for a time split)."""
    if config.by is not None:
        times = frame.select(TIME).drop_nulls().collect(engine="streaming")[TIME].to_numpy()
        times = np.sort(times)
        ranks = time_ranks(len(times), config)
        return time_plan(ranks, {r: float(times[r]) for r in ranks if r is not None}, config)
    # Exact cuts without holding every row's hash: count rows per (group, hash bucket), then read only the
    # hashes of the buckets where a cut falls and rank within them.
    hashed = hash_keys(frame, config)
    wanted = cut_buckets(split_histogram(hashed), config)
    return plan_from_near(wanted, near_hashes(hashed, wanted), config)


def time_ranks(n: int, config: SplitConfig) -> tuple[int | None, int | None]:
    """Positions, in ascending order of time, of the first validation row and of the first test row of a
    time split of ``n`` rows; ``None`` where that split gets no rows."""
    n_test, n_val = split_counts(n, config)
    return (n - n_test - n_val if n_val else None, n - n_test if n_test else None)


def time_plan(
    ranks: tuple[int | None, int | None], at_rank: dict[int, float], config: SplitConfig
) -> SplitPlan:
    """A time split's plan from :func:`time_ranks` and the time at each of those positions."""
    val_rank, test_rank = ranks
    start_test = at_rank[test_rank] if test_rank is not None else np.inf
    start_val = at_rank[val_rank] if val_rank is not None else start_test
    return SplitPlan(method="time", seed=config.seed, time_cuts=(start_val, start_test))


Wanted = dict[int, list[tuple[int, int, int] | None]]
"""Per group, for the test cut and the validation cut: (hash bucket, rows before it, rank), or ``None``."""


def hash_keys(frame: pl.LazyFrame, config: SplitConfig, bits: int = BUCKET_BITS) -> pl.LazyFrame:
    """Each usable row's seeded hash ``h``, its ``__group`` and its hash bucket ``b`` (one of ``2**bits``).

    The plan does not depend on ``bits`` (a cut is the hash of the row of its rank): more buckets mean a
    larger histogram and fewer hashes to rank in the cut buckets, fewer the other way round."""
    hashed = frame.select(pl.col(ROW_ID).hash(config.seed).alias("h"), pl.col(GROUP))
    return hashed.with_columns((pl.col("h") // (1 << (64 - bits))).alias("b"))


def split_histogram(hashed: pl.LazyFrame) -> pl.DataFrame:
    """Rows per (group, hash bucket) of :func:`hash_keys`' rows (the first round of a hash split).
    Histograms of disjoint parts of the rows add up to the whole table's."""
    return hashed.group_by(GROUP, "b").agg(pl.len().cast(pl.Int64).alias("n")).collect(engine="streaming")


def cut_buckets(histogram: pl.DataFrame, config: SplitConfig) -> Wanted:
    """For each group, the hash bucket each cut falls in, the rows before that bucket and the cut's rank;
    ``histogram`` may hold several parts' histograms (summed here)."""
    histogram = histogram.group_by(GROUP, "b").agg(pl.col("n").sum())
    wanted: Wanted = {}
    for (group,), part in histogram.sort("b").group_by(GROUP, maintain_order=True):
        counts = part["n"].to_numpy()
        cumulative = np.cumsum(counts)
        n = int(cumulative[-1])
        n_test, n_val = split_counts(n, config)
        targets: list[tuple[int, int, int] | None] = []
        for rank in (n_test, n_test + n_val):
            if rank >= n:
                targets.append(None)
                continue
            at = int(np.searchsorted(cumulative, rank, side="right"))
            targets.append((int(part["b"][at]), int(cumulative[at] - counts[at]), rank))
        wanted[int(group)] = targets
    return wanted


def near_hashes(hashed: pl.LazyFrame, wanted: Wanted) -> pl.DataFrame:
    """The rows of :func:`hash_keys` in the buckets where a cut falls (the second round; parts' results
    concatenate to the whole table's)."""
    needed = [(g, t[0]) for g, targets in wanted.items() for t in targets if t is not None]
    if not needed:
        return hashed.head(0).collect()
    schema = hashed.collect_schema()
    keys = pl.DataFrame(
        {GROUP: [g for g, _ in needed], "b": [b for _, b in needed]},
        schema={GROUP: schema[GROUP], "b": schema["b"]},
    ).unique()
    return hashed.join(keys.lazy(), on=[GROUP, "b"]).collect(engine="streaming")


def plan_from_near(wanted: Wanted, near: pl.DataFrame, config: SplitConfig) -> SplitPlan:
    """The split plan from the cut buckets and the hashes inside them: each cut is the hash of the row
    of its rank."""
    cuts: dict[int, tuple[int, int]] = {}
    for group, targets in wanted.items():
        pair = []
        for target in targets:
            if target is None:
                pair.append(int(NO_CUT))
                continue
            b, before, rank = target
            inside = np.sort(near.filter((pl.col(GROUP) == group) & (pl.col("b") == b))["h"].to_numpy())
            pair.append(int(inside[rank - before]))
        cuts[group] = (pair[0], pair[1])
    method = "stratified" if config.stratify else "random"
    return SplitPlan(method=method, seed=config.seed, hash_cuts=dict(sorted(cuts.items())))
