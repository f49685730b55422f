"""Tuning on a Ray cluster: the local study (:mod:`leanml.tuning.study`), its trials run as Ray tasks.

The tuning process asks Optuna for every trial's values as it does locally (so sampling sees every
finished trial and a grid hands out each point once); each trial then trains in a Ray task reserving
``ray.cpus_per_worker`` CPUs, ``ray.num_workers`` at once. The task attaches to the one study, an Optuna
journal file (``JournalFileBackend``) in the study's folder ``STORAGE/tune/`` (the cluster's storage path,
which every node reaches), and reports its epochs to the pruner there; ``--resume`` continues from it.

Plain tasks rather than Ray Tune's ``OptunaSearch``: the study, its sampling, pruning and resume stay
the local code. Measured side by side (``bench/ray.py``, the same grid of 8 short trainings, 2 at once):
about 1.1 s of overhead per trial for the tasks against 4.8 s for ``Tuner`` + ``OptunaSearch`` with its
default ``reuse_actors=False`` (a fresh process per trial; ray-project/ray#46965, #11004), and the same
1.1 s with ``reuse_actors=True``. Ray Tune would buy no speed, and would put a second study loop, its own
checkpoints and its own resume beside the local ones.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

import ray
from rich.console import Console

from leanml.cluster.prepare import prepare_on_ray
from leanml.cluster.session import Cluster
from leanml.config import Config, with_section
from leanml.tuning.stage import TuneResult, run_tune

STUDY_FOLDER = "tune"
"""The study's folder under the cluster's storage path."""


class RayTasks(Executor):
    """An executor that runs each call as a Ray task reserving ``cpus`` CPUs (the study's trial pool)."""

    def __init__(self, cpus: float) -> None:
        self.cpus = cpus
        self._remote: dict[Callable[..., Any], Any] = {}

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Start ``fn(*args, **kwargs)`` as a Ray task; its result (or error) arrives in the future."""
        if fn not in self._remote:
            self._remote[fn] = ray.remote(fn)
        return self._remote[fn].options(num_cpus=self.cpus).remote(*args, **kwargs).future()


def tune_on_ray(
    config: Config,
    cluster: Cluster,
    resume: bool = False,
    console: Console | None = None,
    bundle: bool = True,
) -> TuneResult:
    """Run the tune stage with its trials as Ray tasks, ``cluster.workers`` at once; the base data is
    prepared on the cluster (trials that change the preprocessing prepare their variant in their task);
    the study, trials, reports and ``best.yaml`` go to ``STORAGE/tune/``. The best config is then bundled
    as locally."""
    config = with_section(config, "tune", {"jobs": cluster.workers})
    if console is not None:
        console.print(f"tuning on Ray: {cluster.workers} trials at once × {cluster.cpus:g} CPUs")
    return run_tune(
        config,
        resume=resume,
        console=console,
        bundle=bundle,
        executor=RayTasks(cluster.cpus),
        folder=cluster.storage / STUDY_FOLDER,
        prepare_stage=lambda cfg, out_dir, console: prepare_on_ray(cfg, cluster, out_dir, console),
    )
