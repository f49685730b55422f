"""Helpers shared by the tests (importable because pytest puts tests/ on the path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leanml.config import Config, parse_config
from leanml.datasets import FLIGHTS_COLUMNS


def make_config(
    train: Path | str, target: str = "delayed", columns: dict[str, Any] | None = None, **extra: Any
) -> Config:
    """A validated config for tests; ``extra`` sets top-level keys (``data`` is merged)."""
    raw: dict[str, Any] = {
        "name": "test",
        "data": {"train": str(train), **extra.pop("data", {})},
        "target": target,
        "columns": columns if columns is not None else FLIGHTS_COLUMNS,
        **extra,
    }
    return parse_config(raw)
