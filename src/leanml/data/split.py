"""Train / validation / test split, decided before anything is fitted.

Random and stratified splits rank rows by a seeded hash of their row number, so a row's split depends
only on the seed and its position in the file, and the split of a file larger than memory needs one pass
over two small columns (row hash and class). Counts are exact: each class (stratified) or the whole table
(random) gives ``round(n · test)`` rows to test and ``round(n · validation)`` to validation. A time split
sends the latest rows to test, the ones before them to validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from leanml.config import SplitConfig

SPLITS = ("train", "validation", "test")
ROW_ID = "__row_id"
GROUP = "__group"
TIME = "__time"
NO_CUT = np.iinfo(np.uint64).max


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
        groups = list(self.hash_cuts)
        test_cut = pl.col(GROUP).replace_strict(
            groups, [self.hash_cuts[g][0] for g in groups], return_dtype=pl.UInt64
        )
        val_cut = pl.col(GROUP).replace_strict(
            groups, [self.hash_cuts[g][1] for g in groups], return_dtype=pl.UInt64
        )
        return (
            pl.when(row_hash < test_cut).then(2).when(row_hash < val_cut).then(1).otherwise(0).cast(pl.Int8)
        )


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
        n_test, n_val = split_counts(len(times), config)
        start_test = float(times[len(times) - n_test]) if n_test else np.inf
        start_val = float(times[len(times) - n_test - n_val]) if n_val else start_test
        return SplitPlan(method="time", seed=config.seed, time_cuts=(start_val, start_test))
    hashed = frame.select(pl.col(ROW_ID).hash(config.seed).alias("h"), pl.col(GROUP)).collect(
        engine="streaming"
    )
    cuts: dict[int, tuple[int, int]] = {}
    for (group,), part in hashed.group_by(GROUP):
        hashes = np.sort(part["h"].to_numpy())
        n_test, n_val = split_counts(len(hashes), config)
        test_cut = int(hashes[n_test]) if n_test < len(hashes) else int(NO_CUT)
        val_cut = int(hashes[n_test + n_val]) if n_test + n_val < len(hashes) else int(NO_CUT)
        cuts[int(group)] = (test_cut, val_cut)
    method = "stratified" if config.stratify else "random"
    return SplitPlan(method=method, seed=config.seed, hash_cuts=dict(sorted(cuts.items())))
