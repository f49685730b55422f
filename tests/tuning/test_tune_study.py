"""Studies end to end on breast_cancer: the grid, failures, pruning, preprocessing variants, best.yaml."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from leanml.config import Config, load_config
from leanml.errors import ConfigError
from leanml.training import train_model
from leanml.tuning import SearchSpace, TuneError, run_tune
from leanml.tuning.report import TrialRow
from leanml.tuning.space import trial_config


def _point(row: TrialRow) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in row.values.items()))


def _grid(config: Config) -> Counter:
    space = SearchSpace(config.tune.space)
    return Counter(
        tuple(sorted((k, repr(v)) for k, v in space.decode(p).items())) for p in space.grid_points()
    )


def test_grid_visits_the_grid_once_and_best_yaml_reproduces_the_best_trial(
    tune_config: Callable[..., Config],
) -> None:
    config = tune_config(
        {"train.lr": [0.003, 0.03], "train.optimizer": ["sgd", "adam"], "model.hidden": [[4], [8, 4]]},
        tune={"sampler": "grid", "trials": 100},
    )
    result = run_tune(config, bundle=False)
    assert len(result.trials) == 8  # the grid's size, not tune.trials
    assert Counter(_point(r) for r in result.trials) == _grid(config)
    assert all(r.state == "complete" for r in result.trials)
    assert result.best.value == max(r.value for r in result.trials)

    best = load_config(result.best_config)  # plain YAML that `leanml train` reads
    assert best.digest() == trial_config(config, result.best.values).digest()
    assert best.train.lr == result.best.values["train.lr"]
    # Trained again from best.yaml (same seed, same prepared data): the best trial's score.
    prepared = result.folder / "prepared" / result.variants[0]
    again = train_model(best, prepared, result.folder / "again", plots=False)
    assert again.validation == pytest.approx(result.best.validation, abs=1e-12)
    assert again.validation[result.metric] == result.best.value
    folder = result.folder
    for name in ("trials.csv", "report.html", "best.yaml", "study.log", "plots/history.png"):
        assert (folder / name).exists(), name
    assert (folder / "trials.csv").read_text().count("\n") == 9
    assert "data:image/png;base64," in (folder / "report.html").read_text()


def test_grid_with_two_jobs_visits_each_point_once(tune_config: Callable[..., Config]) -> None:
    config = tune_config(
        {"train.lr": [0.003, 0.01, 0.03], "model.hidden": [[4], [8]]}, tune={"sampler": "grid", "jobs": 2}
    )
    result = run_tune(config, bundle=False)
    assert len(result.trials) == 6
    assert Counter(_point(r) for r in result.trials) == _grid(config)
    assert sorted(r.number for r in result.trials) == list(range(6))
    assert all(r.state == "complete" for r in result.trials)


def test_a_diverging_trial_is_recorded_failed_and_the_study_goes_on(
    tune_config: Callable[..., Config],
) -> None:
    config = tune_config({"train.lr": [1.0e6, 0.05]}, tune={"sampler": "grid"}, train={"optimizer": "sgd"})
    result = run_tune(config, bundle=False)
    by_lr = {r.values["train.lr"]: r for r in result.trials}
    assert by_lr[1.0e6].state == "failed"
    assert "training loss became nan" in (by_lr[1.0e6].reason or "")
    assert by_lr[0.05].state == "complete" and result.best.number == by_lr[0.05].number
    assert "training loss became nan" in (result.folder / "trials.csv").read_text()


def test_an_invalid_combination_is_a_failed_trial(tune_config: Callable[..., Config]) -> None:
    # nesterov is valid with momentum only: the space passes its check, the one bad pairing fails.
    config = tune_config(
        {"train.optimizer": ["momentum", "adam"], "train.nesterov": [True, False]}, tune={"sampler": "grid"}
    )
    result = run_tune(config, bundle=False)
    failed = [r for r in result.trials if r.state == "failed"]
    assert [r.values for r in failed] == [{"train.optimizer": "adam", "train.nesterov": True}]
    assert "invalid combination" in (failed[0].reason or "") and "nesterov" in (failed[0].reason or "")
    assert sum(r.state == "complete" for r in result.trials) == 3


def test_the_median_pruner_stops_a_clearly_bad_trial(tune_config: Callable[..., Config]) -> None:
    config = tune_config(
        {"train.lr": [0.01, 0.011, 0.012, 1.0e-7]},
        # seed 5 orders this grid with the bad learning rate last, after the pruner's startup trials.
        tune={
            "sampler": "grid",
            "seed": 5,
            "pruner": "median",
            "prune_startup_trials": 2,
            "prune_warmup_epochs": 0,
        },
        train={"epochs": 6},
    )
    result = run_tune(config, bundle=False)
    bad = next(r for r in result.trials if r.values["train.lr"] == 1.0e-7)
    assert bad.number >= 2, "the bad trial must run after the pruner's startup trials"
    assert bad.state == "pruned"
    assert bad.epochs is not None and bad.epochs < 6
    assert (bad.reason or "").startswith("pruned after epoch")
    assert all(r.state == "complete" for r in result.trials if r is not bad)


def test_preprocessing_is_refitted_only_for_trials_that_change_it(tune_config: Callable[..., Config]) -> None:
    config = tune_config(
        {"columns.mean_radius.scale": ["standard", "minmax"], "train.lr": [0.01, 0.02]},
        tune={"sampler": "grid"},
    )
    result = run_tune(config, bundle=False)
    assert all(r.state == "complete" for r in result.trials)
    assert len(result.variants) == 2  # four trials, two preprocessing variants, each prepared once
    model_only = tune_config({"train.lr": [0.01, 0.02], "model.hidden": [[4], [8]]}, tune={"sampler": "grid"})
    model_only = model_only.model_copy(update={"workdir": str(Path(config.workdir).parent / "other")})
    assert len(run_tune(model_only, bundle=False).variants) == 1


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_tpe_and_random_run_the_asked_trials(tune_config: Callable[..., Config], sampler: str) -> None:
    config = tune_config(
        {
            "train.lr": {"log_uniform": [1e-3, 1e-1]},
            "model.hidden": [[4], [8]],
            "model.dropout": {"uniform": [0, 0.3]},
        },
        tune={"sampler": sampler, "trials": 4, "seed": 1},
    )
    result = run_tune(config, bundle=False)
    assert [r.number for r in result.trials] == [0, 1, 2, 3]
    assert all(r.state == "complete" for r in result.trials)
    assert all(
        1e-3 <= r.values["train.lr"] <= 1e-1 and 0 <= r.values["model.dropout"] <= 0.3 for r in result.trials
    )
    assert len({r.values["train.lr"] for r in result.trials}) == 4


def test_errors_name_the_problem(tune_config: Callable[..., Config]) -> None:
    with pytest.raises(ConfigError, match=r"tune\.space\.train\.lrate"):
        run_tune(tune_config({"train.lrate": [0.1]}), bundle=False)
    with pytest.raises(ConfigError, match=r"tune\.metric: 'rmse' is not a metric of a binary task"):
        run_tune(tune_config({"train.lr": [0.1]}, tune={"metric": "rmse"}), bundle=False)
    hopeless = tune_config({"train.lr": [1e6, 1e7]}, tune={"sampler": "grid"}, train={"optimizer": "sgd"})
    with pytest.raises(TuneError, match=r"no trial completed \(2 failed; e.g. the training loss became nan"):
        run_tune(hopeless, bundle=False)
    with pytest.raises(TuneError, match=r"a study already exists .* pass --resume"):
        run_tune(hopeless, bundle=False)


def test_tpe_starts_from_points_spread_over_the_space(tune_config: Callable[..., Config]) -> None:
    space = {"train.lr": {"log_uniform": [1e-3, 1e-1]}, "model.hidden": [[4], [8], [16]]}
    config = tune_config(space, tune={"sampler": "tpe", "trials": 5, "seed": 2})
    result = run_tune(config, bundle=False)
    assert [r.number for r in result.trials] == [0, 1, 2, 3, 4]
    # Three startup trials (a quarter of the trials, at least 3): one per third of the learning rates'
    # range and one per hidden size, then two trials TPE chose.
    search = SearchSpace(config.tune.space)
    startup = [search.decode(p) for p in search.spread_points(3, seed=2)]
    assert [r.values for r in result.trials[:3]] == startup
    assert sorted(str(r.values["model.hidden"]) for r in result.trials[:3]) == ["[16]", "[4]", "[8]"]
    assert sorted(int(math.log10(r.values["train.lr"]) * 1.5 + 4.5) for r in result.trials[:3]) == [0, 1, 2]
    assert all(r.state == "complete" for r in result.trials)
    # A budget below the startup trials queues no more than it runs.
    short = tune_config(space, tune={"sampler": "tpe", "trials": 2})
    short = short.model_copy(update={"workdir": str(Path(config.workdir).parent / "short")})
    assert len(run_tune(short, bundle=False).trials) == 2
