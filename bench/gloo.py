"""The gloo all-reduce that every two-worker training step waits for, alone: two processes on this machine.

Ray Train's DDP workers all-reduce their gradients (``bench/ray.py``'s MLP 256-128: 46,849 float32, 183 KiB)
once per step. This times ``torch.distributed.all_reduce`` of that many floats, and of half as many,
between two one-thread processes over gloo on 127.0.0.1, with nothing else to do: median and mean ms per
call over ``--calls`` calls. A mean far above the median is the scheduler: a call waits whenever either
process is off its core.

    .venv/bin/python bench/gloo.py [--calls 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PARAMETERS = 46_849
"""bench/ray.py's training model: 53 features → 256 → 128 → 1."""


def worker(rank: int, size: int, calls: int, port: int, results: mp.SimpleQueue) -> None:
    """One of the two ranks: warm up, then time ``calls`` all-reduces; rank 0 reports."""
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    tensor = torch.randn(size)
    for _ in range(50):
        dist.all_reduce(tensor)
    dist.barrier()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        dist.all_reduce(tensor)
        times.append(time.perf_counter() - started)
    if rank == 0:
        results.put((statistics.median(times) * 1e3, statistics.mean(times) * 1e3))
    dist.destroy_process_group()


def main() -> None:
    """Time both sizes and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--port", type=int, default=29511)
    args = parser.parse_args()
    results = mp.get_context("spawn").SimpleQueue()
    print("| floats | KiB | median ms | mean ms |")
    print("|---:|---:|---:|---:|")
    for size in (PARAMETERS, PARAMETERS // 2):
        arguments = (size, args.calls, args.port, results)
        mp.start_processes(worker, args=arguments, nprocs=2, start_method="spawn")
        median, mean = results.get()
        print(f"| {size:,} | {size * 4 / 1024:.0f} | {median:.2f} | {mean:.2f} |", flush=True)


if __name__ == "__main__":
    main()
