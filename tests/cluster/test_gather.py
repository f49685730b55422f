"""Sharded evaluation on Ray: each worker scores its share of a split, the workers swap their rows, and every
worker computes the whole split's metrics from the same rows (two gloo processes, no Ray)."""

from __future__ import annotations

import queue
import socket
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch.multiprocessing as mp

from gather_worker import ROWS, whole_split, worker
from leanml.cluster.train import gather_scored, mean_over_workers, shard_split
from leanml.data.prepared import PreparedData


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_every_worker_gets_the_whole_split_in_order() -> None:
    results = mp.get_context("spawn").Queue()
    context = mp.start_processes(
        worker, args=(free_port(), results), nprocs=2, start_method="spawn", join=False
    )
    got: list[tuple[int, str, tuple[float, np.ndarray, np.ndarray]]] = []
    deadline = time.monotonic() + 120
    while len(got) < 2 * (len(ROWS) + 1):
        assert time.monotonic() < deadline, f"the workers sent {len(got)} results in 120 s"
        try:
            got.append(results.get(timeout=1))
        except queue.Empty:
            context.join(timeout=0)  # raises a failed worker's error instead of waiting for its result
    context.join()
    assert sorted(mean for _, name, mean in got if name == "mean") == [1.5, 1.5]
    for rank, name, (loss_sum, targets, scores) in [g for g in got if g[1] != "mean"]:
        expected_loss, expected_targets, expected_scores = whole_split(name)
        assert loss_sum == pytest.approx(expected_loss), (rank, name)
        assert targets.dtype == expected_targets.dtype and scores.dtype == expected_scores.dtype
        np.testing.assert_array_equal(targets, expected_targets)
        np.testing.assert_array_equal(scores, expected_scores)  # float32 through float64: exact


def test_one_worker_keeps_its_rows() -> None:
    assert mean_over_workers(0.25, world=1) == 0.25
    scored = (1.5, np.array([1.0, 0.0], dtype=np.float32), np.array([0.9, 0.2], dtype=np.float32))
    loss_sum, targets, scores = gather_scored("binary", *scored, world=1)
    assert loss_sum == 1.5 and targets is scored[1] and scores is scored[2]


def test_shards_cut_every_evaluation_row_once(tmp_path: Path) -> None:
    whole = PreparedData(tmp_path / "whole")
    whole.folder.mkdir()
    (whole.state_path).write_text("{}")
    for split, rows in (("validation", 7), ("test", 1)):
        pl.DataFrame({"x": np.arange(rows, dtype=np.float32)}).write_parquet(whole.split_file(split))
    whole.split_folder("train").mkdir()  # as a Ray prepare writes it: shards
    for index, rows in enumerate((range(0, 4), range(4, 4), range(4, 10))):
        frame = pl.DataFrame({"x": np.array(rows, dtype=np.float32)})
        frame.write_parquet(whole.split_folder("train") / PreparedData.shard_name(index))
    shards = [shard_split(whole, rank, 2, tmp_path / f"shard-{rank}") for rank in range(2)]
    for split, rows in (("validation", 7), ("test", 1)):
        joined = pl.concat([pl.read_parquet(shard.split(split)) for shard in shards])
        assert joined["x"].to_list() == list(range(rows))  # all rows, in order, once
    assert [pl.read_parquet(s.split("train"))["x"].to_list() for s in shards] == [
        [0, 1, 2, 3, 4],
        [5, 6, 7, 8, 9],
    ]
