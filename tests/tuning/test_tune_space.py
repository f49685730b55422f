"""The tune: config section and the search space: validation that names the key, encoding, the grid."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import optuna
import pytest
import yaml

from leanml.config import Config, SearchSpec, TuneConfig, apply_overrides, parse_config
from leanml.errors import ConfigError
from leanml.tuning import SearchSpace, search_space
from leanml.tuning.space import override_text, trial_config


def test_spec_forms_round_trip_through_the_config_dump() -> None:
    tune = TuneConfig.model_validate(
        {
            "sampler": "tpe",
            "space": {
                "train.lr": {"log_uniform": [1e-4, 1e-1]},
                "model.dropout": {"uniform": [0.0, 0.5], "step": 0.1},
                "model.blocks": {"int": [1, 4]},
                "model.hidden": [[64], [128, 64]],
                "train.optimizer": ["sgd", "adam"],
            },
        }
    )
    assert [spec.kind for spec in tune.space.values()] == [
        "log_uniform",
        "uniform",
        "int",
        "choice",
        "choice",
    ]
    dumped = tune.model_dump(mode="json")
    assert dumped["space"]["model.hidden"] == [[64], [128, 64]]
    assert dumped["space"]["model.blocks"] == {"int": [1, 4]}
    assert TuneConfig.model_validate(yaml.safe_load(yaml.safe_dump(dumped))) == tune


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.lr": {"uniform": [1.0, 0.1]}}, "tune.space.train.lr: the range [1.0, 0.1] is empty"),
        ({"train.lr": {"log_uniform": [0.0, 0.1]}}, "tune.space.train.lr: log_uniform needs lo > 0"),
        ({"train.lr": []}, "tune.space.train.lr: the list of values is empty"),
        ({"train.lr": 0.1}, "tune.space.train.lr: expected a list of values, or one of {uniform"),
        ({"train.lr": {"normal": [0, 1]}}, "tune.space.train.lr.normal: unknown key; allowed keys: choice"),
        (
            {"model.blocks": {"int": [1, 4], "step": 1.5}},
            "tune.space.model.blocks: an int range needs a whole",
        ),
    ],
)
def test_bad_specs_name_the_key(tune_raw: Callable[..., dict[str, Any]], space: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(tune_raw(space))
    assert message in str(error.value)


def test_grid_needs_values(tune_raw: Callable[..., dict[str, Any]]) -> None:
    with pytest.raises(ConfigError, match=r"tune: sampler 'grid' needs a list of values .* space.train.lr"):
        parse_config(tune_raw({"train.lr": {"log_uniform": [1e-4, 1e-1]}}, tune={"sampler": "grid"}))
    grid = parse_config(tune_raw({"model.blocks": {"int": [1, 5], "step": 2}}, tune={"sampler": "grid"}))
    assert SearchSpace(grid.tune.space).grid() == {"model.blocks": [1, 3, 5]}


@pytest.mark.parametrize(
    ("key", "values", "message"),
    [
        (
            "train.lrate",
            [0.1],
            "tune.space.train.lrate: train.lrate=0.1 is not valid: train.lrate: unknown key",
        ),
        (
            "train.optimizer",
            ["adam", "adamx"],
            "tune.space.train.optimizer: train.optimizer=adamx is not valid",
        ),
        ("train.lr.value", [0.1], "tune.space.train.lr.value: train.lr.value=0.1 is not valid"),
        ("columns.nope.scale", ["minmax"], "tune.space.columns.nope.scale:"),
        ("name", ["other"], "tune.space.name: 'name' cannot be searched"),
    ],
)
def test_space_keys_must_be_config_keys(
    tune_config: Callable[..., Config], key: str, values: list, message: str
) -> None:
    config = tune_config({key: values})
    with pytest.raises(ConfigError) as error:
        SearchSpace(config.tune.space).check(config)
    assert message in str(error.value)


def test_range_bounds_are_checked_too(tune_config: Callable[..., Config]) -> None:
    config = tune_config({"model.dropout": {"uniform": [0.0, 1.5]}})
    with pytest.raises(ConfigError, match=r"tune.space.model.dropout: model.dropout=1.5 is not valid"):
        SearchSpace(config.tune.space).check(config)


def test_choices_of_any_value_are_encoded_for_optuna_and_decoded_back(
    tune_config: Callable[..., Config],
) -> None:
    config = tune_config(
        {"model.hidden": [[8], [16, 8]], "train.optimizer": ["sgd", "adam"], "train.lr": [1e-5]}
    )
    space = SearchSpace(config.tune.space)
    space.check(config)
    points = space.grid_points()
    assert len(points) == 4
    assert {p["model.hidden"] for p in points} == {"[8]", "[16, 8]"}  # Optuna holds text, not lists
    assert space.decode(points[0])["model.hidden"] in ([8], [16, 8])
    assert space.encode(space.decode(points[-1])) == points[-1]

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = space.suggest(study.ask())
    assert values["model.hidden"] in ([8], [16, 8]) and values["train.lr"] == 1e-5
    trial = trial_config(config, values)
    assert trial.model.hidden == values["model.hidden"] and trial.train.lr == 1e-5
    assert trial.digest(("data",)) == config.digest(("data",))


@pytest.mark.parametrize("value", [1e-5, 0.1, 3, "adam", [128, 64], {"patience": 2}, True, None])
def test_override_text_reads_back_as_the_same_value(value: Any) -> None:
    assert apply_overrides({}, [override_text("a.b", value)]) == {"a": {"b": value}}


def test_search_spec_is_exported_for_docs() -> None:
    assert SearchSpec.model_validate([1, 2]).kind == "choice"


def test_an_empty_space_searches_the_recipes_knobs(tune_config: Callable[..., Config]) -> None:
    config = tune_config({})
    space = search_space(config.tune)
    space.check(config)
    assert space.keys == [
        "train.lr",
        "train.weight_decay",
        "model.hidden",
        "model.dropout",
        "model.embedding",
        "model.embedding_scale",
    ]
    assert space.specs["train.lr"].kind == "log_uniform"
    grid = search_space(tune_config({}, tune={"sampler": "grid"}).tune)
    assert len(grid.grid_points()) == 4 * 4 * 4 * 4 * 2 * 3


def test_spread_points_cover_every_slice_of_each_range_and_every_choice() -> None:
    space = SearchSpace(
        {
            "train.lr": SearchSpec.model_validate({"log_uniform": [1e-4, 1e-1]}),
            "model.dropout": SearchSpec.model_validate({"uniform": [0.0, 0.4], "step": 0.1}),
            "model.blocks": SearchSpec.model_validate({"int": [1, 6]}),
            "train.optimizer": SearchSpec.model_validate(["sgd", "momentum", "adam", "adamw"]),
            "model.hidden": SearchSpec.model_validate([[32], [64, 32], [128, 64]]),
        }
    )
    points = space.spread_points(6, seed=3)
    assert len(points) == 6 and space.spread_points(6, seed=3) == points  # seeded
    # One learning rate in each sixth of [1e-4, 1e-1] in log space (half a decade each).
    assert sorted(int(2 * (math.log10(p["train.lr"]) + 4)) for p in points) == [0, 1, 2, 3, 4, 5]
    assert sorted(p["model.blocks"] for p in points) == [1, 2, 3, 4, 5, 6]
    assert all(p["model.dropout"] * 10 == pytest.approx(round(p["model.dropout"] * 10)) for p in points)
    assert all(0 <= p["model.dropout"] <= 0.4 for p in points)
    # Every choice before any repeats; the stored form (text for lists), as a queued trial needs.
    assert sorted(Counter(p["train.optimizer"] for p in points).values()) == [1, 1, 2, 2]
    assert sorted(Counter(p["model.hidden"] for p in points).values()) == [2, 2, 2]
    assert {p["model.hidden"] for p in points} == {"[32]", "[64, 32]", "[128, 64]"}
