"""Where the serving graph's time goes: ``pipeline.onnx`` as a bundle stores it vs as the code checked out now
compiles it, side by side in one run.

For each bundle, ONNX Runtime with one intra-op thread and the server's session options
(:func:`leanml.bundle.runtime.session_options`):

* nodes by op type, and ONNX Runtime's profile at batch 1 (kernel µs per run, per op type), of the
  preprocessing part: *stored* is cut out of the stored ``pipeline.onnx`` (its ``pre/`` nodes, from the
  column inputs to ``features``, ``problems`` and ``flags``), *now* is
  :func:`~leanml.bundle.graph.compile_preprocessing`;
* the median µs per ``session.run`` at batch 1, 64 and 1,024 of the preprocessing part and of the whole
  graph (*now*: :func:`~leanml.bundle.graph.build_pipeline` over the bundle's ``model.onnx``), and of the
  network alone on the feature rows, for scale; the contenders are timed in interleaved rounds, so a busy
  spell of a shared machine hits them alike. Both versions must give the same outputs (checked first).

The rows are the bundle's reference rows, repeated up to the batch size. The default bundles are a flights
and a diamonds teacher as ``leanml init`` configures them (``bench/shrink.py``), trained for two epochs on
20,000 rows under ``--workdir`` when absent: the graph is measured, not the model's quality. To measure a
change to the compiler, make the bundles before it and run this script after it.

Run: ``.venv/bin/python bench/graph_ops.py`` (``--bundles PATH ...`` for other bundles, ``--remake`` to
train the default ones again, ``--rounds``, ``--calls``).
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from leanml.bundle import load_bundle
from leanml.bundle.artifact import MODEL_ONNX, PIPELINE_ONNX, REFERENCE, reference_inputs
from leanml.bundle.graph import FEATURES, FLAGS, PROBLEMS, build_pipeline, compile_preprocessing, graph_inputs
from leanml.bundle.runtime import session_options

OUT = Path(__file__).parent / "out" / "graph_ops"
BATCHES = (1, 64, 1024)
ROWS = 20_000
PREFIX = "pre/"  # what the compiler names the preprocessing's nodes and constants


def ensure_bundles(workdir: Path, remake: bool) -> list[Path]:
    """A flights and a diamonds teacher (``leanml init``'s config, 2 epochs), trained once in ``workdir``."""
    import shrink  # bench/shrink.py: the tables and the teacher's config
    from leanml.config import parse_config
    from leanml.training.stage import train_and_bundle

    paths = []
    for name, make in (("flights", shrink.flights), ("diamonds", shrink.diamonds)):
        folder = workdir / name
        bundle = folder / "models" / name / "v1"
        if remake:
            shutil.rmtree(folder, ignore_errors=True)
        if not (bundle / "manifest.json").is_file():
            raw = shrink.teacher_config(make(ROWS), folder, quick=True).model_dump(mode="json")
            raw["train"]["epochs"] = 2  # one more than the warm-up
            bundle = train_and_bundle(parse_config(raw)).bundle.path
        paths.append(bundle)
    return paths


def preprocessing_of(pipeline: onnx.ModelProto) -> onnx.ModelProto:
    """The preprocessing part of a serving graph, as compiled: its nodes and constants (named ``pre/...``
    by the compiler), from the column inputs to ``features``, ``problems`` and ``flags``."""
    graph = pipeline.graph
    outputs = {o.name: o for o in graph.output}
    part = onnx.helper.make_graph(
        [node for node in graph.node if node.name.startswith(PREFIX)],
        "preprocessing",
        list(graph.input),
        [outputs[FEATURES], outputs[PROBLEMS], outputs[FLAGS]],
        initializer=[t for t in graph.initializer if t.name.startswith(PREFIX)],
    )
    model = onnx.helper.make_model(part, opset_imports=pipeline.opset_import)
    model.ir_version = pipeline.ir_version
    return model


def session(model: onnx.ModelProto | bytes, profile: str | None = None) -> ort.InferenceSession:
    """A session as the server makes it (one intra-op thread), profiling into ``profile`` if given."""
    options = session_options(1)
    if profile is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def op_profile(model: onnx.ModelProto, feed: dict[str, np.ndarray], runs: int = 500) -> dict[str, float]:
    """Kernel µs per run, per op type, from ONNX Runtime's profiler at the feed's batch size."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(model, profile=str(Path(tmp) / "profile"))
        for _ in range(runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = collections.defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / runs
    return dict(per_op)


def timed(call: Callable[[], object], calls: int) -> float:
    """Median µs of one call over ``calls`` calls."""
    times = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - started)
    return statistics.median(times) / 1000.0


def check_same(stored: ort.InferenceSession, now: ort.InferenceSession, feed: dict[str, np.ndarray]) -> None:
    """The two graphs' outputs, by name, must be equal (bit for bit)."""
    names = [o.name for o in stored.get_outputs()]
    assert sorted(names) == sorted(o.name for o in now.get_outputs()), "the outputs differ"
    for name, a, b in zip(names, stored.run(names, feed), now.run(names, feed), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"output {name!r}")


def bench_one(path: Path, rounds: int, calls_at_batch_1: int) -> None:
    """Print node counts, the op profile and the latency table of one bundle."""
    bundle = load_bundle(path, threads=1)
    state = bundle.state
    stored_pipeline = onnx.load(str(path / PIPELINE_ONNX))
    inputs = [c.name for c in state.columns]
    graphs = {
        "pre stored": preprocessing_of(stored_pipeline),
        "pre now": compile_preprocessing(state),
        "pipeline stored": stored_pipeline,
        "pipeline now": build_pipeline(state, path / MODEL_ONNX, bundle.spec),
    }
    rows = reference_inputs(pl.read_parquet(path / REFERENCE))
    feeds = {}
    for batch in BATCHES:
        repeated = rows[np.arange(batch) % rows.height]
        feeds[batch] = graph_inputs(repeated, state)
    sessions = {key: session(graph) for key, graph in graphs.items()}
    for batch in BATCHES:
        check_same(sessions["pre stored"], sessions["pre now"], feeds[batch])
        check_same(sessions["pipeline stored"], sessions["pipeline now"], feeds[batch])
    network = session((path / MODEL_ONNX).read_bytes())
    matrices = {b: sessions["pre now"].run([FEATURES], feeds[b])[0] for b in BATCHES}

    print(f"\n## {path}: {len(inputs)} input columns, {len(state.feature_names)} features")
    print_ops(graphs["pre stored"], graphs["pre now"], feeds[1])
    for key in ("pipeline stored", "pipeline now"):
        size = len(graphs[key].SerializeToString()) / 1024
        print(f"{key}: {len(graphs[key].graph.node)} nodes, {size:.0f} KB")

    calls: dict[tuple[str, int], Callable[[], object]] = {}
    for batch in BATCHES:
        for key, sess in sessions.items():
            calls[key, batch] = lambda s=sess, f=feeds[batch]: s.run(None, f)
        calls["network", batch] = lambda m=matrices[batch]: network.run(None, {FEATURES: m})
    print_latency(calls, rounds, calls_at_batch_1)


def print_ops(stored: onnx.ModelProto, now: onnx.ModelProto, feed: dict[str, np.ndarray]) -> None:
    """Nodes and profiled kernel µs per op type of two preprocessing graphs."""
    stored_ops = collections.Counter(n.op_type for n in stored.graph.node)
    now_ops = collections.Counter(n.op_type for n in now.graph.node)
    stored_us, now_us = op_profile(stored, feed), op_profile(now, feed)
    print("\npreprocessing at batch 1, by op type (the profiler's µs per run include its own overhead)")
    print(f"{'op':<16}{'stored nodes':>14}{'stored µs':>11}{'now nodes':>11}{'now µs':>9}")
    rows = [
        (op, stored_ops[op], stored_us.get(op, 0.0), now_ops[op], now_us.get(op, 0.0))
        for op in stored_ops | now_ops
    ]
    rows.sort(key=lambda row: -(row[2] + row[4]))
    totals = (
        "total",
        sum(stored_ops.values()),
        sum(stored_us.values()),
        sum(now_ops.values()),
        sum(now_us.values()),
    )
    for op, stored_n, stored_t, now_n, now_t in [*rows, totals]:
        print(f"{op:<16}{stored_n:>14}{stored_t:>11.1f}{now_n:>11}{now_t:>9.1f}")


def print_latency(
    calls: dict[tuple[str, int], Callable[[], object]], rounds: int, calls_at_batch_1: int
) -> None:
    """Median µs per call of each ``(graph, batch)``, over interleaved rounds, and the stored / now ratios
    (the median over rounds of the per-round ratio: a busy spell of the machine cancels out)."""
    medians: dict[tuple[str, int], list[float]] = {key: [] for key in calls}
    for call in calls.values():  # warm up
        timed(call, 20)
    for _ in range(rounds):
        for (graph, batch), call in calls.items():
            medians[graph, batch].append(timed(call, max(calls_at_batch_1 * 64 // (63 + batch), 5)))
    print(f"\nmedian µs per run over {rounds} interleaved rounds; stored / now in brackets")
    print(f"{'graph':<18}" + "".join(f"{f'batch {b}':>22}" for b in BATCHES))
    for graph in ("pre stored", "pre now", "pipeline stored", "pipeline now", "network"):
        cells = []
        for batch in BATCHES:
            cell = f"{statistics.median(medians[graph, batch]):.1f}"
            if graph.endswith(" now"):
                stored = medians[graph.replace(" now", " stored"), batch]
                ratio = statistics.median(s / n for s, n in zip(stored, medians[graph, batch], strict=True))
                cell += f" ({ratio:.2f}×)"
            cells.append(cell)
        print(f"{graph:<18}" + "".join(f"{cell:>22}" for cell in cells))


def main() -> None:
    """Make or find the bundles, then measure each."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--bundles", nargs="*", help="bundle folders (default: the flights and diamonds teachers)"
    )
    parser.add_argument("--workdir", default=str(OUT), help="where the default bundles are trained")
    parser.add_argument("--remake", action="store_true", help="train the default bundles again")
    parser.add_argument("--rounds", type=int, default=11, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=300, help="calls per graph per round at batch 1")
    args = parser.parse_args()
    paths = (
        [Path(p) for p in args.bundles] if args.bundles else ensure_bundles(Path(args.workdir), args.remake)
    )
    for path in paths:
        bench_one(path, args.rounds, args.calls)


if __name__ == "__main__":
    main()
