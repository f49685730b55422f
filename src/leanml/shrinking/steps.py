"""The steps of a shrink run and the rules that keep or roll back each one.

A :class:`ShrinkRun` holds what the steps share (data, budget, the records so far). Each step makes a
candidate from the current model, measures it on the validation split and keeps it only inside the
budget; otherwise it is rolled back and the current model stays.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from rich.console import Console

from leanml.bundle.runtime import OnnxRuntime
from leanml.config import Config
from leanml.models import TabularModel, build_model
from leanml.models.export import export_graph
from leanml.progress import Steps
from leanml.shrinking.distill import STUDENT_LADDER, spec_parameters, student_spec
from leanml.shrinking.finetune import ShrinkData, fit
from leanml.shrinking.measure import Serving, bootstrap_drops, measure, score_graph, side_by_side
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
from leanml.shrinking.results import ERROR_METRICS, Budget, Candidate, StepRecord

STUDENT_STEPS = (4000, 60, 500)
"""Default student training: optimizer steps, and the fewest and most epochs. A student copies its teacher
only after many passes over a large table: on flights (262k training rows) mlp [128, 64] fell 2.24 AUC
points behind after 8 epochs, 0.75 after 40, 0.37 after 60 (test rows; docs/config.md)."""
STUDENT_MAX_STEPS = (60_000, 8)
"""...but past 60,000 optimizer steps (tables of over ~500,000 training rows at batch 512) fewer epochs, at
least 8: a bound on the time of a shrink that the measurements above did not reach."""
FINETUNE_STEPS = (1000, 2, 100)
"""Default fine-tuning after a pruning step: optimizer steps, and the fewest and most epochs."""
INT8_MAX_SLOWDOWN = 1.10
"""An int8 graph that is not faster is kept only for a size target the fp32 graph misses, and only when
batch-1 latency stays within this factor (and within a latency target the fp32 graph meets)."""


class ShrinkRun:
    """The state one shrink run threads through its steps: data, budget, and the records so far."""

    def __init__(
        self,
        config: Config,
        data: ShrinkData,
        metric: str,
        console: Console | None,
        steps: Steps,
        serving: Serving | None = None,
    ) -> None:
        self.config = config
        self.serving = serving
        """Latency is timed on each candidate's whole serving graph over these raw rows (when given)."""
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
            onnx,
            parameters,
            spec,
            validation.features,
            validation.target,
            self.shrink.latency_runs,
            serving=self.serving,
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
        inside the budget, and the validation rows can tell (:meth:`verifiable`)."""
        metric = candidate.measurement.metrics[self.metric]
        return self.verifiable(candidate) and self.budget.allows(metric, candidate.drop_se)

    def verifiable(self, candidate: Candidate) -> bool:
        """Whether the validation rows can tell that the candidate is inside the budget
        (:meth:`~leanml.shrinking.results.Budget.verifies`)."""
        return self.budget.verifies(candidate.measurement.metrics[self.metric], candidate.drop_se)

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
        if not self.verifiable(candidate):
            rows = len(self.data.validation.target)
            return (
                f"{text}{noise} (standard error over {rows} validation rows): the noise is larger than the "
                f"budget of {allowed} and the drop is not inside it by {2 * margin:g} of it, which these "
                "rows cannot verify; raise data.split.validation or shrink.max_metric_drop "
                "(shrink.margin_se: 0 accepts the noise)"
            )
        if noise and drop <= limit:
            return f"{text}{noise} (standard error): with {margin:g} of it, beyond the budget of {allowed}"
        return f"{text}{noise}; the budget allows {allowed}"

    def epochs(
        self, setting: int | None, steps: int, least: int, most: int, cap: tuple[int, int] | None = None
    ) -> int:
        """``setting``, or when it is ``None`` :func:`auto_epochs` for this training data."""
        if setting is not None:
            return setting
        return auto_epochs(self.data.batches_per_epoch(), steps, least, most, cap)

    def fit(self, model: TabularModel, epochs: int, lr: float, label: str, alpha: float) -> TabularModel:
        """Train ``model`` against the teacher and the labels (see :func:`leanml.shrinking.finetune.fit`)."""
        temperature = self.shrink.distill.temperature
        return fit(
            model,
            self.data,
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
        """Distil into the smallest student that keeps the budget: a binary search over the ladder of
        plain MLPs, then (``distill.embedding: auto``, when none of them keeps it) over students with the
        teacher's numeric embedding."""
        d = self.shrink.distill
        if current.spec["arch"] == "linear":
            self.record(
                "distill", current, "not kept", "the parent is a linear model: there is nothing smaller"
            )
            return current
        embedded = "embedding" in current.spec
        choices = {"none": [False], "keep": [embedded], "auto": [False, True] if embedded else [False]}
        trained: list[Candidate] = []
        chosen: Candidate | None = None
        for embedding in choices[d.embedding]:
            ladder = self._ladder(current, embedding)
            chosen = self._search(current, ladder, trained)
            if chosen is not None:
                break
        if not trained:
            self.record("distill", current, "not kept", "the parent is no larger than the smallest student")
            return current
        rows = self._rows_trained_on()
        for made in trained:
            if made is chosen:
                self.record(
                    "distill",
                    made,
                    "kept",
                    f"the smallest student inside the budget ({len(trained)} tried; {rows})",
                )
            elif self.within(made):
                self.record("distill", made, "rolled back", "inside the budget, but a smaller student is too")
            else:
                self.record("distill", made, "rolled back", self.over_budget(made))
        return chosen if chosen is not None else current

    def _ladder(self, current: Candidate, embedding: bool) -> list[dict[str, Any]]:
        """Student specs to search, smallest first: ``distill.student``, else the rungs of
        :data:`STUDENT_LADDER` smaller than the parent."""
        d = self.shrink.distill
        widths = [tuple(d.student)] if d.student is not None else STUDENT_LADDER
        specs = [student_spec(current.spec, hidden, embedding) for hidden in widths]
        if d.student is not None:
            return specs
        return [spec for spec in specs if spec_parameters(spec) < current.measurement.parameters]

    def _search(
        self, current: Candidate, ladder: list[dict[str, Any]], trained: list[Candidate]
    ) -> Candidate | None:
        """Binary search of ``ladder`` for its smallest student inside the budget, training at most
        ``distill.max_students``; every student trained is appended to ``trained``."""
        d = self.shrink.distill
        low, high, tried = 0, len(ladder) - 1, 0
        passed: list[tuple[int, Candidate]] = []
        while low <= high and tried < d.max_students:
            middle = (low + high) // 2
            spec = ladder[middle]
            torch.manual_seed(self.shrink.seed)
            student = build_model(spec)
            if student.rescale:  # regression: the student learns the standardized target, as the teacher did
                student.set_target_scaling(
                    float(current.model.target_shift[0]), float(current.model.target_scale[0])
                )
            label = f"distilling into {describe(spec)}"
            student = self.fit(
                student, self.epochs(d.epochs, *STUDENT_STEPS, STUDENT_MAX_STEPS), d.lr, label, d.alpha
            )
            made = self.candidate(student, spec, describe(spec))
            trained.append(made)
            tried += 1
            if self.within(made):
                passed.append((middle, made))
                high = middle - 1
            else:
                low = middle + 1
        return min(passed, key=lambda item: item[0])[1] if passed else None

    def _rows_trained_on(self) -> str:
        """The rows the students learnt from, in words."""
        data = self.data
        text = f"{data.train.rows:,} training rows"
        if data.synthetic_rows and data.synthesis is not None:
            text += f" + {data.synthetic_rows:,} {data.synthesis.kind} rows"
        elif data.no_synthetic_rows:
            text += f", no synthetic rows: {data.no_synthetic_rows}"
        return text

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
        """int8, kept when inside the budget and faster, or when only it meets ``target_size_kb``."""
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
            [current.onnx, made.onnx],
            self.data.validation.features,
            self.shrink.latency_runs,
            spec=current.spec,
            serving=self.serving,
        )
        sizes_kb = (current.measurement.onnx_bytes / 1024, made.measurement.onnx_bytes / 1024)
        targets = (self.shrink.target_latency_us, self.shrink.target_size_kb)
        why = int8_refusal(fp32_us, int8_us, sizes_kb, targets)
        timed = f"p50 at batch 1: {int8_us:.1f} µs int8, {fp32_us:.1f} µs fp32, timed side by side"
        if why is not None:
            self.record("int8", made, "not kept", f"{why} ({timed})")
            return current
        self.record(
            "int8",
            made,
            "kept",
            f"{sizes_kb[0] / sizes_kb[1]:.1f}× smaller, {fp32_us / int8_us:.2f}× the speed ({timed})",
        )
        return made


def auto_epochs(batches: int, steps: int, least: int, most: int, cap: tuple[int, int] | None = None) -> int:
    """The epochs that make ``steps`` optimizer steps of ``batches`` per epoch, clamped to ``[least,
    most]``: a small table needs many epochs to train a student at all, a large one fewer. ``cap``
    (``(max_steps, fewest)``) then lowers them to at most ``max_steps`` steps, but not below ``fewest``."""
    batches = max(batches, 1)
    epochs = min(max(math.ceil(steps / batches), least), most)
    if cap is not None:
        max_steps, fewest = cap
        epochs = min(epochs, max(math.ceil(max_steps / batches), fewest))
    return epochs


def int8_refusal(
    fp32_us: float,
    int8_us: float,
    sizes_kb: tuple[float, float],
    targets: tuple[float | None, float | None] = (None, None),
) -> str | None:
    """Why an int8 graph inside the budget is not kept, or ``None`` to keep it.

    ``sizes_kb``: the fp32 and int8 ``model.onnx`` sizes; ``targets``: ``shrink.target_latency_us`` and
    ``target_size_kb``. Kept when faster at batch 1. A graph that is not faster is kept only when the
    fp32 graph misses the size target, at most :data:`INT8_MAX_SLOWDOWN` times slower and not pushed
    over a latency target the fp32 graph meets: dynamic int8 adds quantize / dequantize work to every
    call, and a student is already several times smaller than its teacher (flights: int8 made a 110 KB
    student 3.2× smaller, 8 % slower, and cost it 0.14 AUC points of its half-point budget).
    """
    if int8_us < fp32_us:
        return None
    fp32_kb, int8_kb = sizes_kb
    target_us, target_kb = targets
    slowdown = int8_us / fp32_us
    if target_kb is None or fp32_kb <= target_kb:
        smaller = fp32_kb / int8_kb
        return f"{smaller:.1f}× smaller but not faster ({slowdown:.2f}× the time); no size target asks for it"
    if slowdown > INT8_MAX_SLOWDOWN:
        return f"smaller, but {slowdown:.2f}× slower"
    if target_us is not None and int8_us > target_us >= fp32_us:
        return "smaller, but slower than the latency target"
    return None


def describe(spec: dict[str, Any]) -> str:
    """A short name of a network: ``mlp [32, 16]``, ``resmlp 128 × 3 [256, 256, 256]``, with ``+ periodic
    embedding`` when it embeds its numeric inputs."""
    if spec["arch"] == "resmlp":
        hyper = spec["hyperparameters"]
        name = f"resmlp {hyper['width']} × {hyper['blocks']} {hidden_widths(spec)}"
    elif spec["arch"] == "mlp":
        name = f"mlp {hidden_widths(spec)}"
    else:
        name = spec["arch"]
    return name + (f" + {spec['embedding']['kind']} embedding" if "embedding" in spec else "")


def unmet(final: Candidate, parent: Candidate, run: ShrinkRun) -> str | None:
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


def test_metrics(candidate: Candidate, data: ShrinkData) -> dict[str, float]:
    if len(data.test.target) == 0:
        return {}
    return score_graph(
        OnnxRuntime(candidate.onnx, threads=1), candidate.spec, data.test.features, data.test.target
    )
