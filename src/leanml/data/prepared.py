"""The prepared folder as one typed value: where the splits, the frozen state and the quality report are.

Every stage that reads prepared data (train, tune, shrink, the bundle) goes through :class:`PreparedData`,
so the file names are written down once, here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanml.data.state import PreprocessState

SPLITS = ("train", "validation", "test")
STATE_FILE = "preprocess.json"
QUALITY_FILE = "quality.json"


@dataclass(frozen=True)
class PreparedData:
    """A folder written by the prepare stage."""

    folder: Path

    @classmethod
    def at(cls, folder: PreparedData | str | Path) -> PreparedData:
        """``folder`` as prepared data (a :class:`PreparedData` is returned unchanged)."""
        return folder if isinstance(folder, PreparedData) else cls(Path(folder))

    @property
    def state_path(self) -> Path:
        """``preprocess.json``: the frozen :class:`PreprocessState`."""
        return self.folder / STATE_FILE

    @property
    def quality_path(self) -> Path:
        """``quality.json``: the data-quality report, written last, so its presence means complete."""
        return self.folder / QUALITY_FILE

    def split(self, name: str) -> Path:
        """The Parquet file of a split: ``train``, ``validation`` or ``test``."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
        return self.folder / f"{name}.parquet"

    def exists(self) -> bool:
        """Whether the folder holds a complete prepare output."""
        return self.quality_path.exists()

    def state(self) -> PreprocessState:
        """The frozen preprocessing state."""
        return PreprocessState.load(self.state_path)

    def quality(self) -> dict[str, Any]:
        """The data-quality report."""
        return json.loads(self.quality_path.read_text())
