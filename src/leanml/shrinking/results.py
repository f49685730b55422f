"""What a shrink run produces: candidates, report rows, the metric budget and the result.

Plain values, shared by the steps (:mod:`leanml.shrinking.steps`), the stage
(:mod:`leanml.shrinking.stage`) and the reports (:mod:`leanml.shrinking.report`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leanml.bundle import BundleRef
from leanml.metrics import HIGHER_IS_BETTER
from leanml.shrinking.measure import Measurement

if TYPE_CHECKING:
    from leanml.config import Config
    from leanml.models import TabularModel

ERROR_METRICS = ("rmse", "mae", "log_loss")
"""Metrics whose budget is relative to the parent's value (the others are scores in [0, 1])."""


@dataclass
class Candidate:
    """A model a step produced, with its served graph and figures."""

    model: TabularModel
    spec: dict[str, Any]
    onnx: bytes
    measurement: Measurement
    description: str
    predictions: np.ndarray
    """On the validation rows (for the paired bootstrap against the parent)."""
    drop_se: float = 0.0
    """Standard error of the drop against the parent (0 for the parent itself)."""


@dataclass(frozen=True)
class StepRecord:
    """One row of the report: what a step tried, its figures, and the decision taken."""

    step: str
    model: str
    measurement: Measurement
    drop: float
    drop_se: float
    decision: str
    """``parent``, ``kept``, ``rolled back`` or ``not kept``."""
    why: str

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "step": self.step,
            "model": self.model,
            **self.measurement.as_dict(),
            "drop": self.drop,
            "drop_se": self.drop_se,
            "decision": self.decision,
            "why": self.why,
        }


@dataclass(frozen=True)
class Budget:
    """How far the metric may fall below the parent's (see :class:`leanml.config.ShrinkConfig`)."""

    metric: str
    reference: float
    max_drop: float
    margin_se: float = 0.0
    """Standard errors of the drop added to it before it is compared with ``max_drop``."""

    def drop(self, value: float) -> float:
        """How much worse ``value`` is than the parent's: points for scores, a share for errors."""
        return self.drop_from(self.reference, value)

    def drop_from(self, reference: float, value: float) -> float:
        """How much worse ``value`` is than ``reference``, in the budget's terms."""
        if self.metric in ERROR_METRICS:
            return (value - reference) / abs(reference) if reference else value - reference
        return reference - value if HIGHER_IS_BETTER[self.metric] else value - reference

    def allows(self, value: float, drop_se: float = 0.0) -> bool:
        """Whether ``value`` is inside the budget, its drop widened by ``margin_se`` times ``drop_se``."""
        return self.drop(value) + self.margin_se * drop_se <= self.max_drop + 1e-12

    def verifies(self, value: float, drop_se: float) -> bool:
        """Whether the validation rows can tell that ``value`` is inside the budget: the drop's standard
        error is at most the budget, or the drop is inside it by more than twice ``margin_se`` errors (a
        student far better than its teacher is verified whatever the noise). Always, with ``margin_se`` 0.

        Beyond that the rows cannot tell a student inside the budget from one outside: of several students
        tried, one looks better than the teacher by chance and is kept (hotels: kept on validation, 1.7 %
        over a 1 % budget on test; loans, 7 classes: a standard error of 1.2 points against a half-point
        budget). Twice the margin covers the best of the several students (the largest of eight draws of
        noise lies about two standard errors out).
        """
        if self.margin_se <= 0 or drop_se <= self.max_drop:
            return True
        return self.drop(value) + 2 * self.margin_se * drop_se <= self.max_drop + 1e-12

    def limit(self) -> float:
        """The worst metric value inside the budget."""
        if self.metric in ERROR_METRICS:
            return self.reference + self.max_drop * abs(self.reference) if self.reference else self.max_drop
        return (
            self.reference - self.max_drop
            if HIGHER_IS_BETTER[self.metric]
            else self.reference + self.max_drop
        )

    def describe(self) -> str:
        """The budget in words."""
        unit = (
            f"{self.max_drop:.1%} of the parent's" if self.metric in ERROR_METRICS else f"{self.max_drop:g}"
        )
        text = f"{self.metric} at most {unit} worse than the parent's {self.reference:.4f}"
        if self.margin_se:
            text += f" (the drop plus {self.margin_se:g} standard error{'s' if self.margin_se != 1 else ''})"
        return text


@dataclass
class ShrinkResult:
    """What :func:`run_shrink` produced. ``bundle`` is ``None`` when the budget could not be met."""

    parent: BundleRef
    metric: str
    budget: Budget
    steps: list[StepRecord]
    final: StepRecord
    test: dict[str, dict[str, float]]
    """``parent`` and ``final`` metrics on the test split."""
    folder: Path
    bundle: BundleRef | None = None
    reason: str | None = None
    files: list[Path] = field(default_factory=list)
    batch1_p50_us: dict[str, float] = field(default_factory=dict)
    """p50 latency at batch 1 of the parent and the final graph, timed side by side (when they differ)."""


def shrink_summary(result: ShrinkResult, config: Config) -> dict[str, Any]:
    """The JSON report: parent, budget, targets, every step, the final model and the test check."""
    sc = config.shrink
    return {
        "parent": {
            "name": result.parent.name,
            "version": result.parent.version,
            "path": str(result.parent.path),
        },
        "metric": result.metric,
        "budget": {
            "limit": result.budget.limit(),
            "margin_se": sc.margin_se,
            "max_metric_drop": sc.max_metric_drop,
            "reference": result.budget.reference,
            "text": result.budget.describe(),
        },
        "targets": {"latency_us": sc.target_latency_us, "size_kb": sc.target_size_kb},
        "methods": list(sc.methods),
        "steps": [r.as_dict() for r in result.steps],
        "final": result.final.as_dict(),
        "test": result.test,
        "test_drop": _test_drop(result),
        "batch1_p50_us_side_by_side": result.batch1_p50_us,
        "written": result.reason is None,
        "reason": result.reason,
    }


def _test_drop(result: ShrinkResult) -> float | None:
    """The final model's drop against the parent on the test split, in the budget's terms."""
    parent, final = (result.test[k].get(result.metric) for k in ("parent", "final"))
    if parent is None or final is None:
        return None
    return Budget(result.metric, parent, result.budget.max_drop).drop(final)
