"""The prepared folder's one typed description."""

from __future__ import annotations

from pathlib import Path

import pytest

from leanml.data.prepared import PreparedData


def test_paths_and_completeness(tmp_path: Path) -> None:
    prepared = PreparedData.at(tmp_path)
    assert PreparedData.at(prepared) is prepared
    assert prepared.split("validation") == tmp_path / "validation.parquet"
    assert prepared.state_path.name == "preprocess.json"
    assert not prepared.exists()
    prepared.quality_path.write_text('{"rows": {"read": 3}}')
    assert prepared.exists() and prepared.quality()["rows"]["read"] == 3
    with pytest.raises(ValueError, match="unknown split 'holdout'"):
        prepared.split("holdout")
