"""Synthetic rows for distillation: the same fixed students with and without them, on the same teachers.

For every table under ``--workdir`` (what ``bench/quality.py --workdir DIR`` leaves:
``TABLE/*/models/bench/v1`` is the default teacher, trained on the 80 % of a seeded split), this
distils each ``--students`` size with each ``--kinds`` of synthetic rows (``shrink.distill.synthetic``;
everything else at its default, the student fixed so that the kinds are compared on the same network)
and reports, per student:

* the validation drop against the teacher and its bootstrap standard error (what ``shrink`` judges a
  student by: a student that follows its teacher closely has a small error);
* the drop on the test rows (the other 20 %, which neither the teacher nor the student saw), through the
  serving graph as ``bench/quality.py`` scores them.

Drops are points of AUC / accuracy, or the share of RMSE; + is worse.

    .venv/bin/python bench/quality.py --datasets churn,loans --students --workdir /tmp/q   # the teachers
    .venv/bin/python bench/synthetic.py --workdir /tmp/q --datasets churn,loans --students 8,32-16,128-64

Each student takes 5–30 s on two cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import quality
from leanml.config import parse_config
from leanml.shrinking import run_shrink


def distil(teacher: Path, hidden: list[int], kind: str) -> tuple[Path, dict[str, Any], float]:
    """Distil ``teacher`` into one fixed student with ``kind`` of synthetic rows; kept whatever its drop
    (a budget of 100 %, the standard error still computed). Returns the new bundle, its shrink record
    and the seconds it took."""
    raw = json.loads((teacher / "config.json").read_text())
    shrink = raw.setdefault("shrink", {})
    shrink.update({"methods": ["distill"], "max_metric_drop": 1.0, "margin_se": 1e-9})
    shrink["distill"] = {**shrink.get("distill", {}), "student": hidden, "synthetic": kind}
    config = parse_config(raw, base_dir=teacher.parents[2])
    started = time.perf_counter()
    result = run_shrink(teacher, config)
    seconds = time.perf_counter() - started
    if result.bundle is None:
        raise SystemExit(f"{teacher}: shrink wrote no student: {result.reason}")
    record = json.loads((result.bundle.path / "shrink.json").read_text())["final"]
    return result.bundle.path, record, seconds


def main() -> None:
    """Distil every student of every table with every kind; print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="bench/quality.py's --workdir")
    parser.add_argument("--datasets", required=True, help="comma-separated tables under --workdir")
    parser.add_argument("--students", default="8,32-16,128-64", help="hidden widths, e.g. 8,32-16")
    parser.add_argument("--kinds", default="none,munge", help="shrink.distill.synthetic values")
    parser.add_argument("--data", type=Path, default=Path(".qdata"), help="bench/quality.py's --data")
    parser.add_argument("--max-rows", type=int, default=400_000, help="bench/quality.py's --max-rows")
    parser.add_argument("--seed", type=int, default=0, help="bench/quality.py's split seed")
    args = parser.parse_args()
    students = [[int(width) for width in text.split("-")] for text in args.students.split(",")]
    print("| table | rows learnt from | student | synthetic | validation drop ± SE | test drop | s |")
    print("|---|---:|---|---|---:|---:|---:|")
    for name in args.datasets.split(","):
        teacher = next(args.workdir.glob(f"{name}/*/models/bench")) / "v1"
        dataset = quality.load_dataset(name, args.data if args.data.is_dir() else None)
        _, test = quality.split(dataset, args.max_rows, args.seed)
        parent = quality.score_bundle(dataset, test, teacher, 0.0)[0].metric
        for hidden in students:
            for kind in args.kinds.split(","):
                path, record, seconds = distil(teacher, hidden, kind)
                metric = quality.score_bundle(dataset, test, path, seconds)[0].metric
                drop = metric / parent - 1 if dataset.task == "regression" else parent - metric
                rows = record["why"].split("; ", 1)[-1].rstrip(")")  # "N training rows + M munge rows"
                print(
                    f"| {name} | {rows} | mlp {hidden} | {kind} | {record['drop']:+.4f} ± "
                    f"{record['drop_se']:.4f} | {drop:+.4f} | {seconds:.0f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
