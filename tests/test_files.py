"""Atomic writes and the lock shared between processes."""

from __future__ import annotations

import subprocess
import sys
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


HOLDER = """
import sys, time
from pathlib import Path
from leanml.files import file_lock
with file_lock(sys.argv[1]):
    Path(sys.argv[2]).touch()
    time.sleep(1.0)
"""


def test_file_lock_excludes_another_process(tmp_path: Path) -> None:
    lock, marker = tmp_path / "x.lock", tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(marker)])
    deadline = time.monotonic() + 60
    while not marker.exists():  # the other process holds the lock from here on
        assert time.monotonic() < deadline and holder.poll() is None
        time.sleep(0.01)
    start = time.monotonic()
    with file_lock(lock):
        waited = time.monotonic() - start
    assert holder.wait(timeout=30) == 0
    assert waited > 0.2
