"""The prepared folder's one typed description."""

from __future__ import annotations

from pathlib import Path

import pytest

from leanml.data.prepared import PreparedData
from leanml.errors import DataError


def test_paths_and_completeness(tmp_path: Path) -> None:
    prepared = PreparedData.at(tmp_path)
    assert PreparedData.at(prepared) is prepared
    assert prepared.split_file("validation") == tmp_path / "validation.parquet"
    assert prepared.split_folder("validation") == tmp_path / "validation"
    assert prepared.state_path.name == "preprocess.json"
    assert not prepared.exists()
    prepared.quality_path.write_text('{"rows": {"read": 3}}')
    assert prepared.exists() and prepared.quality()["rows"]["read"] == 3
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        prepared.split("holdout")
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        prepared.split_file("holdout")


def test_a_split_is_its_file_or_its_shards_in_order(tmp_path: Path) -> None:
    prepared = PreparedData(tmp_path)
    with pytest.raises(DataError, match=r"has no test split \(test\.parquet or test/part-\*\.parquet\)"):
        prepared.split("test")
    prepared.split_file("train").write_bytes(b"")
    assert prepared.split("train") == [tmp_path / "train.parquet"]
    prepared.split_folder("validation").mkdir()
    names = [PreparedData.shard_name(i) for i in (10, 2, 0)]
    for name in names:
        (prepared.split_folder("validation") / name).write_bytes(b"")
    assert [p.name for p in prepared.split("validation")] == sorted(names)
    assert names[-1] == "part-00000.parquet" and sorted(names)[-1] == "part-00010.parquet"
