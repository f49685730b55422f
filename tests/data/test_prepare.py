"""The prepare stage end to end: outputs, accounting of every row, shards, splits and garbage input."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from helpers import FLIGHTS_COLUMNS, make_config
from leanml.data.prepare import TARGET, prepare
from leanml.data.split import ROW_ID, SPLITS
from leanml.data.state import PreprocessState
from leanml.errors import DataError


def read_split(out: Path, split: str) -> pl.DataFrame:
    return pl.read_parquet(out / f"{split}.parquet")


def test_prepare_writes_splits_state_and_report(flights_parquet: Path, tmp_path: Path) -> None:
    config = make_config(flights_parquet, data={"rejects": str(tmp_path / "rejects.parquet")})
    result = prepare(config, out_dir=tmp_path / "out")
    state = PreprocessState.load(tmp_path / "out" / "preprocess.json")
    assert state == result.state
    frames = {s: read_split(result.out_dir, s) for s in SPLITS}
    for frame in frames.values():
        assert frame.columns == [ROW_ID, *state.feature_names, TARGET]
        assert all(frame[c].dtype == pl.Float32 for c in state.feature_names)
        assert frame.select(pl.all().null_count().sum()).row(0)  # has columns
        assert frame.null_count().sum_horizontal().item() == 0
    report = json.loads((result.out_dir / "quality.json").read_text())
    rows = report["rows"]
    assert rows["read"] == 40_000
    assert rows["read"] == rows["kept"] + rows["dropped"]
    assert sum(f.height for f in frames.values()) == rows["kept"]
    assert (
        report["dropped_by_reason"]["missing_target"]
        == pl.read_parquet(flights_parquet)["delayed"].null_count()
    )
    # Every row lands in exactly one place: an output split or the rejects file.
    rejects = pl.read_parquet(tmp_path / "rejects.parquet")
    assert rejects.height == rows["dropped"]
    ids = pl.concat([f[ROW_ID] for f in frames.values()] + [rejects[ROW_ID]]).sort()
    assert ids.to_list() == list(range(40_000))
    assert set(rejects["__reason"]) == set(report["dropped_by_reason"])
    # IQR clipping on dep_delay shows up in the report.
    assert report["columns"]["dep_delay"]["total"]["clipped"] > 0
    assert report["columns"]["dest"]["total"]["infrequent"] > 0


def test_stratified_split_is_exact_and_deterministic(flights_parquet: Path, tmp_path: Path) -> None:
    config = make_config(flights_parquet, data={"split": {"validation": 0.2, "test": 0.1, "seed": 7}})
    first = prepare(config, out_dir=tmp_path / "a")
    second = prepare(config, out_dir=tmp_path / "b")
    for split in SPLITS:
        assert read_split(first.out_dir, split).equals(read_split(second.out_dir, split))
    targets = {s: read_split(first.out_dir, s)[TARGET] for s in SPLITS}
    total = sum(t.len() for t in targets.values())
    positives = sum(int(t.sum()) for t in targets.values())
    assert targets["test"].len() == pytest.approx(0.1 * total, abs=2)
    assert targets["validation"].len() == pytest.approx(0.2 * total, abs=2)
    for split in SPLITS:  # class shares equal to within one row's rounding
        assert targets[split].mean() == pytest.approx(positives / total, abs=2 / targets[split].len())
    other_seed = prepare(make_config(flights_parquet, data={"split": {"seed": 8}}), out_dir=tmp_path / "c")
    assert not read_split(other_seed.out_dir, "test")[ROW_ID].equals(
        read_split(first.out_dir, "test")[ROW_ID]
    )


def test_time_split_puts_latest_rows_last(
    flights: pl.DataFrame, flights_parquet: Path, tmp_path: Path
) -> None:
    config = make_config(flights_parquet, data={"split": {"by": "time_hour", "validation": 0.1, "test": 0.2}})
    result = prepare(config, out_dir=tmp_path / "out")
    times = flights.with_row_index(ROW_ID).select(ROW_ID, "time_hour")
    spans = {}
    for split in SPLITS:
        ids = read_split(result.out_dir, split).select(ROW_ID)
        joined = ids.join(times, on=ROW_ID)
        spans[split] = (joined["time_hour"].min(), joined["time_hour"].max())
    assert spans["train"][1] <= spans["validation"][0]
    assert spans["validation"][1] <= spans["test"][0]
    assert result.report["split"]["method"] == "time"


def test_shards_and_single_file_give_the_same_state_and_outputs(
    flights: pl.DataFrame, tmp_path: Path
) -> None:
    whole = tmp_path / "whole.parquet"
    flights.write_parquet(whole)
    shards = tmp_path / "shards"
    shards.mkdir()
    for i, part in enumerate(flights.iter_slices(n_rows=11_000)):
        part.write_parquet(shards / f"part-{i:03d}.parquet")
    one = prepare(make_config(whole), out_dir=tmp_path / "one")
    many = prepare(make_config(str(shards / "*.parquet")), out_dir=tmp_path / "many")
    # Equal up to floating-point summation order (the engine sums chunks in parallel).
    assert_nearly_equal(one.state.model_dump(), many.state.model_dump())
    for split in SPLITS:
        a, b = read_split(one.out_dir, split), read_split(many.out_dir, split)
        assert a[ROW_ID].equals(b[ROW_ID])
        np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6, atol=1e-6)


def assert_nearly_equal(a: object, b: object, path: str = "state") -> None:
    """Structural equality with floats compared to 1e-12 relative."""
    if isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-12), path
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_nearly_equal(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_nearly_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "zip", "jsonl"])
def test_every_input_format_prepares_identically(flights: pl.DataFrame, tmp_path: Path, fmt: str) -> None:
    small = flights.head(3000).with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%d %H:%M:%S"))
    small.write_parquet(tmp_path / "ref.parquet")
    path = tmp_path / f"data.{fmt}"
    if fmt == "csv":
        small.write_csv(path)
    elif fmt == "csv.gz":
        with gzip.open(path, "wb") as handle:
            small.write_csv(handle)
    elif fmt == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("flights.csv", small.write_csv())
    else:
        small.write_ndjson(path)
    reference = prepare(make_config(tmp_path / "ref.parquet"), out_dir=tmp_path / "ref")
    result = prepare(make_config(path), out_dir=tmp_path / "out")
    for split in SPLITS:
        np.testing.assert_allclose(
            read_split(result.out_dir, split).to_numpy(),
            read_split(reference.out_dir, split).to_numpy(),
            rtol=1e-6,
        )


def garbage_csv(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.csv"
    path.write_text(
        "age,city,joined,const,target\n"
        "34,paris,2024-01-05,1,yes\n"
        "abc,paris,not a date,1,no\n"
        "NA,berlin,2024-02-30,1,yes\n"
        "41,,2024-03-01,1,\n"
        "29,rome,2024-03-02,1,no\n"
        "1e9,rome,2024-03-03,1,yes\n"
        "34,paris,2024-01-05,1,yes\n"
        "50,berlin,2024-04-01,1,no\n"
        "22,oslo,2024-04-02,1,yes\n"
        "38,rome,2024-05-01,1,no\n"
    )
    return path


GARBAGE_COLUMNS = {  # unreadable values imputed (invalid: null), so that every row is accounted for
    "age": {
        "type": "numeric",
        "outliers": {"method": "range", "max": 120, "action": "drop"},
        "invalid": "null",
    },
    "city": {"type": "categorical"},
    "joined": {"type": "datetime", "parts": ["month"], "invalid": "null"},
    "const": {"type": "numeric"},
}


def test_garbage_is_counted_never_lost(tmp_path: Path) -> None:
    config = make_config(
        garbage_csv(tmp_path),
        target="target",
        columns=GARBAGE_COLUMNS,
        data={"dedupe": True, "split": {"validation": 0.0, "test": 0.0}, "max_invalid": 0.5},
    )
    result = prepare(config, out_dir=tmp_path / "out", rejects=tmp_path / "rejects.parquet")
    report = result.report
    assert report["dropped_by_reason"] == {"duplicate": 1, "missing_target": 1, "outlier:age": 1}
    assert report["rows"]["read"] == 10
    assert report["rows"]["kept"] == 7
    age = report["columns"]["age"]["total"]
    assert (age["invalid"], age["missing"], age["outliers"]) == (1, 1, 1)
    joined = report["columns"]["joined"]["total"]
    assert joined["invalid"] == 2  # 'not a date' and the impossible 2024-02-30
    assert any("'const' is constant" in note for note in report["notes"])
    rejects = pl.read_parquet(tmp_path / "rejects.parquet")
    assert sorted(rejects["__reason"].to_list()) == ["duplicate", "missing_target", "outlier:age"]
    assert rejects.filter(pl.col("__reason") == "outlier:age")["age"].to_list() == ["1e9"]


def test_single_class_target_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "one.csv"
    path.write_text("x,y\n1,a\n2,a\n3,a\n")
    with pytest.raises(DataError, match=r"target 'y': a single class \('a'\)"):
        prepare(make_config(path, target="y", columns={"x": {"type": "numeric"}}), out_dir=tmp_path / "o")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("x,y\n", "no row has a value"),
        ("x,x,y\n1,2,3\n", "duplicate column names"),
    ],
)
def test_unusable_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        prepare(make_config(path, target="y", columns={"x": {"type": "numeric"}}), out_dir=tmp_path / "o")


def test_missing_column_and_missing_file_are_named(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,y\n1,0\n2,1\n")
    with pytest.raises(DataError, match=r"'x'.*not in the data.*the data has: a, y"):
        prepare(make_config(path, target="y", columns={"x": {"type": "numeric"}}), out_dir=tmp_path / "o")
    with pytest.raises(DataError, match="no such file"):
        prepare(make_config(tmp_path / "nope.csv", target="y", columns={"a": {"type": "numeric"}}))
    with pytest.raises(DataError, match="matches no files"):
        prepare(make_config(tmp_path / "*.parquet", target="y", columns={"a": {"type": "numeric"}}))


def test_regression_target_with_garbage_drops_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("x,y\n" + "".join(f"{i},{i * 1.5}\n" for i in range(40)) + "5,oops\n6,\n")
    config = make_config(path, target="y", columns={"x": {"type": "numeric"}}, task="regression")
    result = prepare(config, out_dir=tmp_path / "o")
    assert result.report["dropped_by_reason"] == {"invalid_target": 1, "missing_target": 1}
    assert result.state.target.task == "regression"
    assert read_split(result.out_dir, "train")[TARGET].dtype == pl.Float64


def test_rerun_replaces_outputs_and_leaves_no_temporaries(flights_parquet: Path, tmp_path: Path) -> None:
    config = make_config(flights_parquet)
    prepare(config, out_dir=tmp_path / "out")
    prepare(config, out_dir=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "preprocess.json",
        "quality.json",
        "report.html",
        "test.parquet",
        "train.parquet",
        "validation.parquet",
    ]


def test_statistics_come_from_the_training_split_only(flights_parquet: Path, tmp_path: Path) -> None:
    columns = {"distance": FLIGHTS_COLUMNS["distance"]}
    result = prepare(make_config(flights_parquet, columns=columns), out_dir=tmp_path / "o")
    raw = pl.read_parquet(flights_parquet).with_row_index(ROW_ID)
    train_ids = read_split(result.out_dir, "train").select(ROW_ID)
    train_distance = train_ids.join(raw, on=ROW_ID)["distance"]
    scale = result.state.columns[0].scale
    assert scale.offset == train_distance.min()
    assert scale.divisor == train_distance.max() - train_distance.min()
