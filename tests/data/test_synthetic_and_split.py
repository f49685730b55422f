"""The synthetic generator and the split arithmetic."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from leanml.config import SplitConfig
from leanml.data.split import (
    GROUP,
    ROW_ID,
    cut_buckets,
    hash_keys,
    near_hashes,
    plan_from_near,
    plan_split,
    split_counts,
    split_histogram,
)
from leanml.data.synthetic import SyntheticSpec, synthetic_chunk, write_synthetic


def test_synthetic_is_seeded_and_chunking_does_not_change_rows(tmp_path: Path) -> None:
    spec = SyntheticSpec(rows=2500, numeric=3, categorical=2, seed=3)
    write_synthetic(spec, tmp_path / "a.parquet", chunk_rows=1000)
    write_synthetic(spec, tmp_path / "b.parquet", chunk_rows=1000)
    a, b = pl.read_parquet(tmp_path / "a.parquet"), pl.read_parquet(tmp_path / "b.parquet")
    assert a.equals(b) and a.height == 2500
    assert a.equals(pl.concat([synthetic_chunk(spec, s, min(1000, 2500 - s)) for s in range(0, 2500, 1000)]))
    nulls = a.select(pl.col("num_0", "cat_0", "event_time").null_count()).row(0)
    assert all(100 < n < 200 for n in nulls)  # ~5 % nulls
    assert a["num_0"].abs().max() > 1000  # outliers present
    assert 0.2 < a["label"].mean() < 0.8
    write_synthetic(spec, tmp_path / "c.csv")
    write_synthetic(spec, tmp_path / "c.jsonl")
    assert pl.read_csv(tmp_path / "c.csv").height == 2500
    with pytest.raises(ValueError):
        write_synthetic(spec, tmp_path / "c.zip")


@pytest.mark.parametrize(
    ("n", "expected"), [(100, (10, 10)), (1, (0, 0)), (2, (0, 0)), (0, (0, 0)), (15, (2, 2))]
)
def test_split_counts_always_leave_training_rows(n: int, expected: tuple[int, int]) -> None:
    assert split_counts(n, SplitConfig(validation=0.1, test=0.1)) == expected
    n_test, n_val = split_counts(n, SplitConfig(validation=0.45, test=0.5))
    assert n == 0 or n - n_test - n_val >= 1


def test_column_types_do_not_depend_on_which_values_are_null() -> None:
    chunk = synthetic_chunk(SyntheticSpec(rows=30, numeric=2, categorical=2, null_share=0.9, seed=1), 0, 30)
    assert chunk.schema["cat_0"] == pl.String and chunk.schema["num_0"] == pl.Float64


@pytest.mark.parametrize("stratify", [True, False])
def test_a_split_planned_from_parts_equals_the_whole_tables(stratify: bool) -> None:
    """The split's two rounds over disjoint parts (histograms summed, then the hashes of the cut buckets),
    with coarser buckets, give the plan of the whole table (what prepare on Ray relies on)."""
    n = 50_000
    frame = pl.DataFrame(
        {
            ROW_ID: pl.arange(0, n, eager=True).cast(pl.UInt64),
            GROUP: [i % 3 if stratify else 0 for i in range(n)],
        }
    )
    config = SplitConfig(validation=0.15, test=0.2, seed=7, stratify=stratify)
    whole = plan_split(frame.lazy(), config)
    parts = [
        hash_keys(frame.slice(start, 12_500).lazy(), config, bits=6).collect()
        for start in range(0, n, 12_500)
    ]
    wanted = cut_buckets(pl.concat([split_histogram(p.lazy()) for p in parts]), config)
    near = pl.concat([near_hashes(p.lazy(), wanted) for p in parts])
    assert near.height < n // 10  # only the cut buckets' hashes
    assert plan_from_near(wanted, near, config) == whole
    counts = frame.with_columns(whole.expr().alias("s"))["s"].value_counts().sort("s")["count"].to_list()
    sizes = frame[GROUP].value_counts()["count"].to_list()
    test, validation = (sum(split_counts(size, config)[i] for size in sizes) for i in (0, 1))
    assert counts == [n - validation - test, validation, test]  # exact per class
