"""Training a student or fine-tuning a pruned model, against the hard labels and the teacher's outputs.

:class:`ShrinkData` holds the prepared splits once for every step: the training rows as batches (in
memory, or streamed from Parquet past the memory budget) with the teacher's outputs for them, and the
validation and test splits as numpy arrays for scoring. With the training rows in memory the teacher runs
once over them and over the synthetic rows made around them (:mod:`leanml.shrinking.synth`); streamed,
it runs on each batch.

:func:`fit` is a short, self-contained loop: AdamW, a per-step cosine learning rate, one pass over the
rows per epoch in a seeded order, and at the end the weights of the epoch whose outputs on the validation
rows are closest to the teacher's (:meth:`ShrinkData.fidelity`).

Why closest to the teacher and not best on the labels: shrink then judges the student's drop on the labels
of these same rows. An epoch picked as the best of sixty on them is the luckiest of sixty, and the drop
looked smaller than it was: over 29 students of six tables, the drop on the test rows was on average half
a standard error worse than on validation (loans: 0.8 points better on validation, 2.3 worse on test).
The distance to the teacher uses no label, so the judged drop is not biased by the choice of the epoch.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from leanml.data.prepared import PreparedData
from leanml.data.state import PreprocessState
from leanml.models import TabularModel
from leanml.shrinking.distill import distillation_loss, soft_loss
from leanml.shrinking.synth import Synthesis, feature_groups
from leanml.training.allocator import steady_allocator
from leanml.training.batching import (
    MB,
    TARGET_BYTES,
    Files,
    TensorBatches,
    load_split,
    open_split,
    target_moments,
)
from leanml.training.loop import TrainingError, epoch_seed

TEACHER_CHUNK_ROWS = 8192
ONE_THREAD_PARAMETERS = 1_000_000
"""Models below this size train on one torch thread: their small matrix products gain nothing from a
second thread, and on a busy machine the threads' synchronisation costs several times the work."""


@dataclass
class Split:
    """A split as arrays: float32 features and the targets."""

    features: np.ndarray
    target: np.ndarray


class ShrinkData:
    """The prepared data every shrink step trains and measures on (see the module docstring).

    With a :class:`~leanml.shrinking.synth.Synthesis`, the training rows in memory are joined by
    synthetic rows made around them, unlabelled (the teacher's outputs are their only targets): as many
    per row as it asks (:meth:`~leanml.shrinking.synth.Synthesis.factor_for`) and as fit
    ``memory_budget_mb`` beside the real ones; none when the rows are streamed.
    """

    def __init__(
        self,
        prepared: PreparedData,
        state: PreprocessState,
        teacher: TabularModel,
        batch_size: int,
        memory_budget_mb: float,
        synthesis: Synthesis | None = None,
    ) -> None:
        self.task = state.target.task
        features = state.feature_names
        self.train = open_split(prepared.split("train"), features, self.task, batch_size, memory_budget_mb)
        self.validation = _arrays(prepared.split("validation"), features, self.task)
        self.test = _arrays(prepared.split("test"), features, self.task)
        self.target_std = target_moments(prepared.split("train"))[1] if self.task == "regression" else 1.0
        self.teacher = teacher.eval()
        self.synthesis = synthesis
        self.groups = feature_groups(state)
        self.synthetic_factor = 0
        """Synthetic rows per training row (see the class docstring)."""
        self.no_synthetic_rows: str | None = None
        """Why a synthesis made no rows, in words."""
        if synthesis is not None:
            asked = synthesis.factor_for(self.train.rows)
            if not isinstance(self.train, TensorBatches):
                self.no_synthetic_rows = "the training rows are streamed"
            elif asked == 0:
                limits = [synthesis.max_rows, synthesis.max_training_rows]
                most = min(limit for limit in limits if limit is not None)
                self.no_synthetic_rows = f"the training split has more rows than {most:,}"
            else:
                outputs = int(_outputs(teacher, self.train.features[:1]).shape[1])
                rows = self.train.rows
                self.synthetic_factor = _fitting_factor(asked, rows, len(features), outputs, memory_budget_mb)
                if self.synthetic_factor == 0:
                    self.no_synthetic_rows = "they would not fit train.memory_budget_mb"
        self._with_teacher: TensorBatches | None = None
        self._validation_teacher: torch.Tensor | None = None

    def fidelity(self, model: TabularModel) -> float:
        """How far ``model``'s outputs are from the teacher's on the validation rows, labels aside (the
        soft term of the distillation loss at temperature 1; lower is closer)."""
        features = torch.from_numpy(self.validation.features)
        if self._validation_teacher is None:
            self._validation_teacher = _outputs(self.teacher, features)
        student = _outputs(model.eval(), features)
        return float(soft_loss(self.task, student, self._validation_teacher, 1.0, self.target_std))

    @property
    def synthetic_rows(self) -> int:
        """How many synthetic rows join the training rows."""
        return self.synthetic_factor * self.train.rows

    def epoch(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Shuffled training batches with the teacher's outputs: ``(features, target, teacher)``.

        In memory, the teacher's outputs are computed once (on the first epoch) and ride along as extra
        target columns, so the batches are the training stage's own (:class:`TensorBatches`). Synthetic
        rows, made then too, have the target NaN (class ``-1`` for multiclass): no label.
        """
        if not isinstance(self.train, TensorBatches):
            for x, y in self.train.epoch(generator):
                yield x, y, _outputs(self.teacher, x)
            return
        if self._with_teacher is None:
            self._with_teacher = self._labelled_batches()
        for x, columns in self._with_teacher.epoch(generator):
            target = columns[:, 0]
            if self.task == "multiclass":
                target = torch.where(target.isnan(), -1.0, target)
            yield x, target.to(self.train.target.dtype), columns[:, 1:].float()

    def batches_per_epoch(self) -> int:
        """How many batches :meth:`epoch` yields (at most)."""
        if not self.synthetic_rows:
            return self.train.batches_per_epoch()
        return math.ceil((self.train.rows + self.synthetic_rows) / self.train.batch_size)

    def _labelled_batches(self) -> TensorBatches:
        """The training rows and the synthetic ones, with targets and the teacher's outputs as columns."""
        assert isinstance(self.train, TensorBatches)
        features, target = self.train.features, self.train.target.double()
        if self.synthesis is not None and self.synthetic_factor:
            rows = self.train.rows
            features = torch.empty((rows + self.synthetic_rows, features.shape[1]), dtype=torch.float32)
            features[:rows] = self.train.features
            self.synthesis.rows(self.train.features, self.groups, self.synthetic_factor, out=features[rows:])
            target = torch.cat([target, torch.full((self.synthetic_rows,), math.nan, dtype=torch.float64)])
        columns = torch.cat([target[:, None], _outputs(self.teacher, features).double()], 1)
        return TensorBatches(features, columns, self.train.batch_size)


def fit(
    model: TabularModel,
    data: ShrinkData,
    epochs: int,
    lr: float,
    temperature: float,
    alpha: float,
    seed: int,
    console: Console | None = None,
    label: str = "training",
) -> TabularModel:
    """Train ``model`` in place for ``epochs`` on the distillation loss; return it with its best weights.

    ``alpha = 0`` trains on the hard labels alone. The best epoch is the one whose outputs on the
    validation rows are closest to the teacher's (:meth:`ShrinkData.fidelity`: no label, so the drop shrink
    judges on those rows' labels afterwards is not flattered by the choice); without validation rows it
    is the last.
    """
    if epochs == 0:
        return model
    steady_allocator()  # as the training loop: a step's freed tensors stay in the heap
    small = sum(p.numel() for p in model.parameters()) < ONE_THREAD_PARAMETERS
    threads = _torch_threads(1 if small else torch.get_num_threads())
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    total_steps = max(epochs * data.batches_per_epoch(), 1)
    closest, best_state = math.inf, None
    step = 0
    with threads, _FitProgress(console, label, total_steps) as (progress, task_id):
        for epoch in range(epochs):
            generator = torch.Generator().manual_seed(epoch_seed(seed, epoch))
            torch.default_generator.manual_seed(epoch_seed(seed, epoch))
            model.train()
            loss = torch.zeros(())
            for x, y, teacher_out in data.epoch(generator):
                for group in optimizer.param_groups:  # cosine decay per step, to zero at the end
                    group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
                loss = distillation_loss(
                    data.task, model(x), teacher_out, y, temperature, alpha, data.target_std
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                if progress is not None:
                    progress.advance(task_id)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"{label}: the loss became {float(loss)}; lower the learning rate ({lr:g})"
                )
            if len(data.validation.target):
                distance = data.fidelity(model)
                if distance < closest:
                    closest, best_state = distance, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    return model.eval()


@contextlib.contextmanager
def _torch_threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _FitProgress:
    """A Rich bar over the optimizer steps of one fit (nothing without a console)."""

    def __init__(self, console: Console | None, label: str, total: int) -> None:
        self.progress = None
        if console is not None and console.is_terminal:  # a bar in a log file is only noise
            self.progress = Progress(
                TextColumn(label),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
        self.total = total

    def __enter__(self) -> tuple[Progress | None, int]:
        if self.progress is None:
            return None, 0
        self.progress.start()
        return self.progress, self.progress.add_task("fit", total=self.total)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _outputs(model: TabularModel, features: torch.Tensor) -> torch.Tensor:
    """The model's raw outputs for ``features``, in chunks, without autograd."""
    with torch.no_grad():  # not inference_mode: the losses save these tensors for the backward pass
        parts = [
            model(features[s : s + TEACHER_CHUNK_ROWS]) for s in range(0, len(features), TEACHER_CHUNK_ROWS)
        ]
    return torch.cat(parts) if parts else torch.zeros(0, 1)


def _fitting_factor(factor: int, rows: int, n_features: int, outputs: int, memory_budget_mb: float) -> int:
    """At most ``factor`` synthetic rows per training row such that all rows, as features and target +
    teacher columns, fit the memory budget beside the training split itself."""
    row_bytes = 4 * n_features + 8 * (1 + outputs)
    budget = memory_budget_mb * MB - rows * (4 * n_features + TARGET_BYTES)
    return max(0, min(factor, int(budget // max(rows * row_bytes, 1)) - 1))


def _arrays(path: Files, features: list[str], task: str) -> Split:
    x, y = load_split(path, features, task)
    return Split(x.numpy(), y.numpy())
