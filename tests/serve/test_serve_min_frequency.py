"""``handle_unknown: error`` with ``min_frequency``: a category seen in training but too rare to get its own
column is known (grouped as infrequent), so serving answers it; only a category never seen is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from starlette.testclient import TestClient

from leanml.config import ServeConfig
from leanml.serve import create_app


@pytest.fixture(scope="module")
def rare_model(
    flights: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, dict[str, Any]]:
    """A tiny model grouping carriers seen fewer than N times: (store, its rarest carrier, a row of it)."""
    from helpers import FLIGHTS_COLUMNS
    from leanml.config import parse_config
    from leanml.training.stage import train_and_bundle

    root = tmp_path_factory.mktemp("rare")
    train = flights.head(4000)
    counts = train.group_by("carrier").len().sort("len")
    rare, seen = counts.row(0)
    data = root / "flights.parquet"
    train.write_parquet(data)
    config = parse_config(
        {
            "name": "rare",
            "data": {"train": str(data)},
            "target": "delayed",
            "columns": {
                **FLIGHTS_COLUMNS,
                "carrier": {"type": "categorical", "handle_unknown": "error", "min_frequency": seen + 1},
            },
            "model": {"arch": "mlp", "hidden": [8], "dropout": 0.0},
            "train": {"epochs": 1, "batch_size": 512},
            "workdir": str(root / "runs"),
            "store": str(root / "models"),
        }
    )
    train_and_bundle(config)
    row = (
        train.filter(pl.col("carrier") == rare)
        .select([name for name in FLIGHTS_COLUMNS if name in train.columns])
        .with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
        .to_dicts()[0]
    )
    return root / "models", str(rare), row


def test_a_rare_known_category_is_served_and_an_unseen_one_is_refused(
    rare_model: tuple[Path, str, dict[str, Any]],
) -> None:
    store, rare, row = rare_model
    app = create_app(str(store), ServeConfig(max_wait_ms=0))
    with TestClient(app, raise_server_exceptions=False) as client:
        schema = client.get("/v1/models/rare").json()["inputs"]
        carrier = next(entry for entry in schema if entry["name"] == "carrier")
        assert carrier["unknown"] == "error" and rare in carrier["categories"]
        response = client.post("/v1/models/rare:predict", json={"instances": [row]})
        assert response.status_code == 200, response.text
        response = client.post("/v1/models/rare:predict", json={"instances": [{**row, "carrier": "ZZ"}]})
        assert response.status_code == 422
        assert response.json()["details"][0]["field"] == "carrier"
