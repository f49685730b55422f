"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): the loss, and the students to try.

Classification: ``alpha · T² · KL(p_teacher ‖ p_student) + (1 − alpha) · CE(student, y)`` where both
distributions are the softmax of the logits divided by the temperature ``T`` (the ``T²`` keeps the soft
term's gradients on the scale of the hard one's). A binary model's one logit ``z`` is the two-class
softmax over ``[0, z]``, so its distributions are Bernoulli with ``p = sigmoid(z / T)``.

Regression: ``alpha · MSE(student, teacher) + (1 − alpha) · MSE(student, y)``, each divided by the
target's variance (the model outputs the target's units; see :func:`leanml.training.make_loss`).

Synthetic rows (:mod:`leanml.shrinking.synth`) have no label (a NaN target, or class ``-1``): their hard
term is against the teacher's own prediction at temperature 1, so they teach the teacher's function alone.

Students are plain MLPs (:func:`student_spec`), or keep the teacher's numeric embedding when asked: the
embedding costs parameters per numeric feature and a fixed time per call, which a plain student saves.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

STUDENT_LADDER: tuple[tuple[int, ...], ...] = (
    (4,),
    (8,),
    (16,),
    (32,),
    (32, 16),
    (64, 32),
    (128, 64),
    (256, 128),
    (512, 256),
)
"""Hidden widths of the ``mlp`` students tried, smallest first."""


def distillation_loss(
    task: str,
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    temperature: float,
    alpha: float,
    target_std: float = 1.0,
) -> torch.Tensor:
    """The mean distillation loss of a batch (see the module docstring).

    ``student`` and ``teacher`` are raw outputs ``[batch, n_outputs]``; ``target`` holds 0/1 (binary),
    class indices (multiclass) or values (regression). A synthetic row has no label (NaN, or class
    ``-1``): its hard term is against the teacher's own prediction (at temperature 1).
    """
    soft = soft_loss(task, student, teacher, temperature, target_std)
    if task == "regression":
        target = torch.where(target.isnan(), teacher[:, 0], target)
        hard = F.mse_loss(student[:, 0], target) / (target_std * target_std)
        return alpha * soft + (1.0 - alpha) * hard
    if task == "binary":
        target = torch.where(target.isnan(), torch.sigmoid(teacher[:, 0]), target)
        hard = F.binary_cross_entropy_with_logits(student[:, 0], target)
    else:
        hard = F.cross_entropy(student, _class_targets(target, teacher))
    return alpha * temperature * temperature * soft + (1.0 - alpha) * hard


def soft_loss(
    task: str, student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0, target_std: float = 1.0
) -> torch.Tensor:
    """How far the student's outputs are from the teacher's, labels aside: the soft term of
    :func:`distillation_loss` (the KL divergence of the distributions at ``temperature``, or the squared
    error over the target's variance). At temperature 1 it is what shrink picks a student's epoch by."""
    if task == "regression":
        return F.mse_loss(student[:, 0], teacher[:, 0]) / (target_std * target_std)
    if task == "binary":
        return _bernoulli_kl(teacher[:, 0] / temperature, student[:, 0] / temperature)
    if task == "multiclass":
        return F.kl_div(
            F.log_softmax(student / temperature, dim=1),
            F.log_softmax(teacher / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
    raise ValueError(f"task must be binary, multiclass or regression, got {task!r}")


def _class_targets(target: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Class indices as they are when every row has one; else class probabilities: one-hot for labelled
    rows, the teacher's softmax for unlabelled ones (class ``-1``)."""
    unlabelled = target < 0
    if not bool(unlabelled.any()):
        return target
    probabilities = F.one_hot(target.clamp(min=0), teacher.shape[1]).to(teacher.dtype)
    return torch.where(unlabelled[:, None], torch.softmax(teacher, dim=1), probabilities)


def _bernoulli_kl(teacher_logit: torch.Tensor, student_logit: torch.Tensor) -> torch.Tensor:
    """Mean KL(Bernoulli(sigmoid(t)) ‖ Bernoulli(sigmoid(s))): the cross-entropy of the student's
    distribution against the teacher's, minus the teacher's entropy (two fused, stable kernels)."""
    p = torch.sigmoid(teacher_logit)
    cross_entropy = F.binary_cross_entropy_with_logits(student_logit, p)
    entropy = F.binary_cross_entropy_with_logits(teacher_logit, p)
    return cross_entropy - entropy


def student_spec(
    teacher_spec: dict[str, Any], hidden: list[int] | tuple[int, ...], embedding: bool = False
) -> dict[str, Any]:
    """The spec of an ``mlp`` student with ``hidden`` widths, for the teacher's inputs and task.

    The student takes the teacher's activation; it has no dropout (the soft targets regularise it) and
    no normalisation layers (so every hidden unit can be pruned away). With ``embedding`` it embeds its
    numeric inputs as the teacher does (same kind and size, its own weights); without, it is a plain MLP
    over the features.
    """
    activation = teacher_spec["hyperparameters"].get("activation", "relu")
    spec = {
        **{key: value for key, value in teacher_spec.items() if key != "embedding"},
        "arch": "mlp",
        "hyperparameters": {"hidden": list(hidden), "activation": activation, "dropout": 0.0, "norm": "none"},
    }
    if embedding and "embedding" in teacher_spec:
        spec["embedding"] = teacher_spec["embedding"]
    return spec


def spec_parameters(spec: dict[str, Any]) -> int:
    """Parameters of the network ``spec`` describes (weights and biases of its layers)."""
    from leanml.models import build_model

    return sum(p.numel() for p in build_model(spec).parameters())
