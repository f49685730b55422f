"""One Ray instance for the cluster tests (start-up costs seconds), and a small sharded table."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from leanml.data.synthetic import SyntheticSpec, synthetic_chunk


@pytest.fixture(scope="session")
def ray_session() -> Iterator[Any]:
    """``ray.init(num_cpus=2)`` once per test session; shut down at its end."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6,000-row synthetic table as two CSV shards of different sizes (text dates, nulls, outliers)."""
    folder = tmp_path_factory.mktemp("shards")
    frame = synthetic_chunk(SyntheticSpec(rows=6_000, numeric=4, categorical=3), 0, 6_000)
    frame.head(2_500).write_csv(folder / "part-0.csv")
    frame.tail(3_500).write_csv(folder / "part-1.csv")
    return folder
