"""Batches come from contiguous tensors or stream from Parquet, covering every row once per epoch."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from leanml.data.prepare import TARGET
from leanml.errors import DataError
from leanml.training.batching import (
    ParquetBatches,
    TensorBatches,
    load_split,
    open_split,
    split_rows,
    target_moments,
)

FEATURES = ["a", "b", "c"]


def _table(rows: int) -> pa.Table:
    # Feature "a" holds the row number, so batches can be traced back to rows.
    return pa.table(
        {
            "__row_id": pa.array(np.arange(rows, dtype=np.uint32)),
            "a": pa.array(np.arange(rows, dtype=np.float32)),
            "b": pa.array(np.full(rows, 2.0, dtype=np.float32)),
            "c": pa.array(np.linspace(-1, 1, rows, dtype=np.float32)),
            TARGET: pa.array(np.arange(rows) % 3, type=pa.int64()),
        }
    )


def _write_split(path: Path, rows: int, row_group_size: int) -> Path:
    pq.write_table(_table(rows), path, row_group_size=row_group_size)
    return path


def _write_shards(folder: Path, rows: int, cuts: list[int], row_group_size: int) -> list[Path]:
    """The same rows as :func:`_write_split`, cut at ``cuts`` into shards (an empty one among them when
    two cuts are equal), as a Ray prepare writes a split."""
    folder.mkdir()
    table, bounds = _table(rows), [0, *cuts, rows]
    paths = []
    for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
        paths.append(folder / f"part-{index:05d}.parquet")
        pq.write_table(table.slice(start, stop - start), paths[-1], row_group_size=row_group_size)
    return paths


def _rows_seen(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> np.ndarray:
    return np.concatenate([x[:, 0].numpy() for x, _ in batches]).astype(np.int64)


def test_tensor_batches_cover_every_row_once_and_shuffle_by_seed() -> None:
    x = torch.arange(1000, dtype=torch.float32).reshape(-1, 1)
    batches = TensorBatches(x, torch.arange(1000), batch_size=64)
    in_order = list(batches.epoch())
    assert len(in_order) == batches.batches_per_epoch() == 16
    assert _rows_seen(in_order).tolist() == list(range(1000))

    first = list(batches.epoch(torch.Generator().manual_seed(1)))
    again = list(batches.epoch(torch.Generator().manual_seed(1)))
    other = list(batches.epoch(torch.Generator().manual_seed(2)))
    assert sorted(_rows_seen(first).tolist()) == list(range(1000))
    assert _rows_seen(first).tolist() == _rows_seen(again).tolist()
    assert _rows_seen(first).tolist() != _rows_seen(other).tolist()
    for xb, yb in first:  # features and targets stay paired
        assert torch.equal(xb[:, 0].long(), yb)


def test_a_lone_last_row_joins_the_batch_before_it() -> None:
    batches = TensorBatches(torch.zeros(65, 2), torch.zeros(65), batch_size=32)
    assert [len(x) for x, _ in batches.epoch()] == [32, 33]
    single = TensorBatches(torch.zeros(3, 2), torch.zeros(3), batch_size=1)
    assert [len(x) for x, _ in single.epoch()] == [1, 1, 1]


@pytest.mark.parametrize(
    "rows,row_group_size,chunk_rows,batch_size", [(1000, 128, 100, 32), (997, 1000, 64, 50), (65, 10, 7, 32)]
)
def test_streaming_covers_every_row_exactly_once_per_epoch(
    tmp_path: Path, rows: int, row_group_size: int, chunk_rows: int, batch_size: int
) -> None:
    path = _write_split(tmp_path / "train.parquet", rows, row_group_size)
    batches = ParquetBatches(path, FEATURES, "multiclass", batch_size, chunk_rows)
    orders = []
    for epoch in range(3):
        seen = list(batches.epoch(torch.Generator().manual_seed(epoch)))
        assert len(seen) == batches.batches_per_epoch()
        assert all(len(x) == batch_size for x, _ in seen[:-1])
        assert all(len(x) > 1 for x, _ in seen)
        order = _rows_seen(seen)
        assert sorted(order.tolist()) == list(range(rows))
        for xb, yb in seen:
            assert torch.equal(xb[:, 0].long() % 3, yb)
        orders.append(order.tolist())
    assert orders[0] != orders[1]
    assert _rows_seen(list(batches.epoch())).tolist() == list(range(rows))


def test_open_split_streams_when_the_split_exceeds_the_budget(tmp_path: Path) -> None:
    path = _write_split(tmp_path / "train.parquet", 5000, 1000)
    in_memory = open_split(path, FEATURES, "binary", 128, memory_budget_mb=1.0)
    streamed = open_split(path, FEATURES, "binary", 128, memory_budget_mb=0.05)
    assert isinstance(in_memory, TensorBatches)
    assert isinstance(streamed, ParquetBatches)
    assert streamed.chunk_rows * (4 * len(FEATURES) + 8) <= 0.05 * (1 << 20)
    assert in_memory.features.is_contiguous() and in_memory.features.dtype == torch.float32
    assert in_memory.target.dtype == torch.float32  # binary targets feed BCE directly
    assert sorted(_rows_seen(list(streamed.epoch(torch.Generator().manual_seed(0)))).tolist()) == list(
        range(5000)
    )


def test_load_split_and_target_moments(tmp_path: Path) -> None:
    path = _write_split(tmp_path / "train.parquet", 100, 30)
    x, y = load_split(path, FEATURES, "multiclass")
    assert x.shape == (100, 3) and y.dtype == torch.int64
    mean, std = target_moments(path)
    values = np.arange(100) % 3
    assert mean == pytest.approx(values.mean())
    assert std == pytest.approx(values.std())


def test_a_split_in_shards_reads_as_the_same_rows_in_order(tmp_path: Path) -> None:
    """A Ray prepare writes each split as shards: every reader sees the one file's rows, in order."""
    one = _write_split(tmp_path / "train.parquet", 1000, 128)
    shards = _write_shards(tmp_path / "train", 1000, [300, 300, 710], 64)  # shard 1 is empty
    assert split_rows(shards) == split_rows(one) == 1000
    for task in ("multiclass", "binary"):
        x, y = load_split(shards, FEATURES, task)
        x_one, y_one = load_split(one, FEATURES, task)
        assert torch.equal(x, x_one) and torch.equal(y, y_one) and y.dtype == y_one.dtype
        assert x.is_contiguous()
    assert target_moments(shards) == pytest.approx(target_moments(one), rel=1e-12)
    in_memory = open_split(shards, FEATURES, "binary", 128, memory_budget_mb=1.0)
    assert isinstance(in_memory, TensorBatches) and torch.equal(
        in_memory.features, load_split(one, FEATURES, "binary")[0]
    )


def test_streaming_shards_covers_every_row_once_across_files(tmp_path: Path) -> None:
    shards = _write_shards(tmp_path / "train", 997, [250, 250, 600], 50)
    streamed = open_split(shards, FEATURES, "multiclass", 32, memory_budget_mb=0.01)
    assert isinstance(streamed, ParquetBatches)
    assert streamed.rows == 997 and len(streamed.groups) == 5 + 1 + 7 + 8  # the empty shard: one empty group
    assert _rows_seen(list(streamed.epoch())).tolist() == list(range(997))  # file order, then group order
    seen = list(streamed.epoch(torch.Generator().manual_seed(3)))
    assert len(seen) == streamed.batches_per_epoch()
    order = _rows_seen(seen)
    assert sorted(order.tolist()) == list(range(997)) and order.tolist() != list(range(997))
    for xb, yb in seen:
        assert torch.equal(xb[:, 0].long() % 3, yb)


def test_a_bad_shard_is_named(tmp_path: Path) -> None:
    shards = _write_shards(tmp_path / "train", 100, [40], 100)
    pq.write_table(_table(60).drop_columns(["c"]), shards[1])
    with pytest.raises(DataError, match=r"part-00001\.parquet' lacks the columns c"):
        list(ParquetBatches(shards, FEATURES, "binary", 16, 64).epoch())
    with pytest.raises(DataError, match=r"part-00001\.parquet' lacks the columns c"):
        load_split(shards, FEATURES, "binary")
    shards[0].write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"cannot read prepared split .*part-00000\.parquet"):
        split_rows(shards)
