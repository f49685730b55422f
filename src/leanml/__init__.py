"""leanml: from a raw table to a small, fast, served model.

The Python API mirrors the command line::

    import leanml
    result = leanml.prepare("leanml.yaml")        # leanml prepare
    trained = leanml.train("leanml.yaml")         # leanml train (prepares first when needed)
    shrunk = leanml.shrink("models/flights")      # leanml shrink: a smaller version within a budget
    model = leanml.load("models/flights")         # production version, else latest
    model.predict(frame)                          # same preprocessing as training

Heavy dependencies (PyTorch, ONNX Runtime) are imported on first use, not on ``import leanml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from leanml._version import __version__

if TYPE_CHECKING:
    from leanml.bundle import Bundle
    from leanml.config import Config
    from leanml.data.prepare import PrepareResult
    from leanml.shrinking import ShrinkResult
    from leanml.training.stage import TrainOutcome
    from leanml.tuning import TuneResult


def _config(config: Config | str | Path) -> Config:
    from leanml.config import Config, load_config

    return config if isinstance(config, Config) else load_config(config)


def prepare(config: Config | str | Path, **kwargs: Any) -> PrepareResult:
    """Run the prepare stage (see :func:`leanml.data.prepare.prepare`)."""
    from leanml.data.prepare import prepare as run

    return run(_config(config), **kwargs)


def train(config: Config | str | Path, **kwargs: Any) -> TrainOutcome:
    """Train and bundle a model into the store (see :func:`leanml.training.stage.train_and_bundle`)."""
    from leanml.training.stage import train_and_bundle

    return train_and_bundle(_config(config), **kwargs)


def tune(
    config: Config | str | Path,
    resume: bool = False,
    sampler: str | None = None,
    trials: int | None = None,
    jobs: int | None = None,
    timeout_s: float | None = None,
    **kwargs: Any,
) -> TuneResult:
    """Search hyperparameters, write best.yaml and bundle the best model (see :func:`leanml.tuning.run_tune`).

    ``sampler``, ``trials``, ``jobs`` and ``timeout_s`` replace the config's ``tune`` settings. With
    ``jobs`` > 1, call it under ``if __name__ == "__main__":`` in a script: worker processes import it.
    """
    from leanml.tuning import run_tune, tune_options

    cfg = tune_options(_config(config), sampler=sampler, trials=trials, jobs=jobs, timeout_s=timeout_s)
    return run_tune(cfg, resume=resume, **kwargs)


def shrink(
    reference: str | Path,
    config: Config | str | Path | None = None,
    max_metric_drop: float | None = None,
    target_latency_us: float | None = None,
    target_size_kb: float | None = None,
    methods: list[str] | None = None,
    **kwargs: Any,
) -> ShrinkResult:
    """Shrink a stored model within a metric budget (see :func:`leanml.shrinking.run_shrink`).

    ``config`` defaults to the config bundled with the model; the keyword settings replace its ``shrink``
    ones. The result's ``bundle`` is the new version, or ``None`` with ``reason`` when nothing was written.
    """
    from leanml.shrinking import shrink_reference

    return shrink_reference(
        reference,
        config,
        max_metric_drop=max_metric_drop,
        target_latency_us=target_latency_us,
        target_size_kb=target_size_kb,
        methods=methods,
        **kwargs,
    )


def load(reference: str | Path, runtime: str = "onnx") -> Bundle:
    """Load a verified bundle: a bundle folder, ``STORE/NAME`` or ``STORE/NAME@VERSION``."""
    from leanml.bundle import load as load_reference

    return load_reference(str(reference), runtime=runtime)


__all__ = ["__version__", "load", "prepare", "shrink", "train", "tune"]
