"""The shrink stage: a smaller, faster model under a quality budget, with the evidence.

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

import json
import math
from pathlib import Path

import polars as pl
from rich.console import Console

from leanml.bundle import BundleInputs, BundleRef, ModelStore, load_bundle, resolve_reference
from leanml.bundle.artifact import CONFIG, MODEL_ONNX, PREPROCESS, REFERENCE, Bundle, reference_inputs
from leanml.bundle.graph import graph_inputs
from leanml.bundle.store import VERSION_RE
from leanml.config import Config, ShrinkConfig, apply_overrides, load_config, parse_config, with_section
from leanml.data.prepare import ensure_prepared
from leanml.data.prepared import PreparedData
from leanml.errors import ConfigError, LeanMLError, StateError
from leanml.metrics import MAIN_METRIC, check_metric
from leanml.progress import Steps
from leanml.shrinking.finetune import ShrinkData
from leanml.shrinking.measure import Serving, side_by_side
from leanml.shrinking.quantize import is_int8
from leanml.shrinking.report import write_reports
from leanml.shrinking.results import Budget, ShrinkResult, shrink_summary
from leanml.shrinking.steps import ShrinkRun, describe, test_metrics, unmet
from leanml.shrinking.synth import Synthesis
from leanml.tracking import log_shrunk, tracked_run

SHRINK_JSON = "shrink.json"


class ShrinkError(LeanMLError):
    """Shrinking cannot start (e.g. the prepared data does not match the parent's preprocessing)."""


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
    check_metric(task, metric, "shrink.metric")
    with steps.step("loading the prepared splits and the teacher's outputs"):
        data = ShrinkData(
            prepared,
            parent.state,
            parent.model,
            sc.distill.batch_size,
            cfg.train.memory_budget_mb,
            _synthesis(sc),
        )
    if len(data.validation.target) == 0:
        raise ConfigError(
            "invalid config:\n  data.split.validation: shrinking measures every step on the validation "
            "split, which is empty"
        )
    reference = reference_inputs(pl.read_parquet(parent.path / REFERENCE))
    serving = Serving(parent.state, graph_inputs(reference, parent.state))
    run = ShrinkRun(cfg, data, metric, console, steps, serving)

    with steps.step("measuring the parent"):
        teacher_onnx = (parent.path / MODEL_ONNX).read_bytes()
        current = run.candidate(parent.model, parent.spec, describe(parent.spec), teacher_onnx)
    run.budget = Budget(metric, current.measurement.metrics[metric], sc.max_metric_drop, sc.margin_se)
    run.parent_predictions = current.predictions
    run.record("parent", current, "parent", f"{ref.name} {ref.version}")
    parent_candidate = current

    unverifiable = _unverifiable(metric, len(data.validation.target), sc.max_metric_drop)
    for method, step in (("distill", run.distill), ("prune", run.prune), ("quantize", run.quantize)):
        if method in sc.methods and unverifiable is None:
            current = step(current)

    test = {
        "parent": test_metrics(parent_candidate, data),
        "final": test_metrics(current, data),
    }
    reason = unverifiable or unmet(current, parent_candidate, run)
    final = next(r for r in reversed(run.records) if r.decision in ("kept", "parent"))
    folder = cfg.stage_dir("shrink")
    result = ShrinkResult(ref, metric, run.budget, run.records, final, test, folder, reason=reason)
    if current is not parent_candidate:  # the headline speed-up: both graphs timed side by side
        parent_us, final_us = side_by_side(
            [parent_candidate.onnx, current.onnx],
            data.validation.features,
            sc.latency_runs,
            spec=current.spec,
            serving=serving,
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
                reference_rows=reference,
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


def _unverifiable(metric: str, rows: int, max_drop: float) -> str | None:
    """Why no student can be judged, when one validation row moves ``metric`` by more than the budget
    (accuracy: ``1 / rows``): a student kept there could be any number of rows worse."""
    if metric != "accuracy" or rows * max_drop >= 1:
        return None
    return (
        f"one of the {rows} validation rows moves accuracy by {1 / rows:.4f}, more than "
        f"shrink.max_metric_drop ({max_drop:g}): no student can be verified inside the budget; raise "
        f"data.split.validation (at least {math.ceil(1 / max_drop)} rows) or shrink.max_metric_drop"
    )


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


def shrink_reference(
    reference: str | Path,
    config: Config | str | Path | None = None,
    overrides: list[str] | None = None,
    max_metric_drop: float | None = None,
    target_latency_us: float | None = None,
    target_size_kb: float | None = None,
    methods: list[str] | None = None,
    console: Console | None = None,
) -> ShrinkResult:
    """Resolve ``reference``, choose its config, apply the given settings and run :func:`run_shrink`.

    The one path of ``leanml shrink`` and :func:`leanml.shrink`: ``config`` (a :class:`Config` or a YAML
    path, with ``KEY=VALUE`` ``overrides``) defaults to the config bundled with the model; the keyword
    settings replace its ``shrink`` ones.
    """
    ref = resolve_reference(str(reference))
    if isinstance(config, Config):
        cfg = config
        if overrides:
            cfg = parse_config(apply_overrides(config.model_dump(mode="json"), overrides))
    elif config is not None:
        cfg = load_config(config, overrides)
    else:
        cfg = bundled_config(ref.path, overrides)
    cfg = shrink_options(cfg, max_metric_drop, target_latency_us, target_size_kb, methods)
    with tracked_run(cfg, "shrink") as tracker:  # tracking.mlflow: one run, every step's figures
        result = run_shrink(ref.path, cfg, console=console)
        log_shrunk(tracker, result)
    return result


def _check_same_preprocessing(parent: Bundle, prepared: PreparedData) -> None:
    ours = json.loads((parent.path / PREPROCESS).read_text())
    theirs = json.loads(prepared.state_path.read_text())
    if ours != theirs:
        raise StateError(
            f"the prepared data in '{prepared.folder}' was not made with the preprocessing of this bundle "
            "(the data or the config changed since it was trained); train a new parent, or pass the config "
            "it was trained with"
        )


def _store_of(ref: BundleRef, config: Config) -> ModelStore:
    """The store the parent lives in (``STORE/NAME/vN``), else the config's store."""
    if VERSION_RE.match(ref.path.name) and ref.path.parent.name == ref.name:
        return ModelStore(ref.path.parent.parent)
    return ModelStore(config.store)


def _synthesis(shrink: ShrinkConfig) -> Synthesis | None:
    """The synthetic rows ``shrink.distill`` asks for; ``None`` without distillation or with ``none``.
    ``auto`` is ``munge`` for a training split of at most ``synthetic_auto_rows`` rows."""
    d = shrink.distill
    if "distill" not in shrink.methods or d.synthetic == "none":
        return None
    auto = d.synthetic == "auto"
    return Synthesis(
        "munge" if auto else d.synthetic,
        d.synthetic_factor,
        shrink.seed,
        d.munge_p,
        d.munge_s,
        d.mixup_alpha,
        d.synthetic_max_rows,
        d.synthetic_auto_rows if auto else None,
    )
