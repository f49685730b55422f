"""Connecting to a Ray cluster, and the storage every node of it must reach.

``connect`` is the one place that calls ``ray.init``: ``local`` starts an in-process cluster sized to this
machine, ``auto`` joins the cluster started with ``ray start`` on this node, ``ray://HOST:PORT`` connects
through Ray Client. A cluster that cannot be reached is one line, not a traceback from the driver.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from leanml.config import Config, RayConfig
from leanml.errors import LeanMLError


class ClusterError(LeanMLError):
    """A problem with the Ray cluster or its storage, said in one line."""


@dataclass(frozen=True)
class Cluster:
    """A connected cluster: how wide to run and where shared files go."""

    settings: RayConfig
    storage: Path
    nodes: int

    @property
    def workers(self) -> int:
        """Ray Train workers, concurrent trials and data tasks per wave."""
        return self.settings.num_workers

    @property
    def cpus(self) -> float:
        """CPUs reserved per worker or task."""
        return self.settings.cpus_per_worker


def settings(config: Config | None, address: str | None) -> RayConfig:
    """The config's ``ray`` section (defaults without a config) with ``--ray ADDRESS`` as its address."""
    ray_config = config.ray if config is not None else RayConfig()
    if address:
        ray_config = ray_config.model_copy(update={"address": address})
    if not ray_config.address:
        raise ClusterError(
            "no Ray address: pass --ray ADDRESS (auto, local or ray://HOST:PORT) or set ray.address"
        )
    return ray_config


def connect(config: Config | None, address: str | None = None, storage: Path | None = None) -> Cluster:
    """Connect to (or start) the cluster ``--ray ADDRESS`` or ``ray.address`` names; check its storage
    (``ray.storage``, else ``storage``, else ``WORKDIR/NAME/ray``)."""
    ray_config = settings(config, address)
    default = storage if storage is not None or config is None else config.stage_dir("ray")
    storage = Path(ray_config.storage or default or ".leanml-ray").absolute()
    storage.mkdir(parents=True, exist_ok=True)
    if not ray.is_initialized():
        target = ray_config.address
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            if target == "local":
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=target, log_to_driver=False)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ClusterError(f"Ray cluster '{target}' cannot be reached: {first}") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cluster = Cluster(settings=ray_config, storage=storage, nodes=len(nodes))
    check_shared_storage(cluster)
    return cluster


def check_shared_storage(cluster: Cluster) -> None:
    """Refuse a multi-node cluster whose storage path is not visible from every node.

    Each node writes a marker file in the storage folder; the driver must see them all. A single node
    always passes (a local folder is shared with itself).
    """
    if cluster.nodes <= 1:
        return
    marker_dir = cluster.storage / ".nodes"
    marker_dir.mkdir(parents=True, exist_ok=True)
    expected = {str(n["NodeID"]) for n in ray.nodes() if n.get("Alive")}
    tasks = [
        _touch_marker.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            num_cpus=0,
        ).remote(str(marker_dir), node)
        for node in sorted(expected)
    ]
    try:
        ray.get(tasks, timeout=60)
    except Exception as exc:  # a node that cannot write there at all
        raise ClusterError(_not_shared(cluster.storage, str(exc).splitlines()[0])) from None
    seen = {p.name for p in marker_dir.iterdir()}
    if not expected <= seen:
        raise ClusterError(_not_shared(cluster.storage, f"{len(expected - seen)} node(s) write elsewhere"))


def _not_shared(storage: Path, detail: str) -> str:
    return (
        f"ray.storage '{storage}' is not shared by every node of the cluster ({detail}): "
        "use a folder on a shared file system (NFS) mounted at the same path everywhere"
    )


@ray.remote
def _touch_marker(folder: str, node: str) -> None:
    os.makedirs(folder, exist_ok=True)
    Path(folder, node).touch()
