"""The stages on Ray give the local stages' outputs: prepare, predict, train (2 workers)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch

from leanml.config import parse_config
from leanml.data.prepare import prepare
from leanml.data.prepared import PreparedData

COLUMNS: dict[str, Any] = {
    "num_0": {
        "type": "numeric",
        "outliers": {"method": "iqr", "k": 1.5, "action": "clip"},
        "impute": "median",
    },
    "num_1": {"type": "numeric", "impute": "mean", "scale": "quantile"},
    "num_2": {
        "type": "numeric",
        "outliers": {"method": "zscore", "k": 3.0, "action": "drop"},
        "scale": "robust",
    },
    "num_3": {"type": "numeric", "scale": "minmax"},
    "cat_0": {"type": "categorical", "min_frequency": 20},
    "cat_1": {"type": "categorical", "impute": "most_frequent"},
    "cat_2": {"type": "categorical"},
    "event_time": {"type": "datetime", "parts": ["hour", "dayofweek"], "epoch": True},
}


def cluster_config(shards: Path, root: Path, **extra: Any) -> Any:
    """A config over the shards, writing under ``root``."""
    raw = {
        "name": "cluster",
        "data": {"train": str(shards / "part-*.csv")},
        "target": "label",
        "columns": COLUMNS,
        "workdir": str(root / "runs"),
        "store": str(root / "models"),
        "model": {"arch": "mlp", "hidden": [16]},
        "train": {"epochs": 2, "batch_size": 256},
        "ray": {"num_workers": 2},
        **extra,
    }
    return parse_config(raw)


def read_split(folder: Path, split: str) -> pl.DataFrame:
    """A prepared split: its one file, or its shards in order."""
    return pl.read_parquet(PreparedData(folder).split(split))


def assert_close(local: Any, remote: Any, path: str = "") -> None:
    """Equal JSON values, floats within 1e-9 (relative to their size)."""
    if isinstance(local, dict):
        assert local.keys() == remote.keys(), path
        for key in local:
            assert_close(local[key], remote[key], f"{path}.{key}")
    elif isinstance(local, list):
        assert len(local) == len(remote), path
        for i, (a, b) in enumerate(zip(local, remote, strict=True)):
            assert_close(a, b, f"{path}[{i}]")
    elif isinstance(local, float) and isinstance(remote, float):
        assert math.isclose(local, remote, rel_tol=1e-9, abs_tol=1e-9), (path, local, remote)
    else:
        assert local == remote, (path, local, remote)


@pytest.fixture(scope="module")
def prepared_both(ray_session: Any, shards: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same config prepared locally and on Ray."""
    from leanml.cluster.prepare import prepare_on_ray
    from leanml.cluster.session import connect

    root = tmp_path_factory.mktemp("prepared")
    config = cluster_config(shards, root)
    prepare(config, out_dir=root / "local")
    prepare_on_ray(config, connect(config, "auto"), out_dir=root / "ray")
    return {"config": config, "local": root / "local", "ray": root / "ray", "root": root}


def test_prepare_on_ray_equals_local(prepared_both: dict[str, Any]) -> None:
    local, remote = prepared_both["local"], prepared_both["ray"]
    assert_close(
        json.loads((local / "preprocess.json").read_text()),
        json.loads((remote / "preprocess.json").read_text()),
    )
    for split in ("train", "validation", "test"):
        a, b = read_split(local, split), read_split(remote, split)
        assert a.height > 0
        assert a.equals(b), split
        # Ray writes each piece's rows as a shard, nothing joined; one machine writes one file
        assert PreparedData(local).split(split) == [local / f"{split}.parquet"]
        shards = PreparedData(remote).split(split)
        assert len(shards) > 1 and all(s.parent == remote / split for s in shards)
        assert not (remote / f"{split}.parquet").exists() and not (remote / ".pieces").exists()
    quality = [json.loads((f / "quality.json").read_text()) for f in (local, remote)]
    assert quality[0]["rows"] == quality[1]["rows"]
    assert quality[0]["columns"] == quality[1]["columns"]


def test_train_and_predict_on_ray(prepared_both: dict[str, Any], tmp_path: Path) -> None:
    """Two workers train a model within noise of local training; predict on Ray equals local predict."""
    import leanml
    from leanml.bundle.predict import predict_file
    from leanml.cluster.predict import predict_on_ray
    from leanml.cluster.session import connect
    from leanml.cluster.train import train_on_ray
    from leanml.data.prepared import PreparedData
    from leanml.training.batching import open_split
    from leanml.training.loop import evaluate_split, make_loss, train_model

    config = prepared_both["config"]
    cluster = connect(config, "auto")
    outcome = train_on_ray(config, cluster)
    local = train_model(config, prepared_both["local"], tmp_path / "local-train", plots=False)
    assert len(outcome.result.history) == config.train.epochs
    assert abs(outcome.result.test["roc_auc"] - local.test["roc_auc"]) < 0.05
    # each worker scored its share of validation and test; the metrics are the whole splits' all the same
    prepared = PreparedData(prepared_both["ray"])
    state = prepared.state()
    for split in ("validation", "test"):
        batches = open_split(prepared.split(split), state.feature_names, state.target.task, 1024, 256)
        _, whole, _, _ = evaluate_split(
            outcome.result.model,
            batches,
            state.target.task,
            make_loss(state.target.task),
            torch.device("cpu"),
        )
        assert whole == pytest.approx(getattr(outcome.result, split), rel=1e-6), split

    bundle = leanml.load(outcome.bundle.path)
    source = str(Path(config.data.train))
    expected = tmp_path / "local.parquet"
    predict_file(bundle, source, expected, keep=["cat_0"])
    summary = predict_on_ray(outcome.bundle.path, source, tmp_path / "ray.parquet", cluster, keep=["cat_0"])
    got = pl.read_parquet(summary.output)
    assert summary.shards > 1 and summary.rows == got.height
    assert got.equals(pl.read_parquet(expected))


def test_shards_with_different_schemas(ray_session: Any, tmp_path: Path) -> None:
    from leanml.cluster.prepare import prepare_on_ray
    from leanml.cluster.session import ClusterError, connect

    pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]}).write_parquet(tmp_path / "a.parquet")
    pl.DataFrame({"x": ["1", "2", "3", "4"], "y": [0, 1, 0, 1]}).write_parquet(tmp_path / "b.parquet")
    config = cluster_config(tmp_path, tmp_path, data={"train": str(tmp_path / "*.parquet")})
    config = parse_config(
        {**config.model_dump(mode="json"), "target": "y", "columns": {"x": {"type": "numeric"}}}
    )
    with pytest.raises(ClusterError, match="shards with different schemas: column 'x'"):
        prepare_on_ray(config, connect(config, "auto"), out_dir=tmp_path / "out")


def test_nothing_imports_ray_without_the_option() -> None:
    code = "import sys, leanml.cli, leanml.config; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tune_on_ray_shares_one_study(ray_session: Any, shards: Path, tmp_path: Path) -> None:
    """Trials run as Ray tasks attached to one journal under the storage path; --resume continues it."""
    from rich.console import Console

    from leanml.cluster.session import connect
    from leanml.cluster.tune import tune_on_ray

    tune = {"sampler": "random", "trials": 2, "pruner": "none", "space": {"train.lr": [0.01, 0.003]}}
    ray_section = {"num_workers": 2, "storage": str(tmp_path / "ray")}
    config = cluster_config(shards, tmp_path, tune=tune, ray=ray_section)
    cluster = connect(config, "auto")
    console = Console(record=True, width=200)
    first = tune_on_ray(config, cluster, console=console, bundle=False)
    assert "on the cluster" in console.export_text()  # the base data was prepared by Ray tasks
    folder = tmp_path / "ray" / "tune"
    assert first.folder == folder and (folder / "study.log").stat().st_size > 0
    assert first.ran == 2 and [t.state for t in first.trials] == ["complete", "complete"]
    assert all((folder / "trials" / str(t.number)).is_dir() for t in first.trials)

    more = cluster_config(shards, tmp_path, tune={**tune, "trials": 3}, ray=ray_section)
    again = tune_on_ray(more, cluster, resume=True, bundle=False)
    assert again.ran == 1 and len(again.trials) == 3


def test_train_resume_on_ray_continues_the_last_run(prepared_both: dict[str, Any], tmp_path: Path) -> None:
    """--resume restores the last run's checkpoint and trains only the epochs left; the restore it makes
    is not reported as a lost worker."""
    from rich.console import Console

    from leanml.cluster.session import connect
    from leanml.cluster.train import LAST_RUN, _has_checkpoint, train_model_on_ray
    from leanml.data.prepared import PreparedData

    storage = tmp_path / "ray"
    prepared = PreparedData(prepared_both["ray"])
    ray_section = {"num_workers": 2, "storage": str(storage)}
    one = cluster_config(
        prepared_both["root"], tmp_path, train={"epochs": 1, "batch_size": 256}, ray=ray_section
    )
    cluster = connect(one, "auto")
    first = train_model_on_ray(one, cluster, prepared, tmp_path / "first")
    name = (storage / LAST_RUN).read_text().strip()
    assert len(first.history) == 1 and _has_checkpoint(storage / name)

    two = cluster_config(
        prepared_both["root"], tmp_path, train={"epochs": 2, "batch_size": 256}, ray=ray_section
    )
    console = Console(record=True, width=200)
    resumed = train_model_on_ray(two, connect(two, "auto"), prepared, tmp_path / "second", True, console)
    assert (storage / LAST_RUN).read_text().strip() == name  # the same run, continued
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert resumed.history[0]["train_loss"] == first.history[0]["train_loss"]  # epoch 1 was not rerun
    assert "a worker was lost" not in console.export_text()

    assert not _has_checkpoint(storage / "never-ran")  # its resume restores nothing: nothing to discount


def prepare_both_ways(folder: Path, root: Path, split: dict[str, Any], **data: Any) -> tuple[Any, Any]:
    """Prepare the CSV shards in ``folder`` with ``split`` (and the other ``data`` options) locally and on
    Ray (under ``root``); assert that every split holds the same rows, and the rejects (local: a file; Ray:
    ``data.rejects``, a folder of shards) the same rows in the same order; return both results."""
    from leanml.cluster.prepare import prepare_on_ray
    from leanml.cluster.session import connect

    sources = str(folder / "part-*.csv")
    rejects = root / "rejects"
    config = cluster_config(
        folder, root, data={"train": sources, "split": split, "rejects": str(rejects), **data}
    )
    local = prepare(config, out_dir=root / "local", rejects=root / "local-rejects.parquet")
    remote = prepare_on_ray(config, connect(config, "auto"), out_dir=root / "ray")
    for name in ("train", "validation", "test"):
        assert read_split(root / "local", name).equals(read_split(root / "ray", name)), name
    assert remote.rejects_path == rejects and rejects.is_dir()
    shards = sorted(rejects.glob("part-*.parquet"))
    assert len(shards) > 1 and not list(root.glob(".rejects.*"))  # published whole, nothing left beside
    assert pl.read_parquet(root / "local-rejects.parquet").equals(pl.read_parquet(shards))
    return local, remote


def write_duplicated(shards: Path, folder: Path) -> Path:
    """Two CSV shards of rows repeated within a shard, across shards, and within one piece (the four
    pieces on two workers: rows 0-1074 and 1075-2149 of part-0, 0-799 and 800-1599 of part-1)."""
    frame = pl.read_csv(shards / "part-*.csv").head(3_000)
    folder.mkdir()
    # 150 rows of the first piece repeated in the second
    frame.head(2_000).vstack(frame.head(150)).write_csv(folder / "part-0.csv")
    # 500 rows of part-0 repeated, and 100 repeated inside the last piece
    frame.slice(1_500, 1_500).vstack(frame.slice(2_900, 100)).write_csv(folder / "part-1.csv")
    return folder


@pytest.mark.parametrize("split", [{"by": "event_time"}, {"stratify": False, "seed": 3}])
def test_prepare_on_ray_counts_duplicates_across_shards(
    ray_session: Any, shards: Path, tmp_path: Path, split: dict[str, Any]
) -> None:
    """Rows repeated within and across shards are counted as locally (the keys are counted by a shuffle,
    never on the driver); a time split and a plain random split give the local rows."""
    folder = write_duplicated(shards, tmp_path / "dup")
    local, remote = prepare_both_ways(folder, tmp_path, split)
    assert local.report["rows"]["duplicates"] == 750
    assert remote.report["rows"] == local.report["rows"]


@pytest.mark.parametrize("split", [{"by": "event_time"}, {"seed": 3}])
def test_dedupe_on_ray_equals_local(
    ray_session: Any, shards: Path, tmp_path: Path, split: dict[str, Any]
) -> None:
    """data.dedupe drops the rows whose key occurred at a lower row id, in the same piece or an earlier
    one, before the split is planned: the state, every split, the report and the rejects are local's."""
    folder = write_duplicated(shards, tmp_path / "dup")
    local, remote = prepare_both_ways(folder, tmp_path, split, dedupe=True)
    assert local.report["dropped_by_reason"]["duplicate"] == local.report["rows"]["duplicates"] == 750
    assert_close(
        json.loads((tmp_path / "local" / "preprocess.json").read_text()),
        json.loads((tmp_path / "ray" / "preprocess.json").read_text()),
    )
    assert_close(local.report, remote.report)
    rejected = pl.read_parquet(sorted((tmp_path / "rejects").glob("part-*.parquet")))
    duplicates = rejected.filter(pl.col("__reason") == "duplicate")
    assert duplicates.height == 750 and set(duplicates["__stage"]) == {"before split"}
    assert set(rejected["__stage"]) > {"before split"}  # rows dropped in the splits too, in stage order


def test_a_time_split_on_ray_with_tied_and_skewed_times(
    ray_session: Any, shards: Path, tmp_path: Path
) -> None:
    """Most rows share one moment and the rest spread over a year: the cuts fall inside the tie and in a
    sparse tail, where the Ray plan's bucketed order statistics must still give the local plan's rows."""
    frame = pl.read_csv(shards / "part-*.csv").head(3_000)
    tied = pl.int_range(pl.len()) % 10 < 6
    frame = frame.with_columns(
        pl.when(tied)
        .then(pl.lit("2024-06-01T00:00:00.000000"))
        .otherwise(pl.col("event_time"))
        .alias("event_time")
    )
    folder = tmp_path / "tied"
    folder.mkdir()
    frame.head(1_200).write_csv(folder / "part-0.csv")
    frame.tail(1_800).write_csv(folder / "part-1.csv")
    local, _ = prepare_both_ways(folder, tmp_path, {"by": "event_time", "validation": 0.2, "test": 0.3})
    assert local.report["rows"]["test"]["rows"] > 0


def test_prepare_command_writes_rejects_on_ray(ray_session: Any, shards: Path, tmp_path: Path) -> None:
    """``leanml prepare --ray auto --rejects FOLDER`` writes every dropped row as a folder of shards."""
    import yaml
    from typer.testing import CliRunner

    from leanml.cli import app

    config = tmp_path / "leanml.yaml"
    config.write_text(yaml.safe_dump(cluster_config(shards, tmp_path).model_dump(mode="json")))
    out, rejects = tmp_path / "out", tmp_path / "rejects"
    command = ["prepare", str(config), "--ray", "auto", "-q", "-o", str(out), "--rejects", str(rejects)]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    dropped = json.loads((out / "quality.json").read_text())["rows"]["dropped"]
    assert dropped > 0 and f"{dropped:,} dropped rows in" in result.output
    assert pl.read_parquet(sorted(rejects.glob("part-*.parquet"))).height == dropped
