"""The two gloo processes of tests/cluster/test_gather.py (a module of its own: spawned children import
it by name, which pytest's importlib mode does not allow for a test module)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch.distributed as dist

from leanml.cluster.train import gather_scored, mean_over_workers

ROWS = {
    "binary": ("binary", 7),
    "multiclass": ("multiclass", 5),
    "one": ("regression", 1),
    "empty": ("binary", 0),
}
"""Split name → (task, rows): 7 splits unevenly (3 and 4), 1 leaves one worker nothing, 0 both."""


def whole_split(name: str) -> tuple[float, np.ndarray, np.ndarray]:
    """A split's summed loss, targets and predictions, as one process would score it."""
    rng = np.random.default_rng(len(name))
    task, rows = ROWS[name]
    if task == "multiclass":
        targets = rng.integers(0, 3, rows).astype(np.int64)
        scores = rng.dirichlet(np.ones(3), rows).astype(np.float32)
    else:
        targets = rng.integers(0, 2, rows).astype(np.float32)
        scores = rng.random(rows, dtype=np.float32)
    return float(rows) * 0.25, targets, scores


def worker(rank: int, port: int, results: Any) -> None:
    """Score this rank's share of each split (as shard_split cuts it) and gather."""
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    for name, (task, _) in ROWS.items():
        loss_sum, targets, scores = whole_split(name)
        rows = len(targets)
        start, end = rank * rows // 2, (rank + 1) * rows // 2
        share = (0.0, np.zeros(0), np.zeros(0))  # what score_split returns for a share with no rows
        if end > start:
            share = (loss_sum * (end - start) / rows, targets[start:end], scores[start:end])
        results.put((rank, name, gather_scored(task, *share, world=2)))
    results.put((rank, "mean", mean_over_workers(float(rank + 1), world=2)))  # 1 and 2: 1.5 on both
    dist.destroy_process_group()
