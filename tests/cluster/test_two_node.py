"""A two-node Ray cluster on this machine (``ray start --head`` plus a second ``ray start --address``):
one training worker is killed mid-run and the run finishes from its last checkpoint."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from leanml.config import parse_config
from leanml.data.prepare import prepare

RAY = Path(sys.executable).with_name("ray")
LEANML = Path(sys.executable).with_name("leanml")


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def our_processes(temp_dir: str, port: str = "") -> list[psutil.Process]:
    """The cluster's daemons (their command lines name its temp dir, or its head's port, as the Ray
    Client server's does) and all their descendants."""
    found: dict[int, psutil.Process] = {}
    marks = [temp_dir] + ([f":{port}"] if port else [])
    for process in psutil.process_iter(["cmdline"]):
        if process.pid != os.getpid() and any(
            mark in part for part in process.info["cmdline"] or [] for mark in marks
        ):
            found[process.pid] = process
            for child in process.children(recursive=True):
                found[child.pid] = child
    return list(found.values())


@pytest.fixture
def two_nodes() -> Iterator[tuple[str, str]]:
    """A head node and a second node, one CPU each: the address and the temp dir naming their processes.

    Torn down by killing exactly these processes: ``ray stop`` would stop every Ray on the machine.
    """
    if not RAY.exists():
        pytest.skip("the ray command is not installed")
    temp_dir = tempfile.mkdtemp(prefix="lray-", dir="/tmp")  # short: Ray's socket paths are limited
    address = f"127.0.0.1:{free_port()}"
    # Ray's token authentication explicitly off on every node (unset, a head turns it on when
    # ~/.ray/auth_token exists, and a joining node does not follow).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run(
            [RAY, "start", "--head", f"--port={address.split(':')[1]}", f"--temp-dir={temp_dir}",
             "--include-dashboard=false", f"--ray-client-server-port={free_port()}", *common],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        subprocess.run(
            [RAY, "start", f"--address={address}", '--resources={"second_node": 1}', *common],
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        yield address, temp_dir
    finally:
        processes = our_processes(temp_dir, address.split(":")[1])
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(processes, timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def train_workers(temp_dir: str) -> list[psutil.Process]:
    """The live Ray Train worker processes of the cluster."""
    workers = []
    for process in our_processes(temp_dir):
        try:
            if "RayTrainWorker" in " ".join(process.cmdline()):
                workers.append(process)
        except psutil.NoSuchProcess:
            pass
    return workers


def registered_checkpoints(storage: Path) -> int:
    """Checkpoints Ray Train has registered for the run (a folder alone may still be in upload)."""
    for snapshot in storage.glob("*/checkpoint_manager_snapshot.json"):
        try:
            return len(json.loads(snapshot.read_text())["checkpoint_results"])
        except (ValueError, KeyError):
            return 0  # being written
    return 0


def test_a_lost_worker_resumes_from_the_last_checkpoint(
    two_nodes: tuple[str, str], shards: Path, tmp_path: Path
) -> None:
    address, temp_dir = two_nodes
    storage = tmp_path / "ray"
    config = {
        "name": "twonode",
        "data": {"train": str(shards / "part-*.csv")},
        "target": "label",
        "columns": {
            "num_0": {"type": "numeric", "scale": "robust"},
            "num_1": {"type": "numeric", "impute": "mean"},
            "cat_0": {"type": "categorical", "min_frequency": 20},
            "event_time": {"type": "datetime", "parts": ["hour"]},
        },
        "workdir": str(tmp_path / "runs"),
        "store": str(tmp_path / "models"),
        "model": {"arch": "mlp", "hidden": [16]},
        "train": {"epochs": 5, "batch_size": 128},
        "ray": {"num_workers": 2, "cpus_per_worker": 1, "max_failures": 2, "storage": str(storage)},
    }
    path = tmp_path / "leanml.yaml"
    path.write_text(yaml.safe_dump(config))
    prepare(parse_config(config))  # here: the driver below then finds the prepared splits fresh

    driver = subprocess.Popen(
        [LEANML, "train", str(path), "--ray", address],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and driver.poll() is None and time.monotonic() < deadline:
        # Ray Train has registered the first checkpoint: kill a worker while later epochs run.
        workers = train_workers(temp_dir) if registered_checkpoints(storage) else []
        if len(workers) == 2:
            killed = workers[-1].pid
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    output, _ = driver.communicate(timeout=300)
    assert killed is not None, f"no worker to kill before the run ended:\n{output}"
    assert driver.returncode == 0, output
    assert "a worker was lost 1 time(s); the run went on from the checkpoint of epoch" in output, output
    events = [
        json.loads(line) for line in next(storage.glob("*/leanml-events.jsonl")).read_text().splitlines()
    ]
    assert len(events) == 1 and 1 <= events[0]["epoch"] < 5
    assert list((tmp_path / "models" / "twonode").glob("v*/pipeline.onnx")), "the model was bundled"
    metrics = json.loads((tmp_path / "runs" / "twonode" / "train" / "metrics.json").read_text())
    assert len(metrics["history"]) == 5, "every epoch is in the finished run's history"
