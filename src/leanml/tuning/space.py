"""The search space: dotted config keys, how a trial draws a value for each, and the grid.

A space maps config keys (``train.lr``, ``model.hidden``, ``columns.age.scale``) to a
:class:`~leanml.config.SearchSpec`. A trial's values become ``KEY=VALUE`` overrides of the base config —
the same overrides ``--set`` applies — so a trial's config is validated exactly like a config file.

Optuna's categorical parameters hold only ``None``, booleans, numbers and text, so a choice among other
values (``[[64], [128, 64]]``) is stored in the study as each value's JSON text and decoded back here.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
from collections.abc import Mapping
from typing import Any

import optuna
import yaml

from leanml.config import Config, SearchSpec, TuneConfig, apply_overrides, parse_config
from leanml.errors import ConfigError

NOT_SEARCHABLE = ("name", "workdir", "store", "tune")
"""Top-level keys a trial may not change: where outputs go, and the search itself."""
DEFAULT_SPACE: dict[str, Any] = {
    "train.lr": {"log_uniform": [1.0e-4, 1.0e-2]},
    "train.weight_decay": [0.0, 1.0e-5, 1.0e-4, 1.0e-3],
    "model.hidden": [[128, 128], [256, 256], [256, 256, 256], [512, 512, 512]],
    "model.dropout": [0.0, 0.1, 0.2, 0.3],
    "model.embedding": ["none", "periodic"],
    "model.embedding_scale": [0.01, 0.1, 1.0],
}
"""What an empty ``tune.space`` searches: the knobs that moved the benchmark (bench/quality.py) —
learning rate, weight decay, the network's size and dropout, and the numeric embeddings."""
DEFAULT_GRID_LR = [1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1]
"""The default learning rates of a grid search (a grid takes values, not ranges)."""


def search_space(tune: TuneConfig) -> SearchSpace:
    """The space ``tune`` searches: ``tune.space``, or :data:`DEFAULT_SPACE` when it is empty."""
    if tune.space:
        return SearchSpace(tune.space)
    default = {**DEFAULT_SPACE, "train.lr": DEFAULT_GRID_LR} if tune.sampler == "grid" else DEFAULT_SPACE
    return SearchSpace({key: SearchSpec.model_validate(spec) for key, spec in default.items()})


class SearchSpace:
    """The dimensions of a search; knows how to draw, encode, decode and enumerate their values."""

    def __init__(self, specs: Mapping[str, SearchSpec]) -> None:
        self.specs = dict(specs)
        # For each choice: the value Optuna stores → the config value it stands for.
        self._decoded: dict[str, dict[Any, Any]] = {}
        for key, spec in self.specs.items():
            if spec.choice is None:
                continue
            table: dict[Any, Any] = {}
            for value in spec.choice:
                stored = _stored(value)
                if stored in table:
                    raise ConfigError(
                        f"invalid config:\n  tune.space.{key}: the value {value!r} is listed twice"
                    )
                table[stored] = value
            self._decoded[key] = table

    @property
    def keys(self) -> list[str]:
        """The searched config keys, in the order the config lists them."""
        return list(self.specs)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Draw one value per key from ``trial``'s sampler (or take the values a queued trial fixes)."""
        params: dict[str, Any] = {}
        for key, spec in self.specs.items():
            if spec.choice is not None:
                params[key] = trial.suggest_categorical(key, list(self._decoded[key]))
            elif spec.int is not None:
                low, high = spec.int
                params[key] = trial.suggest_int(key, low, high, step=int(spec.step or 1))
            else:
                low, high = spec.bounds
                params[key] = trial.suggest_float(
                    key, low, high, step=spec.step, log=spec.log_uniform is not None
                )
        return self.decode(params)

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Config values of stored trial parameters (choices back from their JSON text)."""
        return {
            key: self._decoded[key][value] if key in self._decoded else value
            for key, value in params.items()
            if key in self.specs
        }

    def encode(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Stored parameters of config values (the inverse of :meth:`decode`)."""
        return {key: _stored(value) if key in self._decoded else value for key, value in values.items()}

    def grid(self) -> dict[str, list[Any]]:
        """Every stored value of every key, for a grid search (lists and int ranges only)."""
        grid: dict[str, list[Any]] = {}
        for key, spec in self.specs.items():
            if spec.choice is not None:
                grid[key] = list(self._decoded[key])
            elif spec.int is not None:
                low, high = spec.int
                grid[key] = list(range(low, high + 1, int(spec.step or 1)))
            else:
                raise ConfigError(
                    f"invalid config:\n  tune.space.{key}: a grid needs a list of values or an int range"
                )
        return grid

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid, as stored parameters."""
        grid = self.grid()
        return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]

    def spread_points(self, count: int, seed: int) -> list[dict[str, Any]]:
        """``count`` points spread over the space (a Latin hypercube), as stored parameters.

        Each range is cut into ``count`` equal slices (in log space for ``log_uniform``) with one value
        drawn in each; each choice's values are dealt out in turn, every value once before any repeats;
        the dimensions are then paired at random. A search that starts from these points has seen every
        part of every range and every choice sooner than one that starts from random draws.
        """
        rng = random.Random(seed)
        columns: dict[str, list[Any]] = {}
        for key, spec in self.specs.items():
            if spec.choice is not None:
                column: list[Any] = []
                while len(column) < count:
                    values = list(self._decoded[key])
                    rng.shuffle(values)
                    column += values
                column = column[:count]
            else:
                column = [_value_at(spec, (i + rng.random()) / count) for i in range(count)]
            rng.shuffle(column)
            columns[key] = column
        return [{key: column[i] for key, column in columns.items()} for i in range(count)]

    def check(self, base: Config) -> None:
        """Raise :class:`ConfigError` naming ``tune.space.KEY`` when a key is not a config key or one of its
        values is not valid.

        Each value is tried in ``base``, and when that fails, together with each value of each other key:
        a value that is valid only in combination (``train.nesterov: true`` with ``train.optimizer:
        momentum``) passes, and trials with an invalid combination are recorded as failed.
        """
        for key in self.specs:
            if key.split(".")[0] in NOT_SEARCHABLE:
                raise ConfigError(
                    f"invalid config:\n  tune.space.{key}: '{key.split('.')[0]}' cannot be searched "
                    f"(searchable: data, target, task, columns, model, train, serve)"
                )
        for key in self.specs:
            for value in self._candidates(key):
                try:
                    trial_config(base, {key: value})
                except ConfigError as exc:
                    if not self._valid_with_another_key(base, key, value):
                        problem = str(exc).removeprefix("invalid config:").strip().replace("\n  ", "; ")
                        message = f"tune.space.{key}: {override_text(key, value)} is not valid: {problem}"
                        raise ConfigError(f"invalid config:\n  {message}") from None

    def _candidates(self, key: str) -> list[Any]:
        spec = self.specs[key]
        return list(spec.choice) if spec.choice is not None else list(spec.bounds)

    def _valid_with_another_key(self, base: Config, key: str, value: Any) -> bool:
        for other in self.specs:
            for other_value in self._candidates(other) if other != key else []:
                with contextlib.suppress(ConfigError):
                    trial_config(base, {key: value, other: other_value})
                    return True
        return False


def trial_config(base: Config, values: Mapping[str, Any]) -> Config:
    """``base`` with each ``key: value`` set, validated like a config file."""
    raw = apply_overrides(base.model_dump(mode="json"), [override_text(k, v) for k, v in values.items()])
    return parse_config(raw)


def override_text(key: str, value: Any) -> str:
    """``KEY=VALUE`` with the value written as one-line YAML (what ``--set`` accepts)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20).strip()
    return f"{key}={text.removesuffix('...').strip()}"


def _value_at(spec: SearchSpec, fraction: float) -> Any:
    """The value of a range ``fraction`` (in [0, 1)) of the way from lo to hi (log-scaled for
    ``log_uniform``; on the range's step when it has one)."""
    low, high = spec.bounds
    if spec.log_uniform is not None:
        return min(high, math.exp(math.log(low) + fraction * (math.log(high) - math.log(low))))
    if spec.int is not None or spec.step is not None:
        step = spec.step or 1
        slots = math.floor((high - low) / step + 1e-9) + 1
        value = low + step * min(slots - 1, math.floor(fraction * slots))
        return int(value) if spec.int is not None else min(high, value)
    return low + fraction * (high - low)


def _stored(value: Any) -> Any:
    """The value Optuna stores for a choice: the value itself when Optuna can hold it, else its JSON."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return json.dumps(value, sort_keys=True)
