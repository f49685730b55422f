"""The prepared folder as one typed value: where the splits, the frozen state and the quality report are.

Every stage that reads prepared data (train, tune, shrink, the bundle) goes through :class:`PreparedData`,
so the file names are written down once, here.

A split is one Parquet file, ``train.parquet``, when prepare ran on one machine, and a folder of shards,
``train/part-00000.parquet`` …, one per piece of the input, when it ran on a Ray cluster; readers take
:meth:`PreparedData.split`'s list of files either way, and the rows in order are the same.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanml.data.state import PreprocessState
from leanml.errors import DataError

SPLITS = ("train", "validation", "test")
SHARD_GLOB = "part-*.parquet"
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

    def split(self, name: str) -> list[Path]:
        """The Parquet files of a split (``train``, ``validation`` or ``test``), in row order: the one file
        :meth:`split_file`, or the shards in :meth:`split_folder`."""
        single = self.split_file(name)
        if single.exists():
            return [single]
        shards = sorted(self.split_folder(name).glob(SHARD_GLOB))
        if not shards:
            raise DataError(
                f"'{self.folder}' has no {name} split ({single.name} or {name}/{SHARD_GLOB}); "
                "prepare the data again"
            )
        return shards

    def split_file(self, name: str) -> Path:
        """Where a split written as one file goes: ``{name}.parquet``."""
        return self.folder / f"{_checked(name)}.parquet"

    def split_folder(self, name: str) -> Path:
        """Where a split written as shards goes: ``{name}/``, holding ``part-00000.parquet`` …"""
        return self.folder / _checked(name)

    @staticmethod
    def shard_name(index: int) -> str:
        """The file name of a split's shard ``index``; names sort in row order."""
        return f"part-{index:05d}.parquet"

    def exists(self) -> bool:
        """Whether the folder holds a complete prepare output."""
        return self.quality_path.exists()

    def state(self) -> PreprocessState:
        """The frozen preprocessing state."""
        return PreprocessState.load(self.state_path)

    def quality(self) -> dict[str, Any]:
        """The data-quality report."""
        return json.loads(self.quality_path.read_text())


def _checked(name: str) -> str:
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}; expected one of {', '.join(SPLITS)}")
    return name
