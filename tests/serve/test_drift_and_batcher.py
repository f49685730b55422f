"""PSI against the formula worked by hand, and the batcher skipping jobs whose deadline has passed."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import numpy as np
import pytest

from leanml.bundle.drift import DriftMonitor, psi, status
from leanml.serve.batcher import Batcher
from leanml.serve.engine import Job
from leanml.serve.validation import RequestError


def test_psi_equals_the_formula_worked_by_hand_and_reads_moderate() -> None:
    reference = {
        "columns": {
            "age": {"kind": "bins", "feature": "age", "edges": [0.0, 1.0], "expected": [0.2, 0.5, 0.3]},
            "city": {
                "kind": "categories",
                "features": ["city__a", "city__b"],
                "labels": ["city__a", "city__b", "other"],
                "expected": [0.6, 0.4, 0.0],
            },
        },
        "rows": 100,
    }
    monitor = DriftMonitor(reference, ["age", "city__a", "city__b"])
    # 35 rows below 0, 50 in [0, 1), 15 at 1 or above; cities: 60 a, 30 b, 10 neither.
    ages = np.array([-1.0] * 35 + [0.5] * 50 + [2.0] * 15)
    cities = np.array([[1.0, 0.0]] * 60 + [[0.0, 1.0]] * 30 + [[0.0, 0.0]] * 10)
    monitor.update(np.column_stack([ages, cities]))
    assert {c["status"] for c in monitor.report()["columns"].values()} == {"insufficient data"}  # 100 rows
    for _ in range(4):  # the same shares, 500 rows: enough to read a status
        monitor.update(np.column_stack([ages, cities]))
    report = monitor.report()

    by_hand_age = (0.35 - 0.2) * math.log(0.35 / 0.2) + 0.0 + (0.15 - 0.3) * math.log(0.15 / 0.3)
    assert by_hand_age == pytest.approx(0.187914, abs=1e-6)
    assert report["rows"] == 500
    assert report["columns"]["age"] == {"psi": pytest.approx(by_hand_age, abs=1e-6), "status": "moderate"}
    floor = 1e-4  # an empty training bin counts as this share, so PSI stays finite
    by_hand_city = (
        (0.6 - 0.6) * math.log(1.0)
        + (0.3 - 0.4) * math.log(0.3 / 0.4)
        + (0.1 - floor) * math.log(0.1 / floor)
    )
    assert report["columns"]["city"]["psi"] == pytest.approx(by_hand_city, abs=1e-6)
    assert report["columns"]["city"]["status"] == "drifted"
    assert psi(np.array([0.5, 0.5]), np.array([0, 0])) == 0.0
    assert [status(v) for v in (0.0999, 0.1, 0.2499, 0.25)] == ["stable", "moderate", "moderate", "drifted"]


def test_the_batcher_answers_504_without_computing_jobs_past_their_deadline() -> None:
    computed: list[list[int]] = []

    def infer(jobs: list[Job]) -> list[Any]:
        computed.append([job.rows for job in jobs])
        return [f"answer for {job.rows}" for job in jobs]

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        batcher = Batcher(infer, max_batch_size=100, max_wait_ms=30, max_queue=10)
        now = time.perf_counter()
        jobs = [
            Job(columns={}, rows=rows, future=loop.create_future(), deadline=deadline)
            for rows, deadline in [(1, now + 10), (2, now - 1), (3, now + 10), (4, now + 0.01)]
        ]
        for job in jobs:
            batcher.submit(job)
        await asyncio.sleep(0.02)  # the last job's deadline passes while its batch is still filling
        batcher.start()
        try:
            return await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)
        finally:
            await batcher.stop()

    answers = asyncio.run(scenario())
    assert computed == [[1, 3]]
    assert answers[0] == "answer for 1" and answers[2] == "answer for 3"
    for late in (answers[1], answers[3]):
        assert isinstance(late, RequestError) and late.status == 504
