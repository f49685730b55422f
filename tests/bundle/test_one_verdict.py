"""One policy for unreadable values: prepare, predict (frames and records) and serve give each row the
same verdict, on the same messy rows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from leanml.bundle import load_bundle
from leanml.config import load_config
from leanml.data.io import scan_table
from leanml.data.prepare import prepare
from leanml.errors import DataError
from leanml.serve.engine import Job, ServedModel
from leanml.serve.validation import RequestError
from leanml.training.stage import train_and_bundle

ROWS = 400
NUMBERS = ["12", " 7.5 ", "1,234", "abc", "", "NA", "1e5", "-3", "inf", "0x1"]
DATES = ["2013-01-05 10:00:00", "2013-02-01", "05/01/2013", "yesterday", "", "2013-13-01 00:00:00"]
KINDS = ["a", " b ", "c", "", "NA", "d"]


def _messy_csv(path: Path) -> None:
    rng = np.random.default_rng(0)
    clean = {
        "x": [f"{v:.2f}" for v in rng.normal(10, 3, ROWS)],
        "c": rng.choice(["a", "b", "c"], ROWS).tolist(),
        "t": [
            f"2013-{m:02d}-{d:02d} {h:02d}:00:00"
            for m, d, h in rng.integers([1, 1, 0], [13, 28, 24], (ROWS, 3))
        ],
    }
    for i in range(0, ROWS, 97):  # a few unreadable values: under the 1 % a column may hold
        clean["x"][i] = "abc"
        clean["t"][(i + 5) % ROWS] = "yesterday"
    clean["y"] = rng.integers(0, 2, ROWS).tolist()
    pl.DataFrame(clean).write_csv(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("verdict")
    _messy_csv(root / "messy.csv")
    config = {
        "name": "messy",
        "data": {
            "train": "messy.csv",
            "split": {"validation": 0.2, "test": 0.2, "seed": 0},
            "max_invalid": 0.02,
        },
        "target": "y",
        "columns": {
            "x": {"type": "numeric", "invalid": "reject"},
            "c": {"type": "categorical", "strip": True},
            "t": {"type": "datetime", "parts": ["month", "hour"], "invalid": "reject"},
        },
        "model": {"arch": "mlp", "hidden": [8]},
        "train": {"epochs": 1, "batch_size": 64},
        "workdir": "runs",
        "store": "models",
    }
    (root / "leanml.yaml").write_text(yaml.safe_dump(config))
    cfg = load_config(root / "leanml.yaml")
    result = prepare(cfg, rejects=root / "rejects.parquet")
    outcome = train_and_bundle(cfg)
    bundle = load_bundle(outcome.bundle.path)
    return {"root": root, "result": result, "bundle": bundle, "served": ServedModel(bundle)}


def _serve_verdicts(served: ServedModel, rows: list[dict[str, Any]]) -> list[str | None]:
    loop = asyncio.new_event_loop()
    try:
        jobs = [
            Job({k: [row.get(k)] for k in ("x", "c", "t")}, 1, loop.create_future(), deadline=1e18)
            for row in rows
        ]
    finally:
        loop.close()
    verdicts: list[str | None] = []
    for answer in served.infer(jobs):
        if isinstance(answer, RequestError):
            verdicts.append(",".join(sorted(f"invalid:{e['field']}" for e in answer.details)))
        else:
            verdicts.append(None)
    return verdicts


def test_prepare_predict_and_serve_agree_on_the_training_file(trained: dict[str, Any]) -> None:
    root, bundle = trained["root"], trained["bundle"]
    rejects = pl.read_parquet(root / "rejects.parquet")
    prepared = {row: reason for row, reason in zip(rejects["__row_id"], rejects["__reason"], strict=True)}
    assert set(prepared.values()) == {"invalid:x", "invalid:t"}

    raw = scan_table(str(root / "messy.csv")).collect()  # every column as the file spells it
    by_frame = bundle.predict(raw)["__reason"].to_list()
    records = raw.select("x", "c", "t").to_dicts()
    by_records = bundle.predict(records)["__reason"].to_list()
    served = _serve_verdicts(trained["served"], records)
    for row in range(raw.height):
        expected = prepared.get(row)
        assert by_frame[row] == expected, row
        assert by_records[row] == expected, row
        assert served[row] == expected, row


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"x": st.sampled_from(NUMBERS), "c": st.sampled_from(KINDS), "t": st.sampled_from(DATES)}
        ),
        min_size=1,
        max_size=8,
    )
)
def test_any_messy_rows_get_one_verdict_everywhere(
    trained: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    bundle = trained["bundle"]
    frame = pl.DataFrame(rows, schema={"x": pl.String, "c": pl.String, "t": pl.String})
    by_frame = bundle.predict(frame)
    by_records = bundle.predict(rows)
    assert by_frame["__reason"].to_list() == by_records["__reason"].to_list()
    assert np.allclose(
        by_frame["proba_1"].fill_null(-1).to_numpy(),
        by_records["proba_1"].fill_null(-1).to_numpy(),
        atol=1e-6,
    )
    served = _serve_verdicts(trained["served"], rows)
    for reason, verdict in zip(by_records["__reason"].to_list(), served, strict=True):
        assert (reason is None) == (verdict is None)
        if reason is not None:
            assert reason in verdict.split(",")


def test_predict_takes_pandas_arrow_polars_and_records(trained: dict[str, Any]) -> None:
    bundle = trained["bundle"]
    rows = [
        {"x": "12", "c": "a", "t": "2013-01-05 10:00:00"},
        {"x": "abc", "c": " b ", "t": "2013-02-01 08:00:00"},
    ]
    polars = bundle.predict(pl.DataFrame(rows))
    for data in (pd.DataFrame(rows), pa.Table.from_pylist(rows), pl.DataFrame(rows).lazy(), rows):
        other = bundle.predict(data)
        assert other["__reason"].to_list() == polars["__reason"].to_list() == [None, "invalid:x"]
        assert other["prediction"].to_list() == polars["prediction"].to_list()
    with pytest.raises(DataError, match="a single mapping"):
        bundle.predict(rows[0])
    with pytest.raises(DataError, match="record 1: expected a mapping"):
        bundle.predict([rows[0], 5])
