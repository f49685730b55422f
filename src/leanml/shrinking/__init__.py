"""The shrink stage: distillation, pruning and int8 under a quality budget."""

from __future__ import annotations

from leanml.shrinking.results import Budget, ShrinkResult, StepRecord
from leanml.shrinking.stage import (
    ShrinkError,
    bundled_config,
    run_shrink,
    shrink_options,
    shrink_reference,
)

__all__ = [
    "Budget",
    "ShrinkError",
    "ShrinkResult",
    "StepRecord",
    "bundled_config",
    "run_shrink",
    "shrink_options",
    "shrink_reference",
]
