"""Writing files safely: atomic replacement, atomic JSON and a lock shared between processes.

Every stage writes through these, so a reader never sees half a file and a killed writer leaves at most a
temporary file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it is renamed over ``target`` atomically."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) between processes.

    ``filelock`` uses ``flock`` on POSIX and ``msvcrt`` locking on Windows; either is released by the
    operating system when the holder dies, so a killed process never leaves the lock stuck.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path)):
        yield


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
