"""Train throughput: leanml's trainer vs a minimal hand-written PyTorch loop vs a naive per-row DataLoader.

All three train the same model (built from the same spec and seed) with the same optimizer, batch size
and epochs on the same prepared training split (SPEC §4: leanml should reach ≥ 0.9× the minimal loop).

* leanml: ``train_model`` — its epoch time includes what the minimal loop does not do: evaluating the
  validation split and writing a checkpoint after every epoch. End-to-end time (loading the splits,
  test metrics, saving the model) is printed too.
* minimal: the loop one writes by hand over preloaded tensors — ``randperm``, index, forward, loss,
  backward, step.
* naive: a ``torch.utils.data.Dataset`` returning one row at a time, batched by ``DataLoader``.

Run: ``.venv/bin/python bench/train.py`` (options: ``--rows --epochs --repeats --threads --device``).
Each contender runs ``--repeats`` times, interleaved; the best run counts (least disturbed by other load).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from leanml.config import Config, parse_config
from leanml.data.prepare import prepare
from leanml.data.state import PreprocessState
from leanml.data.synthetic import SyntheticSpec, write_synthetic
from leanml.models import build_model, model_spec
from leanml.training import train_model
from leanml.training.batching import load_split
from leanml.training.optimizer import make_optimizer

MODEL = {"arch": "mlp", "hidden": [256, 128], "dropout": 0.1}


def main() -> None:
    """Prepare the synthetic data, run each trainer, print samples/s and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-epochs", type=int, default=1, help="the naive loader is slow: fewer epochs")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--workdir", default=None, help="where data and outputs go (default: a temp folder)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.workdir:
        run(args, Path(args.workdir))
        return
    with tempfile.TemporaryDirectory(prefix="leanml-bench-train-") as workdir:
        run(args, Path(workdir))


def run(args: argparse.Namespace, workdir: Path) -> None:
    """Run the benchmark with its data and outputs in ``workdir``."""
    config = _config(workdir, args)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {args.device}"
    )
    started = time.perf_counter()
    write_synthetic(SyntheticSpec(rows=args.rows), workdir / "synthetic.parquet")
    prepare(config, out_dir=workdir / "prepared")
    print(f"data: {args.rows:,} synthetic rows prepared in {time.perf_counter() - started:.1f}s")

    state = PreprocessState.load(workdir / "prepared" / "preprocess.json")
    x, y = load_split(workdir / "prepared" / "train.parquet", state.feature_names, state.target.task)
    device = torch.device(args.device)
    x, y = x.to(device), y.to(device)
    spec = model_spec(config.model, len(state.feature_names), state.target.task, len(state.target.classes))
    print(
        f"train split: {len(x):,} rows × {x.shape[1]} features; model {MODEL}, {_parameters(spec):,} "
        f"parameters; adamw, batch {args.batch_size}, {args.epochs} epochs\n"
    )

    results: dict[str, list[float]] = {"leanml": [], "leanml end-to-end": [], "minimal": [], "naive": []}
    minimal_loop(x[:4096], y[:4096], config, spec, 1)  # warm-up: first-use costs (allocator, lazy imports)
    for repeat in range(args.repeats):
        out = workdir / f"train-{repeat}"
        wall = time.perf_counter()
        result = train_model(config, workdir / "prepared", out, plots=False)
        wall = time.perf_counter() - wall
        results["leanml"].append(sum(record["seconds"] for record in result.history))
        results["leanml end-to-end"].append(wall)
        results["minimal"].append(minimal_loop(x, y, config, spec, args.epochs))
        if repeat == 0:
            results["naive"].append(naive_loop(x.cpu(), y.cpu(), config, spec, args.naive_epochs, device))

    samples = len(x) * args.epochs
    best = {name: min(times) for name, times in results.items() if times}
    rates = {
        name: (len(x) * args.naive_epochs if name == "naive" else samples) / seconds
        for name, seconds in best.items()
    }
    print(f"{'trainer':<20}{'best s':>10}{'samples/s':>14}{'vs minimal':>12}")
    for name, rate in rates.items():
        print(f"{name:<20}{best[name]:>10.2f}{rate:>14,.0f}{rate / rates['minimal']:>11.2f}×")


def minimal_loop(
    x: torch.Tensor, y: torch.Tensor, config: Config, spec: dict[str, Any], epochs: int
) -> float:
    """The hand-written loop over preloaded tensors; returns its seconds."""
    torch.manual_seed(config.train.seed)
    model = build_model(spec).to(x.device)
    optimizer = make_optimizer(config.train, model)
    batch_size = config.train.batch_size
    _sync(x.device)
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), device=x.device)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = F.binary_cross_entropy_with_logits(model(x[index])[:, 0], y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    _sync(x.device)
    return time.perf_counter() - started


class RowDataset(torch.utils.data.Dataset):
    """The naive way: one row per ``__getitem__``, collated into batches by the DataLoader."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x.numpy(), y.numpy()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.tensor(self.x[i]), torch.tensor(self.y[i])


def naive_loop(
    x: torch.Tensor, y: torch.Tensor, config: Config, spec: dict[str, Any], epochs: int, device: torch.device
) -> float:
    """The same training through a per-row Dataset and DataLoader; returns its seconds."""
    torch.manual_seed(config.train.seed)
    model = build_model(spec).to(device)
    optimizer = make_optimizer(config.train, model)
    loader = torch.utils.data.DataLoader(RowDataset(x, y), batch_size=config.train.batch_size, shuffle=True)
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            loss = F.binary_cross_entropy_with_logits(model(xb)[:, 0], yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    _sync(device)
    return time.perf_counter() - started


def _config(workdir: Path, args: argparse.Namespace) -> Config:
    spec = SyntheticSpec(rows=args.rows)
    columns: dict[str, Any] = {f"num_{i}": {"type": "numeric"} for i in range(spec.numeric)}
    columns |= {f"cat_{i}": {"type": "categorical"} for i in range(spec.categorical)}
    columns["event_time"] = {"type": "datetime"}
    return parse_config(
        {
            "name": "bench-train",
            "data": {"train": str(workdir / "synthetic.parquet")},
            "target": "label",
            "columns": columns,
            "model": MODEL,
            "train": {
                "optimizer": "adamw",
                "lr": 1e-3,
                "batch_size": args.batch_size,
                "epochs": args.epochs,
                "device": args.device,
            },
        }
    )


def _parameters(spec: dict[str, Any]) -> int:
    return sum(p.numel() for p in build_model(spec).parameters())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
