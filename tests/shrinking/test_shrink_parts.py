"""The shrink parts against direct computations: distillation loss, structured pruning, int8, budget."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from leanml.bundle.runtime import OnnxRuntime
from leanml.metrics import evaluate, metric_value
from leanml.models import build_model, load_model, save_model
from leanml.models.export import export_graph
from leanml.shrinking import Budget
from leanml.shrinking.distill import distillation_loss, spec_parameters, student_spec
from leanml.shrinking.measure import bootstrap_drops
from leanml.shrinking.prune import (
    make_permanent,
    mask_units,
    prune_unstructured,
    remove_units,
    sparsity,
    structured_blocker,
    unit_groups,
    units_to_keep,
)
from leanml.shrinking.quantize import is_int8, quantize_int8
from leanml.shrinking.steps import STUDENT_MAX_STEPS, STUDENT_STEPS, auto_epochs, int8_refusal

T, ALPHA = 3.0, 0.6


def spec(arch: str, task: str = "binary", n_inputs: int = 12, **hyper: Any) -> dict[str, Any]:
    """A model spec for ``arch`` with ``hyper`` over sensible defaults."""
    defaults: dict[str, Any] = {
        "mlp": {"hidden": [24, 16], "activation": "relu", "dropout": 0.0, "norm": "none"},
        "resmlp": {
            "width": 16,
            "inner": 32,
            "blocks": 2,
            "activation": "gelu",
            "dropout": 0.0,
            "norm": "layer",
        },
        "linear": {},
    }[arch]
    outputs = {"binary": 1, "multiclass": 4, "regression": 1}[task]
    output = {"binary": "logit", "multiclass": "logits", "regression": "value"}[task]
    return {
        "format_version": 1,
        "arch": arch,
        "hyperparameters": {**defaults, **hyper},
        "n_inputs": n_inputs,
        "n_outputs": outputs,
        "task": task,
        "output": output,
    }


# ------------------------------------------------------------------------------------------- distillation
def test_multiclass_distillation_loss_equals_the_direct_formula() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(32, 5), torch.randn(32, 5) * 3
    target = torch.randint(0, 5, (32,))
    p_teacher = torch.softmax(teacher / T, dim=1)
    kl = (p_teacher * (p_teacher.log() - torch.log_softmax(student / T, dim=1))).sum(dim=1).mean()
    cross_entropy = -torch.log_softmax(student, dim=1)[torch.arange(32), target].mean()
    expected = ALPHA * T * T * kl + (1 - ALPHA) * cross_entropy
    got = distillation_loss("multiclass", student, teacher, target, T, ALPHA)
    torch.testing.assert_close(got, expected)
    # and PyTorch's own KL divergence agrees
    torch_kl = F.kl_div(F.log_softmax(student / T, 1), p_teacher, reduction="batchmean")
    torch.testing.assert_close(kl, torch_kl)


def test_binary_distillation_loss_is_the_two_class_softmax_over_zero_and_the_logit() -> None:
    torch.manual_seed(1)
    student, teacher = torch.randn(64, 1) * 2, torch.randn(64, 1) * 4
    target = torch.randint(0, 2, (64,)).float()
    two = lambda z: torch.cat([torch.zeros_like(z), z], dim=1)  # noqa: E731
    p_teacher = torch.softmax(two(teacher) / T, dim=1)
    kl = F.kl_div(F.log_softmax(two(student) / T, dim=1), p_teacher, reduction="batchmean")
    bce = F.cross_entropy(two(student), target.long())
    expected = ALPHA * T * T * kl + (1 - ALPHA) * bce
    torch.testing.assert_close(distillation_loss("binary", student, teacher, target, T, ALPHA), expected)


def test_regression_distillation_is_mse_to_the_teacher_and_to_the_target() -> None:
    torch.manual_seed(2)
    student, teacher, target = torch.randn(16, 1), torch.randn(16, 1), torch.randn(16)
    std = 2.5
    expected = (
        ALPHA * ((student[:, 0] - teacher[:, 0]) ** 2).mean()
        + (1 - ALPHA) * ((student[:, 0] - target) ** 2).mean()
    ) / std**2
    got = distillation_loss("regression", student, teacher, target, T, ALPHA, target_std=std)
    torch.testing.assert_close(got, expected)


def test_distillation_with_alpha_zero_is_the_training_loss_and_a_perfect_student_has_no_soft_loss() -> None:
    torch.manual_seed(3)
    logits, target = torch.randn(8, 3), torch.randint(0, 3, (8,))
    hard = distillation_loss("multiclass", logits, torch.randn(8, 3), target, T, 0.0)
    torch.testing.assert_close(hard, F.cross_entropy(logits, target))
    soft = distillation_loss("multiclass", logits, logits.clone(), target, T, 1.0)
    assert abs(float(soft)) < 1e-6
    with pytest.raises(ValueError, match="task must be"):
        distillation_loss("ranking", logits, logits, target, T, ALPHA)


def test_student_spec_is_a_plain_mlp_for_the_teachers_inputs() -> None:
    teacher = spec("resmlp", task="multiclass")
    student = student_spec(teacher, (8, 4))
    assert student["arch"] == "mlp" and student["n_inputs"] == 12 and student["n_outputs"] == 4
    assert student["hyperparameters"] == {
        "hidden": [8, 4],
        "activation": "gelu",
        "dropout": 0.0,
        "norm": "none",
    }
    assert spec_parameters(student) == 12 * 8 + 8 + 8 * 4 + 4 + 4 * 4 + 4


def test_students_are_plain_unless_they_keep_the_teachers_embedding() -> None:
    embedding = {"kind": "periodic", "features": [0, 1], "frequencies": 4, "dim": 3, "scale": 0.1}
    teacher = {**spec("mlp"), "embedding": embedding}
    plain = student_spec(teacher, (8,))
    assert "embedding" not in plain and spec_parameters(plain) == 12 * 8 + 8 + 8 + 1
    embedded = student_spec(teacher, (8,), embedding=True)
    assert embedded["embedding"] == embedding
    # per embedded feature: 4 frequencies, a 8 → 3 linear map; the network sees 2 × 3 + 10 inputs
    assert spec_parameters(embedded) == 2 * (4 + 8 * 3 + 3) + (6 + 10) * 8 + 8 + 8 + 1


# ------------------------------------------------------------------------------------ structured pruning
@pytest.mark.parametrize(
    "model_spec",
    [
        spec("mlp"),
        spec("mlp", task="multiclass", norm="batch", dropout=0.2, activation="tanh"),
        spec("mlp", task="regression", hidden=[10]),
        spec("resmlp"),
        spec("resmlp", norm="batch", blocks=3, inner=[20, 12, 8]),
    ],
    ids=["mlp", "mlp-batchnorm-dropout", "mlp-regression", "resmlp-layernorm", "resmlp-batchnorm"],
)
def test_pruned_model_is_smaller_and_equals_the_masked_original(model_spec: dict[str, Any]) -> None:
    torch.manual_seed(4)
    model = build_model(model_spec)
    if model_spec["task"] == "regression":
        model.set_target_scaling(3.0, 2.0)
    with torch.no_grad():  # make batch norm statistics non-trivial
        model.train()
        for _ in range(3):
            model(torch.randn(64, 12) * 2 + 1)
    model.eval()
    keep = units_to_keep(model, model_spec, step=0.4, min_units=2)
    pruned, pruned_spec = remove_units(model, model_spec, keep)
    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())
    assert after < before
    widths = [len(k) for k in keep]
    assert widths == [g.width for g in unit_groups(pruned, pruned_spec)]
    assert all(w < g.width for w, g in zip(widths, unit_groups(model, model_spec), strict=True))
    features = torch.randn(50, 12)
    with torch.no_grad():
        expected = mask_units(model, model_spec, keep)(features)
        torch.testing.assert_close(pruned(features), expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(model(features), expected)  # the masked units did contribute


def test_units_with_the_smallest_weights_go_first_and_min_units_holds() -> None:
    model_spec = spec("mlp", hidden=[6])
    model = build_model(model_spec)
    with torch.no_grad():
        model.net.layers[3].weight[:, [1, 4]] *= 1e-3  # units 1 and 4 barely reach the output
    keep = units_to_keep(model, model_spec, step=0.34, min_units=2)
    assert keep[0].tolist() == [0, 2, 3, 5]
    assert [len(k) for k in units_to_keep(model, model_spec, step=0.99, min_units=2)] == [2]


def test_pruned_model_saves_loads_and_exports(tmp_path: Any) -> None:
    model_spec = spec("resmlp", norm="none")
    model = build_model(model_spec).eval()
    pruned, pruned_spec = remove_units(model, model_spec, units_to_keep(model, model_spec, 0.5, 2))
    assert pruned_spec["hyperparameters"]["inner"] == [16, 16]
    save_model(pruned, pruned_spec, tmp_path)
    loaded, loaded_spec = load_model(tmp_path)
    features = np.random.default_rng(0).normal(size=(9, 12)).astype(np.float32)
    with torch.no_grad():
        expected = pruned(torch.from_numpy(features)).numpy()
    assert loaded_spec == pruned_spec
    np.testing.assert_allclose(loaded(torch.from_numpy(features)).detach().numpy(), expected, rtol=1e-6)
    got = OnnxRuntime(export_graph(pruned, pruned_spec), threads=1).outputs(features)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_models_structured_pruning_cannot_shrink_say_why() -> None:
    assert "linear" in (structured_blocker(spec("linear")) or "")
    assert "layer norm" in (structured_blocker(spec("mlp", norm="layer")) or "")
    assert structured_blocker(spec("resmlp", norm="layer")) is None  # its norms are over the residual width
    assert structured_blocker(spec("mlp", norm="batch")) is None


def test_unstructured_pruning_zeroes_the_share_asked_and_leaves_shapes() -> None:
    model = build_model(spec("mlp", hidden=[64, 32]))
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    masked = prune_unstructured(model, 0.7)
    make_permanent(masked)
    assert sparsity(model) == pytest.approx(0.7, abs=0.01)
    assert {k: v.shape for k, v in model.state_dict().items()} == shapes  # same tensors: storage only


# ------------------------------------------------------------------------------------------------- int8
def test_int8_outputs_stay_close_to_fp32_and_the_graph_is_smaller() -> None:
    torch.manual_seed(5)
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2048, 40)).astype(np.float32)
    labels = torch.from_numpy((features @ rng.normal(size=(40, 4))).argmax(1))
    model_spec = spec("mlp", task="multiclass", n_inputs=40, hidden=[128, 64])
    model = build_model(model_spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):  # a trained network, as int8 meets it in practice
        optimizer.zero_grad()
        F.cross_entropy(model(torch.from_numpy(features)), labels).backward()
        optimizer.step()
    model.eval()
    fp32 = export_graph(model, model_spec)
    int8 = quantize_int8(fp32)
    assert is_int8(int8) and not is_int8(fp32)
    assert len(int8) < len(fp32) / 2.5
    exact, approx = (
        torch.softmax(torch.from_numpy(OnnxRuntime(graph, threads=1).outputs(features[:512])), 1).numpy()
        for graph in (fp32, int8)
    )
    gap = np.abs(approx - exact)
    assert gap.mean() < 0.01 and gap.max() < 0.1, (gap.mean(), gap.max())
    assert (exact.argmax(1) == approx.argmax(1)).mean() > 0.97


@pytest.mark.parametrize(
    ("fp32_us", "int8_us", "sizes_kb", "targets", "why"),
    [
        (40.0, 35.0, (8.0, 7.0), (None, None), None),  # faster: kept however small the saving
        (40.0, 42.0, (110.0, 34.0), (None, None), "no size target asks for it"),  # smaller, slower
        (40.0, 42.0, (110.0, 34.0), (None, 200.0), "no size target asks for it"),  # fp32 meets it
        (40.0, 42.0, (110.0, 34.0), (None, 50.0), None),  # the size target needs it, 5 % slower
        (40.0, 48.0, (110.0, 34.0), (None, 50.0), "1.20× slower"),
        (40.0, 42.0, (110.0, 34.0), (41.0, 50.0), "slower than the latency target"),
        (40.0, 42.0, (110.0, 34.0), (39.0, 50.0), None),  # the fp32 graph misses the latency target too
    ],
)
def test_int8_is_kept_when_faster_or_when_a_size_target_needs_it(
    fp32_us: float,
    int8_us: float,
    sizes_kb: tuple[float, float],
    targets: tuple[float | None, float | None],
    why: str | None,
) -> None:
    verdict = int8_refusal(fp32_us, int8_us, sizes_kb, targets)
    assert verdict is None if why is None else why in (verdict or "")


def test_students_train_at_least_60_epochs_within_a_bound_on_steps() -> None:
    def epochs(rows: int) -> int:
        return auto_epochs(math.ceil(rows / 512), *STUDENT_STEPS, STUDENT_MAX_STEPS)

    assert epochs(5_000) == 400  # 10 batches: 4,000 steps
    assert epochs(40_000) == 60  # 79 batches: 51 epochs would make 4,000 steps; at least 60
    assert epochs(235_689) == 60  # flights
    assert epochs(2_000_000) == 16  # 3,907 batches: 60,000 steps
    assert epochs(50_000_000) == 8
    assert epochs(100) == 500
    assert auto_epochs(0, 1000, 2, 100) == 100  # no batches counts as one


# ------------------------------------------------------------------------------------------------ budget
def test_budget_is_points_for_scores_and_a_share_for_errors() -> None:
    auc = Budget("roc_auc", 0.90, 0.01)
    assert auc.drop(0.895) == pytest.approx(0.005)
    assert auc.allows(0.89) and not auc.allows(0.8899)
    assert auc.allows(0.95)
    rmse = Budget("rmse", 50.0, 0.02)
    assert rmse.drop(51.0) == pytest.approx(0.02)
    assert rmse.allows(51.0) and not rmse.allows(51.01)
    assert "2.0% of the parent's" in rmse.describe() and "0.01" in auc.describe()
    assert auc.limit() == pytest.approx(0.89) and rmse.limit() == pytest.approx(51.0)
    assert auc.allows(auc.limit()) and rmse.allows(rmse.limit())


def test_a_margin_of_standard_errors_narrows_the_budget() -> None:
    strict = Budget("accuracy", 0.95, 0.01, margin_se=1.0)
    assert strict.allows(0.945) and not strict.allows(0.945, drop_se=0.006)
    assert strict.allows(0.945, drop_se=0.005)
    assert "plus 1 standard error" in strict.describe()


def test_a_noisy_drop_is_verified_only_far_inside_the_budget() -> None:
    budget = Budget("rmse", 600.0, 0.01, margin_se=1.0)
    assert budget.verifies(606.0, drop_se=0.01)  # the noise within the budget: the margin decides
    assert not budget.verifies(594.0, drop_se=0.02)  # 1 % better, ± 2 %: could be 3 % worse
    assert not budget.verifies(600.0 * (1 - 0.125), drop_se=0.081)  # -12.5 % + 2 x 8.1 % = 3.7 %
    assert budget.verifies(600.0 * (1 - 0.0646), drop_se=0.0363)  # -6.46 % + 2 x 3.63 % = 0.8 %
    assert Budget("rmse", 600.0, 0.01).verifies(594.0, drop_se=0.5)  # margin_se 0 accepts the noise
    twice = Budget("rmse", 600.0, 0.01, margin_se=2.0)
    assert not twice.verifies(600.0 * (1 - 0.0646), drop_se=0.0363)  # a wider margin asks more


def test_paired_bootstrap_of_the_drop_matches_the_analytic_standard_error() -> None:
    rng = np.random.default_rng(0)
    n = 4000
    target = rng.integers(0, 2, n)
    parent = np.where(rng.random(n) < 0.9, target, 1 - target).astype(float)  # 90 % right
    candidate = parent.copy()
    flipped = rng.random(n) < 0.05  # the candidate disagrees with the parent on 5 % of the rows
    candidate[flipped] = 1 - candidate[flipped]
    budget = Budget("accuracy", 0.0, 0.01)
    drops = bootstrap_drops("binary", "accuracy", target, parent, candidate, budget.drop_from, resamples=400)
    per_row = (parent == target).astype(float) - (candidate == target).astype(float)
    analytic = per_row.std(ddof=1) / np.sqrt(n)
    assert np.std(drops, ddof=1) == pytest.approx(analytic, rel=0.15)
    assert np.mean(drops) == pytest.approx(per_row.mean(), abs=3 * analytic)
    same = bootstrap_drops("binary", "accuracy", target, parent, parent.copy(), budget.drop_from)
    assert np.all(same == 0.0)


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_metric_value_equals_evaluate(task: str) -> None:
    rng = np.random.default_rng(1)
    if task == "regression":
        target, output = rng.normal(size=300), rng.normal(size=300)
    elif task == "binary":
        target, output = rng.integers(0, 2, 300), rng.random(300)
    else:
        target, output = rng.integers(0, 3, 300), rng.dirichlet(np.ones(3), 300)
    every = evaluate(task, target, output)
    for name, value in every.items():
        assert metric_value(task, name, target, output) == pytest.approx(value)
    with pytest.raises(ValueError, match="not a metric"):
        metric_value(task, "bleu", target, output)


def test_shrink_times_the_whole_serving_graph_on_raw_rows(trained_flights: dict[str, Any]) -> None:
    import polars as pl

    from leanml.bundle import load_bundle
    from leanml.bundle.artifact import MODEL_ONNX, REFERENCE, reference_inputs
    from leanml.bundle.graph import graph_inputs
    from leanml.shrinking.measure import Serving, timed_call

    bundle = load_bundle(trained_flights["outcome"].bundle.path)
    rows = reference_inputs(pl.read_parquet(bundle.path / REFERENCE))
    serving = Serving(bundle.state, graph_inputs(rows, bundle.state))
    network = (bundle.path / MODEL_ONNX).read_bytes()
    outputs = timed_call(network, bundle.spec, np.zeros((1, 1), np.float32), serving)(3)()
    assert list(outputs) == bundle.pipeline.output_names  # every output of the served graph
    assert all(len(o) == 3 for o in outputs.values())
    bare = timed_call(network, bundle.spec, np.zeros((5, len(bundle.state.feature_names)), np.float32), None)
    assert bare(2)().shape == (2, 1)
