"""Prepared data shared by trials: one folder per preprocessing variant, prepared once.

Trials that only change the model or the training reuse the same prepared splits. A trial that changes a
key under ``data``, ``target``, ``task`` or ``columns`` needs its own: it is prepared into
``ROOT/<digest>/``, where the digest is that of those sections, so each distinct variant is prepared once
however many trials (and processes) use it. A file lock makes concurrent workers wait for the one that
prepares; ``prepare`` swaps its output folder in whole, so a folder that exists is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from leanml.config import PREPARE_SECTIONS, Config
from leanml.data.prepare import prepare
from leanml.data.prepared import PreparedData
from leanml.files import file_lock

DIGEST_CHARS = 12


def variant_config(config: Config) -> Config:
    """``config`` as a variant is prepared: without ``data.rejects`` (trials never write rejects)."""
    return config.model_copy(update={"data": config.data.model_copy(update={"rejects": None})})


def variant_id(config: Config) -> str:
    """The name of ``config``'s preprocessing variant: a digest of its data sections."""
    return variant_config(config).digest(PREPARE_SECTIONS)[:DIGEST_CHARS]


def prepared_variant(
    config: Config,
    root: str | Path,
    console: Console | None = None,
    stage: Callable[..., Any] | None = None,
) -> PreparedData:
    """The prepared splits of ``config``'s variant under ``root``, preparing them first if needed (with
    ``stage``, called like :func:`~leanml.data.prepare.prepare`; e.g. the Ray stage)."""
    root = Path(root)
    name = variant_id(config)
    prepared = PreparedData(root / name)
    if prepared.exists():
        return prepared
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".{name}.lock"):
        if not prepared.exists():  # another process may have prepared it meanwhile
            (stage or prepare)(variant_config(config), out_dir=prepared.folder, console=console)
    return prepared


def prepared_variants(root: str | Path) -> list[str]:
    """The variants prepared under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if PreparedData(p).exists())
