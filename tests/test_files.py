"""Atomic writes and the lock shared between processes."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from leanml.files import atomic_path, file_lock, write_json


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and [p.name for p in tmp_path.iterdir()] == ["out.json"]


def _hold(path: str, marker: str, seconds: float) -> None:
    with file_lock(path):
        Path(marker).touch()
        time.sleep(seconds)


def test_file_lock_excludes_another_process(tmp_path: Path) -> None:
    lock = str(tmp_path / "x.lock")
    marker = tmp_path / "held"
    holder = multiprocessing.get_context("spawn").Process(target=_hold, args=(lock, str(marker), 1.0))
    holder.start()
    deadline = time.monotonic() + 60
    while not marker.exists():  # the child holds the lock from here on
        assert time.monotonic() < deadline
        time.sleep(0.01)
    start = time.monotonic()
    with file_lock(lock):
        waited = time.monotonic() - start
    holder.join()
    assert waited > 0.2
