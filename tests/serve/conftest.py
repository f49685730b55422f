"""Fixtures of the server tests: a private store copy, flights rows as clients send them, and a real server
with the production connection guards (``leanml.serve.server.uvicorn_options``)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from leanml.bundle.artifact import MANIFEST
from serving import running_server

INPUTS = ["dep_delay", "distance", "sched_dep_time", "carrier", "dest", "origin", "time_hour"]
GuardedServer = Callable[..., contextlib.AbstractContextManager[tuple[str, Any]]]


@pytest.fixture
def store_copy(trained_flights: dict[str, Any], tmp_path: Path) -> Path:
    """A private copy of the trained store, for tests that change its aliases or files."""
    root = tmp_path / "models"
    shutil.copytree(trained_flights["root"] / "models", root)
    return root


@pytest.fixture(scope="module")
def module_store(trained_flights: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the trained store private to one test module (its tests may change aliases)."""
    root = tmp_path_factory.mktemp("serve-store") / "models"
    shutil.copytree(trained_flights["root"] / "models", root)
    return root


@pytest.fixture(scope="session")
def guarded_server() -> GuardedServer:
    """``guarded_server(reference, limits=None, **settings)``: a context manager serving on a free loopback
    port exactly as ``leanml serve`` does (guarded protocol, timeouts, caps); yields (base URL, app)."""
    return running_server


@pytest.fixture(scope="session")
def good_rows(trained_flights: dict[str, Any]) -> list[dict[str, Any]]:
    """Twenty real flights as a client sends them: the inputs only, datetimes as ISO text."""
    frame = pl.read_parquet(trained_flights["data"]).filter(pl.col("distance") <= 3000).slice(300, 20)
    return (
        frame.select(INPUTS)
        .with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
        .to_dicts()
    )


@pytest.fixture(scope="session")
def rewrite_bundle_file() -> Callable[[Path, str, bytes], None]:
    """``rewrite_bundle_file(bundle, name, content)``: replace one file of a bundle and record its new
    checksum, as a tamperer who knows the format would: the manifest stays consistent, so only the deeper
    checks (loading, replay) can refuse it."""

    def rewrite(bundle: Path, name: str, content: bytes) -> None:
        (bundle / name).write_bytes(content)
        manifest = json.loads((bundle / MANIFEST).read_text())
        manifest["files"][name] = hashlib.sha256(content).hexdigest()
        (bundle / MANIFEST).write_text(json.dumps(manifest))

    return rewrite


def poll(condition: Callable[[], Any], timeout: float = 15.0) -> None:
    """Poll ``condition`` until it holds (AssertionError after ``timeout`` seconds)."""
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., None]:
    """``wait_for(condition, timeout=15)``: poll until ``condition()`` holds."""
    return poll
