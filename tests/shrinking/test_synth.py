"""Synthetic rows for distillation: MUNGE and mixup keep every column valid, are seeded, bounded in memory,
and give a student that imitates its teacher better than the training rows alone."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import polars as pl
import pytest
import torch
from typer.testing import CliRunner

import leanml
from leanml.bundle import load_bundle
from leanml.cli import app
from leanml.config import ShrinkConfig, parse_config
from leanml.data.prepare import ensure_prepared
from leanml.models import TabularModel, build_model
from leanml.models.predict import predict
from leanml.shrinking import synth
from leanml.shrinking.distill import distillation_loss, soft_loss, student_spec
from leanml.shrinking.finetune import ShrinkData, fit
from leanml.shrinking.stage import _synthesis
from leanml.shrinking.synth import FeatureGroups, Synthesis, feature_groups, munge, nearest_neighbours
from serving import running_server

COLOURS = ("black", "blue", "green", "red")
EFFECT = (0.0, 0.3, -0.5, 1.0)


def small_table(rows: int, seed: int, nulls: float = 0.2) -> pl.DataFrame:
    """Two numeric columns and two categorical ones (with ``nulls`` in one of each), a datetime, and a
    smooth, non-linear regression target: ``sin(2a) + b²/2 + effect(colour)``."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, rows), rng.uniform(-2, 2, rows)
    colour = rng.choice(COLOURS, rows)
    size = rng.choice(["S", "M", "L"], rows)
    effect = dict(zip(COLOURS, EFFECT, strict=True))
    y = np.sin(2 * a) + b * b / 2 + np.array([effect[c] for c in colour])
    b_nulls = rng.random(rows) < nulls
    colour_nulls = rng.random(rows) < nulls
    minutes = rng.integers(0, 365 * 24 * 60, rows).astype("timedelta64[m]")
    when = (np.datetime64("2024-01-01T00:00") + minutes).astype("datetime64[us]")
    return pl.DataFrame(
        {
            "a": a,
            "b": np.where(b_nulls, np.nan, b),
            "colour": [None if n else c for n, c in zip(colour_nulls, colour, strict=True)],
            "size": size,
            "when": when,
            "y": y,
        }
    ).with_columns(pl.col("b").fill_nan(None))


def prepared_config(tmp: Path, rows: int, nulls: float = 0.2, validation: float = 0.2) -> Any:
    """A config over :func:`small_table`, with missing indicators on the columns that have nulls; ``a``
    and ``b`` unscaled (so a test's teacher can compute the target from the features)."""
    small_table(rows, 0, nulls).write_parquet(tmp / "table.parquet")
    return parse_config(
        {
            "name": "small",
            "data": {"train": str(tmp / "table.parquet"), "split": {"validation": validation, "test": 0.0}},
            "target": "y",
            "task": "regression",
            "columns": {
                "a": {"type": "numeric", "scale": "none"},
                "b": {"type": "numeric", "scale": "none", "missing_indicator": True},
                "colour": {"type": "categorical", "missing_indicator": True},
                "size": {"type": "categorical"},
                "when": {"type": "datetime", "parts": ["hour", "month"]},
            },
            "workdir": str(tmp / "runs"),
            "store": str(tmp / "models"),
        }
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The small table prepared: its state, training features and feature groups."""
    config = prepared_config(tmp_path_factory.mktemp("synth"), 600)
    data = ensure_prepared(config)
    state = data.state()
    table = pl.read_parquet(data.split("train"))
    names = state.feature_names
    features = torch.from_numpy(table.select(names).to_numpy().astype(np.float32))
    return {"state": state, "names": names, "features": features, "groups": feature_groups(state)}


def columns_of(names: list[str], prefix: str) -> list[int]:
    return [i for i, n in enumerate(names) if n.startswith(prefix)]


def test_feature_groups_follow_the_input_columns(prepared: dict[str, Any]) -> None:
    names, groups = prepared["names"], prepared["groups"]
    assert groups.count == 5
    by_name = dict(
        zip(names, zip(groups.column.tolist(), groups.continuous.tolist(), strict=True), strict=True)
    )
    assert by_name["a"] == (0, True) and by_name["b"] == (1, True) and by_name["b__missing"] == (1, False)
    assert all(by_name[n] == (2, False) for n in names if n.startswith("colour"))
    assert by_name["when__hour"] == (4, True) and by_name["when__month"] == (4, True)
    flag = groups.flag.tolist()
    assert flag[names.index("b")] == names.index("b__missing") and flag[names.index("a")] == -1


@pytest.mark.parametrize("kind", ["munge", "mixup"])
def test_synthetic_rows_keep_one_hot_groups_and_imputed_values_valid(
    prepared: dict[str, Any], kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synth, "GENERATE_CHUNK", 100)  # made 100 rows at a time
    monkeypatch.setattr(synth, "NEIGHBOUR_CHUNK", 64)  # distances 64 × 64 at a time
    names, features = prepared["names"], prepared["features"]
    rows = Synthesis(kind, 3, seed=1, munge_p=0.6).rows(features, prepared["groups"])
    assert rows.shape == (3 * len(features), len(names)) and torch.isfinite(rows).all()
    for prefix in ("colour=", "size="):  # exactly one category of a one-hot group, or none (unknown)
        group = rows[:, columns_of(names, prefix)]
        assert set(torch.unique(group).tolist()) <= {0.0, 1.0}
        assert (group.sum(dim=1) <= 1).all()
    missing = rows[:, names.index("b__missing")]
    assert set(torch.unique(missing).tolist()) <= {0.0, 1.0}
    fill = features[features[:, names.index("b__missing")] == 1, names.index("b")].unique()
    assert len(fill) == 1  # every imputed training value is the fill value...
    assert (rows[missing == 1, names.index("b")] == fill).all()  # ...and so is every synthetic one
    assert not torch.equal(rows[: len(features)], features)  # new rows, not copies
    changed = (rows[: len(features)] != features).any(dim=1).float().mean()
    assert changed > 0.5


def test_munge_swaps_whole_columns_with_the_neighbour_and_draws_around_its_value() -> None:
    groups = FeatureGroups(
        column=torch.tensor([0, 1, 1, 1]),
        continuous=torch.tensor([True, False, False, False]),
        flag=torch.tensor([-1, -1, -1, -1]),
    )
    features = torch.tensor([[0.0, 1.0, 0.0, 0.0], [10.0, 0.0, 0.0, 1.0]])
    neighbours = torch.tensor([1, 0])
    generator = torch.Generator().manual_seed(0)
    others = features[neighbours]
    never = munge(features, others, groups, generator, p=1e-9, s=1.0)
    assert torch.equal(never, features)
    swapped = torch.cat([munge(features, others, groups, generator, p=1.0, s=4.0) for _ in range(400)])
    assert torch.equal(swapped[0::2, 1:], features[[1], 1:].expand(400, 3))  # the one-hot, whole
    values = swapped[0::2, 0]  # around the neighbour's 10, sd |0 − 10| / 4 = 2.5
    assert abs(float(values.mean()) - 10.0) < 0.5 and abs(float(values.std()) - 2.5) < 0.4


def test_the_synthetic_rows_stay_within_their_cap() -> None:
    assert Synthesis("munge", 4, seed=0).factor_for(10**6) == 4
    capped = Synthesis("munge", 4, seed=0, max_rows=1000)
    assert [capped.factor_for(rows) for rows in (100, 300, 600, 1001)] == [4, 3, 1, 0]


def test_auto_makes_munge_rows_only_for_small_training_splits(tmp_path: Path) -> None:
    auto = _synthesis(ShrinkConfig())  # the default: distill.synthetic auto
    assert auto is not None and auto.kind == "munge" and auto.max_training_rows == 25_000
    assert [auto.factor_for(rows) for rows in (5_000, 12_000, 25_000, 25_001)] == [4, 3, 1, 0]
    asked = ShrinkConfig.model_validate({"distill": {"synthetic": "mixup"}})
    assert _synthesis(asked).max_training_rows is None  # asked for by name: any size, within max_rows
    assert _synthesis(ShrinkConfig.model_validate({"distill": {"synthetic": "none"}})) is None
    assert _synthesis(ShrinkConfig.model_validate({"methods": ["prune"]})) is None

    config = prepared_config(tmp_path, 600, nulls=0.0)
    data = ensure_prepared(config)
    state = data.state()
    teacher = TabularModel(Oracle(state.feature_names), 1, "regression")
    small = Synthesis("munge", 4, seed=0, max_rows=40_000, max_training_rows=100)
    shrink_data = ShrinkData(data, state, teacher, 32, 256.0, small)
    assert shrink_data.synthetic_rows == 0
    assert shrink_data.no_synthetic_rows == "the training split has more rows than 100"


def test_synthetic_rows_are_the_same_for_the_same_seed(prepared: dict[str, Any]) -> None:
    features, groups = prepared["features"], prepared["groups"]
    for kind in ("munge", "mixup"):
        first = Synthesis(kind, 2, seed=7).rows(features, groups)
        assert torch.equal(first, Synthesis(kind, 2, seed=7).rows(features, groups))
        assert not torch.equal(first, Synthesis(kind, 2, seed=8).rows(features, groups))


def test_nearest_neighbours_in_chunks_equal_the_direct_search() -> None:
    features = torch.randn(300, 6, generator=torch.Generator().manual_seed(3))
    direct = torch.cdist(features, features)
    direct.fill_diagonal_(torch.inf)
    expected = direct.argmin(dim=1)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(nearest_neighbours(features, generator, pool=300, chunk=32), expected)
    assert torch.equal(nearest_neighbours(features, generator, pool=1000, chunk=7), expected)
    sampled = nearest_neighbours(features, generator, pool=50, chunk=16)  # among 50 sampled rows
    assert len(set(sampled.tolist())) <= 50 and (sampled != torch.arange(300)).all()


def test_unlabelled_rows_learn_from_the_teacher_alone() -> None:
    student, teacher = torch.randn(6, 3), torch.randn(6, 3)
    labelled = torch.tensor([0, 2, 1, 0, 1, 2])
    unlabelled = torch.full((6,), -1)
    loss = distillation_loss("multiclass", student, teacher, unlabelled, 2.0, 0.5)
    soft = distillation_loss("multiclass", student, teacher, labelled, 2.0, 1.0)
    hard = torch.nn.functional.cross_entropy(student, torch.softmax(teacher, dim=1))
    assert loss == pytest.approx(float(0.5 * soft + 0.5 * hard), rel=1e-5)
    nan = torch.full((6,), torch.nan)
    for task in ("binary", "regression"):
        value = distillation_loss(task, student[:, :1], teacher[:, :1], nan, 2.0, 0.3)
        assert torch.isfinite(value)
    same = distillation_loss("regression", teacher[:, :1], teacher[:, :1], nan, 2.0, 0.3)
    assert float(same) == 0.0  # a student equal to the teacher has nothing to learn on them


class Oracle(torch.nn.Module):
    """A teacher that knows the target's function of :func:`small_table`'s prepared features."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.a, self.b = names.index("a"), names.index("b")
        self.colours = [names.index(f"colour={c}") for c in COLOURS]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        effect = x[:, self.colours] @ torch.tensor(EFFECT)
        return (torch.sin(2 * x[:, self.a]) + x[:, self.b] ** 2 / 2 + effect)[:, None]


def test_the_soft_loss_is_the_divergence_from_the_teacher_without_labels() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(50, 3), torch.randn(50, 3)
    p, q = torch.softmax(teacher, 1), torch.softmax(student, 1)
    kl = float((p * (p.log() - q.log())).sum(1).mean())
    assert float(soft_loss("multiclass", student, teacher)) == pytest.approx(kl, rel=1e-5)
    pb, qb = torch.sigmoid(teacher[:, 0]), torch.sigmoid(student[:, 0])
    bernoulli = pb * (pb / qb).log() + (1 - pb) * ((1 - pb) / (1 - qb)).log()
    assert float(soft_loss("binary", student[:, :1], teacher[:, :1])) == pytest.approx(
        float(bernoulli.mean()), rel=1e-5
    )
    squared = float(((student[:, 0] - teacher[:, 0]) ** 2).mean() / 4.0)
    assert float(soft_loss("regression", student[:, :1], teacher[:, :1], target_std=2.0)) == pytest.approx(
        squared, rel=1e-6
    )
    labels = torch.zeros(50, dtype=torch.long)
    assert float(distillation_loss("multiclass", student, teacher, labels, 1.0, 1.0)) == pytest.approx(
        kl, rel=1e-5
    )


def regression_student(features: list[str], hidden: list[int]) -> dict[str, Any]:
    """The spec of a plain ``mlp`` student of ``hidden`` widths for a regression over ``features``."""
    parent = {"format_version": 1, "arch": "mlp", "hyperparameters": {}, "n_inputs": len(features)}
    return student_spec({**parent, "n_outputs": 1, "task": "regression", "output": "value"}, hidden)


def test_the_student_keeps_the_epoch_closest_to_its_teacher_not_the_best_on_the_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # shrink judges the drop on the validation labels: choosing the epoch on them would flatter the student
    config = prepared_config(tmp_path, 600, nulls=0.0, validation=0.5)
    data = ensure_prepared(config)
    state = data.state()
    teacher = TabularModel(Oracle(state.feature_names), 1, "regression")
    shrink_data = ShrinkData(data, state, teacher, 32, 256.0)
    seen: list[float] = []
    measure = ShrinkData.fidelity

    def recorded(self: ShrinkData, model: TabularModel) -> float:
        seen.append(measure(self, model))
        return seen[-1]

    monkeypatch.setattr(ShrinkData, "fidelity", recorded)
    spec = regression_student(state.feature_names, [8])
    torch.manual_seed(0)
    student = fit(build_model(spec), shrink_data, 12, 0.3, 1.0, 1.0, seed=0)
    assert len(seen) == 12  # once per epoch
    assert measure(shrink_data, student) == pytest.approx(min(seen), rel=1e-6)
    assert min(seen) < seen[-1], seen  # the closest epoch was not the last one here: a real choice


def test_a_student_imitates_its_teacher_better_with_munge_rows_than_on_the_training_rows_alone(
    tmp_path: Path,
) -> None:
    config = prepared_config(tmp_path, 600, nulls=0.0, validation=0.75)  # 150 rows to learn from
    data = ensure_prepared(config)
    state = data.state()
    teacher = TabularModel(Oracle(state.feature_names), 1, "regression")
    spec = regression_student(state.feature_names, [32])
    errors = {}
    for kind in ("none", "munge"):
        synthesis = Synthesis(kind, 4, seed=0) if kind != "none" else None
        shrink_data = ShrinkData(data, state, teacher, 32, 256.0, synthesis)
        assert shrink_data.synthetic_rows == (4 * 150 if synthesis else 0)
        torch.manual_seed(0)
        steps = 800
        epochs = max(steps // shrink_data.batches_per_epoch(), 1)
        student = fit(build_model(spec), shrink_data, epochs, 0.01, 1.0, 1.0, seed=0)
        validation = shrink_data.validation
        imitated = predict(student, validation.features)
        with torch.no_grad():
            taught = teacher(torch.from_numpy(validation.features))[:, 0].numpy()
        errors[kind] = float(np.sqrt(np.mean((imitated - taught) ** 2)))
    assert errors["munge"] < 0.9 * errors["none"], errors  # measured: 0.37 vs 0.55


def test_the_cli_distils_on_munge_rows_into_a_plain_student_that_loads_and_serves(tmp_path: Path) -> None:
    raw = prepared_config(tmp_path, 600).model_dump(mode="json")
    raw["model"] = {
        "arch": "mlp",
        "hidden": [32, 32],
        "embedding": "periodic",
        "embedding_dim": 4,
        "embedding_frequencies": 8,
    }
    raw["train"] = {**raw["train"], "epochs": 5, "batch_size": 32}
    raw["shrink"] = {"latency_runs": 20}
    config_file = tmp_path / "leanml.yaml"
    config_file.write_text(json.dumps(raw))  # JSON is YAML
    leanml.train(parse_config(raw))
    store = tmp_path / "models"
    settings = ["--set", "shrink.distill.student=[8]", "--set", "shrink.distill.epochs=3"]
    settings += ["--set", "shrink.distill.synthetic=munge"]
    args = ["shrink", f"{store}/small@v1", "--config", str(config_file), "--methods", "distill"]
    result = CliRunner().invoke(app, [*args, "--max-metric-drop", "1.0", *settings])
    assert result.exit_code == 0, result.output
    train_rows = 480  # 600 rows less the validation fifth
    assert f"{train_rows:,} training rows + {4 * train_rows:,} munge rows" in " ".join(result.output.split())

    strict = CliRunner().invoke(app, [*args, "--max-metric-drop", "0", *settings])
    assert strict.exit_code == 1  # no plain student keeps a budget of 0, so embedded ones are tried too
    text = " ".join(strict.output.split())
    assert re.search(r"mlp \[8\](?! \+)", text) and "mlp [8] + periodic embedding" in text
    assert "no model written" in text

    shrunk = load_bundle(store / "small" / "v2")  # checksums and the reference rows replayed
    assert shrunk.spec["hyperparameters"]["hidden"] == [8] and "embedding" not in shrunk.spec
    rows = small_table(3, seed=5).drop("y")
    assert shrunk.predict(rows)["prediction"].null_count() == 0
    instances = rows.with_columns(rows["when"].dt.to_string("%Y-%m-%dT%H:%M:%S")).to_dicts()
    with running_server(str(store)) as (url, _):
        reply = httpx.post(f"{url}/v1/models/small:predict", json={"instances": instances}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.json()["model_version"] == "v2" and len(reply.json()["predictions"]) == 3
