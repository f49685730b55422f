"""The tune stage: hyperparameter search over any dotted config key (Optuna underneath)."""

from __future__ import annotations

from leanml.tuning.space import SearchSpace, search_space
from leanml.tuning.stage import TuneResult, run_tune, tune_options
from leanml.tuning.study import TuneError

__all__ = ["SearchSpace", "TuneError", "TuneResult", "run_tune", "search_space", "tune_options"]
