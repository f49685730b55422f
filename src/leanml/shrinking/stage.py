"""The shrink stage (SPEC §3.4): a smaller, faster model under a quality budget, with the evidence.

:func:`run_shrink` reads top to bottom: load and verify the parent bundle, make sure the prepared data
is the one its preprocessing produced, measure the parent, then run the steps of ``shrink.methods`` in
the order distill → prune → quantize. Each step makes a candidate from the current model, measures it on
the validation split (:mod:`leanml.shrinking.measure`) and keeps it only when the metric stays within the
budget; otherwise the step is rolled back and the current model stays. The final model is scored on the
test split, checked against the latency and size targets, and written to the store as a new version whose
lineage names its parent. When no step could be kept or a target is missed, nothing is written: the
parent stays as it was, and the result says why.

Outputs in ``WORKDIR/NAME/shrink/``: ``report.html`` (table and plot), ``steps.csv``, ``shrink.json``
(also inside the new bundle) and ``plots/shrink.png``.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from rich.console import Console

from leanml.bundle import BundleInputs, BundleRef, ModelStore, load_bundle, resolve_reference
from leanml.bundle.artifact import CONFIG, MODEL_ONNX, PREPROCESS, REFERENCE, Bundle, reference_inputs
from leanml.bundle.runtime import OnnxRuntime
from leanml.bundle.store import VERSION_RE
from leanml.config import Config, apply_overrides, parse_config, with_section
from leanml.errors import ConfigError, LeanMLError, StateError
from leanml.models import TabularModel, build_model, export_onnx
from leanml.pipeline import ensure_prepared
from leanml.progress import Steps
from leanml.shrinking.distill import STUDENT_LADDER, spec_parameters, student_spec
from leanml.shrinking.finetune import ShrinkData, fit
from leanml.shrinking.measure import Measurement, bootstrap_drops, measure, score_graph, side_by_side
from leanml.shrinking.prune import (
    hidden_widths,
    make_permanent,
    prune_unstructured,
    remove_units,
    sparsity,
    structured_blocker,
    unit_groups,
    units_to_keep,
)
from leanml.shrinking.quantize import is_int8, quantize_int8
from leanml.shrinking.report import write_reports
from leanml.training import HIGHER_IS_BETTER, MAIN_METRIC, task_metrics

SHRINK_JSON = "shrink.json"
ERROR_METRICS = ("rmse", "mae", "log_loss")
"""Metrics whose budget is relative to the parent's value (the others are scores in [0, 1])."""
STUDENT_STEPS = (4000, 8, 500)
"""Default student training: optimizer steps, and the fewest and most epochs."""
FINETUNE_STEPS = (1000, 2, 100)
"""Default fine-tuning after a pruning step: optimizer steps, and the fewest and most epochs."""
INT8_MAX_SLOWDOWN = 1.10
"""An int8 graph that is only smaller is kept when batch-1 latency stays within this factor."""


class ShrinkError(LeanMLError):
    """Shrinking cannot start (e.g. the prepared data does not match the parent's preprocessing)."""


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


def run_shrink(
    reference: str | Path, config: Config | None = None, console: Console | None = None
) -> ShrinkResult:
    """Shrink the model at ``reference`` (a bundle folder, ``STORE/NAME`` or ``STORE/NAME@VERSION``).

    ``config`` supplies the ``shrink`` section and where the data is; default: the config bundled with the
    parent. Returns the result; its ``bundle`` is the new version, or ``None`` with ``reason`` saying why
    nothing was written.
    """
    steps = Steps(console)
    ref = resolve_reference(reference)
    with steps.step(f"loading {ref.name} {ref.version}"):
        parent = load_bundle(ref.path)
    cfg = config if config is not None else bundled_config(parent.path)
    sc = cfg.shrink
    prepared = ensure_prepared(cfg, console)
    _check_same_preprocessing(parent, prepared)
    task = parent.task
    metric = sc.metric or MAIN_METRIC[task]
    if metric not in task_metrics(task):
        raise ConfigError(
            f"invalid config:\n  shrink.metric: {metric!r} is not a metric of a {task} task; "
            f"use one of {', '.join(task_metrics(task))}"
        )
    with steps.step("loading the prepared splits and the teacher's outputs"):
        data = ShrinkData(
            prepared, parent.state, parent.model, sc.distill.batch_size, cfg.train.memory_budget_mb
        )
    if len(data.validation.target) == 0:
        raise ConfigError(
            "invalid config:\n  data.split.validation: shrinking measures every step on the validation "
            "split, which is empty"
        )
    run = _Run(cfg, data, metric, console, steps)

    with steps.step("measuring the parent"):
        teacher_onnx = (parent.path / MODEL_ONNX).read_bytes()
        current = run.candidate(parent.model, parent.spec, describe(parent.spec), teacher_onnx)
    run.budget = Budget(metric, current.measurement.metrics[metric], sc.max_metric_drop, sc.margin_se)
    run.parent_predictions = current.predictions
    run.record("parent", current, "parent", f"{ref.name} {ref.version}")
    parent_candidate = current

    for method, step in (("distill", run.distill), ("prune", run.prune), ("quantize", run.quantize)):
        if method in sc.methods:
            current = step(current)

    test = {
        "parent": _test_metrics(parent_candidate, data),
        "final": _test_metrics(current, data),
    }
    reason = _unmet(current, parent_candidate, run)
    final = next(r for r in reversed(run.records) if r.decision in ("kept", "parent"))
    folder = cfg.stage_dir("shrink")
    result = ShrinkResult(ref, metric, run.budget, run.records, final, test, folder, reason=reason)
    if current is not parent_candidate:  # the headline speed-up: both graphs timed side by side
        parent_us, final_us = side_by_side(
            [parent_candidate.onnx, current.onnx], data.validation.features, sc.latency_runs
        )
        result.batch1_p50_us = {"parent": parent_us, "final": final_us}
    summary = shrink_summary(result, cfg)
    result.files = write_reports(folder, summary, run.records, metric, console)
    if reason is not None:
        return result

    with steps.step("writing the shrunk model to the store"):
        store = _store_of(ref, cfg)
        result.bundle = store.add(
            BundleInputs(
                name=parent.name,
                state=parent.state,
                model=current.model,
                spec=current.spec,
                metrics={
                    "validation": current.measurement.metrics,
                    "test": test["final"],
                    "monitor": metric,
                    "parent": {
                        "version": ref.version,
                        "validation": parent_candidate.measurement.metrics,
                        "test": test["parent"],
                    },
                },
                reference_rows=reference_inputs(pl.read_parquet(parent.path / REFERENCE)),
                lineage={
                    "stage": "shrink",
                    "parent": ref.version,
                    "data_fingerprint": parent.manifest.get("lineage", {}).get("data_fingerprint"),
                    "config_hash": cfg.digest(),
                    "steps": [f"{r.step}: {r.decision}" for r in run.records if r.decision != "parent"],
                },
                config=cfg.model_dump(mode="json"),
                onnx_model=current.onnx if is_int8(current.onnx) else None,
                drift=parent.drift_reference,
                extra_files={SHRINK_JSON: json.dumps(summary, indent=2).encode()},
            )
        )
    return result


class _Run:
    """The state one shrink run threads through its steps: data, budget, and the records so far."""

    def __init__(
        self, config: Config, data: ShrinkData, metric: str, console: Console | None, steps: Steps
    ) -> None:
        self.config = config
        self.shrink = config.shrink
        self.data = data
        self.metric = metric
        self.console = console
        self.steps = steps
        self.budget = Budget(metric, 0.0, self.shrink.max_metric_drop)
        self.records: list[StepRecord] = []
        self.parent_predictions: np.ndarray | None = None
        self.alpha = self.shrink.distill.alpha if "distill" in self.shrink.methods else 0.0
        """Fine-tuning learns from the teacher too when distillation is on."""

    # ------------------------------------------------------------------ helpers
    def candidate(
        self, model: TabularModel, spec: dict[str, Any], description: str, onnx: bytes | None = None
    ) -> Candidate:
        """Export (unless ``onnx`` is given) and measure a model."""
        if onnx is None:
            onnx = export_graph(model, spec)
        parameters = sum(t.numel() for t in model.state_dict().values())
        validation = self.data.validation
        figures, predictions = measure(
            onnx, parameters, spec, validation.features, validation.target, self.shrink.latency_runs
        )
        made = Candidate(model, spec, onnx, figures, description, predictions)
        if self.parent_predictions is not None and self.shrink.margin_se > 0:
            drops = bootstrap_drops(
                self.data.task,
                self.metric,
                validation.target,
                self.parent_predictions,
                predictions,
                self.budget.drop_from,
                seed=self.shrink.seed,
            )
            made.drop_se = float(np.std(drops, ddof=1))
        return made

    def record(self, step: str, candidate: Candidate, decision: str, why: str) -> None:
        """Add a report row and print it."""
        value = candidate.measurement.metrics[self.metric]
        drop = self.budget.drop(value)
        row = StepRecord(
            step, candidate.description, candidate.measurement, drop, candidate.drop_se, decision, why
        )
        self.records.append(row)
        if self.console is not None:
            colour = {"kept": "green", "parent": "cyan"}.get(decision, "yellow")
            m = candidate.measurement
            self.console.print(
                f"  [{colour}]{decision:<11}[/{colour}] {step:<14} {candidate.description:<28} "
                f"{m.onnx_bytes / 1024:8.1f} KB  {m.p50_batch1_us:7.1f} µs  {self.metric} {value:.4f}"
                f"  [dim]{why}[/dim]"
            )

    def within(self, candidate: Candidate) -> bool:
        """Whether the candidate's validation metric, its drop widened by ``margin_se`` standard errors, is
        inside the budget."""
        return self.budget.allows(candidate.measurement.metrics[self.metric], candidate.drop_se)

    def over_budget(self, candidate: Candidate) -> str:
        """Why a candidate breaks the budget, in words."""
        drop = self.budget.drop(candidate.measurement.metrics[self.metric])
        limit, margin, se = self.budget.max_drop, self.shrink.margin_se, candidate.drop_se
        if self.metric in ERROR_METRICS:
            text = f"{self.metric} {drop:.2%} worse than the parent's"
            noise = f" ± {se:.2%}" if se else ""
            allowed = f"{limit:.2%}"
        else:
            text, noise, allowed = (
                f"{self.metric} fell {drop:.4f}",
                f" ± {se:.4f}" if se else "",
                f"{limit:g}",
            )
        if noise and drop <= limit:
            return f"{text}{noise} (standard error): with {margin:g} of it, beyond the budget of {allowed}"
        return f"{text}{noise}; the budget allows {allowed}"

    def epochs(self, setting: int | None, steps: int, least: int, most: int) -> int:
        """``setting``, or when it is ``None`` the epochs that make ``steps`` optimizer steps, clamped: a
        small table needs many epochs to train a student at all, a large one few."""
        if setting is not None:
            return setting
        return min(max(math.ceil(steps / max(self.data.batches_per_epoch(), 1)), least), most)

    def fit(self, model: TabularModel, epochs: int, lr: float, label: str, alpha: float) -> TabularModel:
        """Train ``model`` against the teacher and the labels (see :func:`leanml.shrinking.finetune.fit`)."""
        temperature = self.shrink.distill.temperature
        return fit(
            model,
            self.data,
            self.metric,
            epochs,
            lr,
            temperature,
            alpha,
            self.shrink.seed,
            self.console,
            label,
        )

    # ------------------------------------------------------------------ steps
    def distill(self, current: Candidate) -> Candidate:
        """Distil into the smallest student of the ladder that keeps the budget (binary search)."""
        d = self.shrink.distill
        if current.spec["arch"] == "linear":
            self.record(
                "distill", current, "not kept", "the parent is a linear model: there is nothing smaller"
            )
            return current
        teacher_size = current.measurement.parameters
        if d.student is not None:
            ladder = [tuple(d.student)]
        else:
            ladder = [
                h for h in STUDENT_LADDER if spec_parameters(student_spec(current.spec, h)) < teacher_size
            ]
        if not ladder:
            self.record("distill", current, "not kept", "the parent is no larger than the smallest student")
            return current
        low, high, tried = 0, len(ladder) - 1, 0
        passed: list[tuple[int, Candidate]] = []
        trained: list[Candidate] = []
        while low <= high and tried < d.max_students:
            middle = (low + high) // 2
            spec = student_spec(current.spec, ladder[middle])
            torch.manual_seed(self.shrink.seed)
            student = build_model(spec)
            if student.rescale:  # regression: the student learns the standardized target, as the teacher did
                student.set_target_scaling(
                    float(current.model.target_shift[0]), float(current.model.target_scale[0])
                )
            label = f"distilling into mlp {list(ladder[middle])}"
            student = self.fit(student, self.epochs(d.epochs, *STUDENT_STEPS), d.lr, label, d.alpha)
            made = self.candidate(student, spec, describe(spec))
            trained.append(made)
            tried += 1
            if self.within(made):
                passed.append((middle, made))
                high = middle - 1
            else:
                low = middle + 1
        chosen = min(passed, key=lambda item: item[0]) if passed else None
        for made in trained:
            if chosen is not None and made is chosen[1]:
                self.record(
                    "distill", made, "kept", f"the smallest student inside the budget ({tried} tried)"
                )
            elif self.within(made):
                self.record("distill", made, "rolled back", "inside the budget, but a smaller student is too")
            else:
                self.record("distill", made, "rolled back", self.over_budget(made))
        return chosen[1] if chosen is not None else current

    def prune(self, current: Candidate) -> Candidate:
        """Structured pruning in steps with fine-tuning, then optional unstructured pruning."""
        p = self.shrink.prune
        if p.structured:
            current = self._prune_structured(current)
        if p.unstructured is not None:
            current = self._prune_unstructured(current)
        return current

    def _prune_structured(self, current: Candidate) -> Candidate:
        p = self.shrink.prune
        blocker = structured_blocker(current.spec)
        if blocker is not None:
            self.record("prune", current, "not kept", f"no structured pruning: {blocker}")
            return current
        for number in range(1, p.max_steps + 1):
            keep = units_to_keep(current.model, current.spec, p.step, p.min_units)
            groups = unit_groups(current.model, current.spec)
            if all(len(k) == g.width for k, g in zip(keep, groups, strict=True)):
                break  # every layer is at min_units
            model, spec = remove_units(current.model, current.spec, keep)
            label = (
                f"pruning step {number}: {hidden_widths(current.spec)} → {hidden_widths(spec)}, fine-tuning"
            )
            model = self.fit(
                model, self.epochs(p.finetune_epochs, *FINETUNE_STEPS), p.finetune_lr, label, self.alpha
            )
            made = self.candidate(model, spec, describe(spec))
            if not self.within(made):
                self.record(f"prune {number}", made, "rolled back", self.over_budget(made))
                break
            removed = current.measurement.parameters - made.measurement.parameters
            self.record(f"prune {number}", made, "kept", f"{removed:,} parameters removed")
            current = made
        return current

    def _prune_unstructured(self, current: Candidate) -> Candidate:
        amount = self.shrink.prune.unstructured
        assert amount is not None
        p = self.shrink.prune
        model = copy.deepcopy(current.model)
        masked = prune_unstructured(model, amount)
        label = f"unstructured pruning to {amount:.0%} zeros, fine-tuning"
        model = self.fit(
            model, self.epochs(p.finetune_epochs, *FINETUNE_STEPS), p.finetune_lr, label, self.alpha
        )
        make_permanent(masked)
        made = self.candidate(model, current.spec, f"{describe(current.spec)} {sparsity(model):.0%} zeros")
        if not self.within(made):
            self.record("unstructured", made, "rolled back", self.over_budget(made))
            return current
        self.record(
            "unstructured",
            made,
            "kept",
            "storage only: the dense layers keep their size and speed; compressed "
            f"{current.measurement.compressed_bytes / 1024:.1f} → "
            f"{made.measurement.compressed_bytes / 1024:.1f} KB",
        )
        return made

    def quantize(self, current: Candidate) -> Candidate:
        """int8, kept when inside the budget and faster, or smaller without being slower."""
        if is_int8(current.onnx):
            self.record("int8", current, "not kept", "the graph is already int8")
            return current
        with self.steps.step("quantizing to int8 (ONNX Runtime, dynamic)"):
            graph = quantize_int8(current.onnx, self.shrink.quantize.per_channel)
            made = self.candidate(current.model, current.spec, current.description + " int8", graph)
        if not self.within(made):
            self.record("int8", made, "rolled back", self.over_budget(made))
            return current
        # Which is faster is decided on the two graphs timed side by side, not on figures taken minutes
        # apart: at a few microseconds per call, other load on the machine would decide instead.
        fp32_us, int8_us = side_by_side(
            [current.onnx, made.onnx], self.data.validation.features, self.shrink.latency_runs
        )
        faster, slowdown = int8_us < fp32_us, int8_us / fp32_us
        smaller = made.measurement.onnx_bytes < current.measurement.onnx_bytes
        timed = f"p50 at batch 1: {int8_us:.1f} µs int8, {fp32_us:.1f} µs fp32, timed side by side"
        target = self.shrink.target_latency_us
        if not (faster or smaller):
            self.record("int8", made, "not kept", f"neither smaller nor faster ({timed})")
        elif not faster and slowdown > INT8_MAX_SLOWDOWN:
            self.record("int8", made, "not kept", f"smaller, but {slowdown:.2f}× slower ({timed})")
        elif target is not None and int8_us > target >= fp32_us:
            self.record("int8", made, "not kept", f"smaller, but slower than the latency target ({timed})")
        else:
            ratio = current.measurement.onnx_bytes / made.measurement.onnx_bytes
            self.record(
                "int8", made, "kept", f"{ratio:.1f}× smaller, {1 / slowdown:.2f}× the speed ({timed})"
            )
            return made
        return current


def export_graph(model: TabularModel, spec: dict[str, Any]) -> bytes:
    """The fp32 ONNX graph of ``model``, as bytes."""
    with tempfile.TemporaryDirectory(prefix="leanml-onnx-") as folder:
        path = Path(folder) / MODEL_ONNX
        export_onnx(model, spec, path)
        return path.read_bytes()


def describe(spec: dict[str, Any]) -> str:
    """A short name of a network: ``mlp [32, 16]``, ``resmlp 128 × 3 [256, 256, 256]``."""
    if spec["arch"] == "resmlp":
        hyper = spec["hyperparameters"]
        return f"resmlp {hyper['width']} × {hyper['blocks']} {hidden_widths(spec)}"
    if spec["arch"] == "mlp":
        return f"mlp {hidden_widths(spec)}"
    return spec["arch"]


def bundled_config(bundle: str | Path, overrides: list[str] | None = None) -> Config:
    """The config a bundle folder was made with (``config.json``), with ``KEY=VALUE`` overrides applied."""
    path = Path(bundle) / CONFIG
    if not path.is_file():
        raise ShrinkError(f"bundle '{bundle}' holds no {CONFIG}: pass the config it was trained with")
    return parse_config(apply_overrides(json.loads(path.read_text()), overrides or []))


def shrink_options(
    config: Config,
    max_metric_drop: float | None = None,
    target_latency_us: float | None = None,
    target_size_kb: float | None = None,
    methods: list[str] | None = None,
) -> Config:
    """``config`` with the given ``shrink`` settings replaced (validated; errors name ``shrink.KEY``)."""
    updates = {
        "max_metric_drop": max_metric_drop,
        "target_latency_us": target_latency_us,
        "target_size_kb": target_size_kb,
        "methods": methods,
    }
    return with_section(config, "shrink", updates)


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


def _unmet(final: Candidate, parent: Candidate, run: _Run) -> str | None:
    """Why the final model must not be written, or ``None``."""
    sc = run.shrink
    if final is parent:
        tried = [r for r in run.records if r.decision != "parent"]
        detail = "; ".join(f"{r.step}: {r.why}" for r in tried) or "no method ran"
        return f"no step kept {run.budget.describe()} ({detail})"
    m = final.measurement
    missed = []
    if sc.target_latency_us is not None and m.p50_batch1_us > sc.target_latency_us:
        missed.append(f"batch-1 p50 latency {m.p50_batch1_us:.1f} µs > target {sc.target_latency_us:g} µs")
    if sc.target_size_kb is not None and m.onnx_bytes / 1024 > sc.target_size_kb:
        missed.append(f"model.onnx {m.onnx_bytes / 1024:.1f} KB > target {sc.target_size_kb:g} KB")
    if missed:
        return "the smallest model inside the budget misses its target(s): " + "; ".join(missed)
    return None


def _test_metrics(candidate: Candidate, data: ShrinkData) -> dict[str, float]:
    if len(data.test.target) == 0:
        return {}
    return score_graph(
        OnnxRuntime(candidate.onnx, threads=1), candidate.spec, data.test.features, data.test.target
    )


def _check_same_preprocessing(parent: Bundle, prepared: Path) -> None:
    ours = json.loads((parent.path / PREPROCESS).read_text())
    theirs = json.loads((prepared / PREPROCESS).read_text())
    if ours != theirs:
        raise StateError(
            f"the prepared data in '{prepared}' was not made with the preprocessing of this bundle (the "
            "data or the config changed since it was trained); train a new parent, or pass the config it "
            "was trained with"
        )


def _store_of(ref: BundleRef, config: Config) -> ModelStore:
    """The store the parent lives in (``STORE/NAME/vN``), else the config's store."""
    if VERSION_RE.match(ref.path.name) and ref.path.parent.name == ref.name:
        return ModelStore(ref.path.parent.parent)
    return ModelStore(config.store)
