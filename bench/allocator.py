"""Training steps with glibc's default allocator settings vs ``steady_allocator()``, side by side.

Each measurement runs in a fresh interpreter (``mallopt`` cannot be undone in a process): one torch thread,
``--steps`` optimizer steps (the first 50 left out) of AdamW on random rows, the two settings alternating
for ``--rounds`` rounds. Models: what ``leanml init`` writes (MLP 3 × 256 with periodic embeddings of 14 of
53 features, as bench/ray.py's table, batch 1024) and bench/ray.py's small MLP (256-128, batch 512).
Prints ms per step (mean, p10, p50, p90) and the ratio of the means.

    .venv/bin/python bench/allocator.py [--steps 400] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

FEATURES, EMBEDDED = 53, 14
CASES = {
    "init model, batch 1024": (
        {"arch": "mlp", "hidden": [256, 256, 256], "dropout": 0.1, "embedding": "periodic"},
        1024,
    ),
    "small MLP, batch 512": ({"arch": "mlp", "hidden": [256, 128], "dropout": 0.1}, 512),
}


def measure(case: str, steps: int, steady: bool) -> list[float]:
    """Seconds of each step of ``case`` in this process (run by :func:`main` in a fresh one)."""
    import torch

    from leanml.config import ModelConfig
    from leanml.models.registry import build_model, model_spec
    from leanml.training.allocator import steady_allocator

    if steady and not steady_allocator():
        raise SystemExit("this C library is not glibc: nothing to compare")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    section, batch = CASES[case]
    config = ModelConfig.model_validate(section)
    model = build_model(model_spec(config, FEATURES, "binary", numeric_features=list(range(EMBEDDED))))
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    x, y = torch.randn(100_000, FEATURES), (torch.rand(100_000) > 0.5).float()
    times = []
    for step in range(steps):
        start = (step * batch) % (len(x) - batch)
        began = time.perf_counter()
        optimizer.zero_grad()
        logits = model(x[start : start + batch]).reshape(-1)
        torch.nn.functional.binary_cross_entropy_with_logits(logits, y[start : start + batch]).backward()
        optimizer.step()
        times.append(time.perf_counter() - began)
    return times[50:]


def run(case: str, steps: int, steady: bool) -> list[float]:
    """:func:`measure` in a fresh interpreter."""
    command = [sys.executable, __file__, "--measure", case, "--steps", str(steps)]
    out = subprocess.run(
        command + (["--steady"] if steady else []), capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Alternate the two settings per case and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steady", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.steps, args.steady)))
        return
    print("| case | allocator | ms/step mean | p10 | p50 | p90 | vs glibc defaults |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for case in CASES:
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for steady in (False, True):
                times[steady] += run(case, args.steps, steady)
        means = {steady: statistics.fmean(values) * 1e3 for steady, values in times.items()}
        for steady, values in times.items():
            p10, p50, p90 = (q * 1e3 for q in statistics.quantiles(values, n=10)[::4][:3])
            label = "`steady_allocator()`" if steady else "glibc defaults"
            print(
                f"| {case} | {label} | {means[steady]:.2f} | {p10:.2f} | {p50:.2f} | {p90:.2f} | "
                f"{means[False] / means[steady]:.2f}× |",
                flush=True,
            )


if __name__ == "__main__":
    main()
