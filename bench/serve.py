"""Serve throughput: ``leanml serve`` vs the serving stack's own ceiling and a per-request FastAPI app.

Three servers answer the same KServe V1 body ``{"instances": [{column: value, ...}]}``:

* leanml: ``leanml serve STORE`` (default workers: one per core), through the bundle's serving graph;
* ceiling: a minimal Starlette app on the same uvicorn, loop and parser, with as many workers, that
  parses the same JSON and returns a fixed answer — what serving costs with no model at all. leanml's
  target is ≥ 0.5× its req/s at 64 clients with p99 ≤ 20 ms, and p50 ≤ 1 ms at 1 client;
* baseline: a plain FastAPI endpoint predicting per request (``--no-baseline`` leaves it out).

With ``--shrink`` the run ends with a second table: a large teacher (a residual MLP) and the model
``leanml shrink`` makes of it, each served alone, one client, side by side.

* leanml: ``leanml serve STORE --port P`` in a subprocess, ``POST /v1/models/flights:predict``.
* baseline: the FastAPI app below (``python bench/serve.py --baseline-app BUNDLE --port P``), run by
  uvicorn with the same loop and parser (uvloop, httptools), one endpoint ``POST /predict`` calling
  ``bundle.predict(instances)`` for every request — no batching. ``--baseline-handler sync`` (default) is
  the idiomatic ``def`` endpoint that FastAPI runs in its thread pool; ``async`` runs the prediction on
  the event loop itself.

Load: one-row requests cycling through a few hundred real NYC flights rows (not used for training), from
``wrk`` when it is installed, else from a raw-socket asyncio client (HTTP/1.1 keep-alive, one connection
per client). At each concurrency level the two servers are measured alternately (``--repeats`` rounds,
the order swapped every round: the machine may be shared), each run a warm-up then ``--duration``
seconds; the tables report the median over the rounds. The client's and each server's CPU use are
reported so that a saturated load generator would show.

Run: ``.venv/bin/python bench/serve.py`` (``--quick`` for a short run; ``--help`` for the options). The
trained store is cached under ``bench/out/serve/`` (``--retrain`` rebuilds it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import polars as pl
from fastapi import Body, FastAPI, Request
from fastapi.responses import Response

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "serve"
MODEL = "flights"
JSON_HEADERS = {"Content-Type": "application/json"}
INPUTS = ["dep_delay", "distance", "sched_dep_time", "carrier", "dest", "origin", "time_hour"]
TRAIN_EVERY = 6  # every 6th flight (~56,000 rows) trains the model; requests come from the others


# ------------------------------------------------------------------------------------------------ setup
def raw_config(out: Path) -> dict[str, Any]:
    """The training config (an MLP 64 → 32, 2 epochs) as a mapping, its paths under ``out``."""
    from leanml.datasets import FLIGHTS_COLUMNS

    return {
        "name": MODEL,
        "data": {"train": str(out / "flights-train.parquet")},
        "target": "delayed",
        "columns": FLIGHTS_COLUMNS,
        "model": {"arch": "mlp", "hidden": [64, 32], "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 512, "optimizer": "adam", "lr": 0.003},
        "workdir": str(out / "runs"),
        "store": str(out / "models"),
    }


def ensure_store(out: Path, retrain: bool) -> Path:
    """The model store holding ``flights`` v1 (an MLP 64 → 32), trained once and cached under ``out``."""
    store = out / "models"
    bundle = store / MODEL / "v1"
    if (bundle / "manifest.json").is_file() and not retrain:
        return store
    from leanml.config import parse_config
    from leanml.datasets import flights_frame
    from leanml.training.stage import train_and_bundle

    for stale in (store, out / "runs"):
        shutil.rmtree(stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    flights_frame().collect().gather_every(TRAIN_EVERY).write_parquet(out / "flights-train.parquet")
    config = parse_config(raw_config(out))
    started = time.perf_counter()
    outcome = train_and_bundle(config)
    print(f"trained and bundled {outcome.bundle.path} in {time.perf_counter() - started:.1f}s")
    return store


def request_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """``count`` real flights rows, as JSON instances, none of them from the training slice."""
    from leanml.datasets import flights_frame

    frame = flights_frame().collect().with_row_index("__i").filter(pl.col("__i") % TRAIN_EVERY != 0)
    frame = frame.sample(count, seed=seed).select(INPUTS)
    frame = frame.with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    return frame.to_dicts()


# ------------------------------------------------------------------------------------------ the baseline
def baseline_app(bundle_path: str, handler: str, threads: int | None = None) -> FastAPI:
    """A plain FastAPI app: ``POST /predict`` takes a V1 body and calls ``bundle.predict`` per request."""
    from leanml.bundle import load_bundle

    bundle = load_bundle(bundle_path, threads=threads)
    probas = [f"proba_{label}" for label in bundle.labels]
    app = FastAPI()

    def answer(payload: dict[str, Any]) -> Response:
        frame = bundle.predict(payload["instances"])
        body = {
            "predictions": frame["prediction"].to_list(),
            "probabilities": [list(row) for row in frame.select(probas).rows()],
            "model_version": bundle.version,
        }
        return Response(orjson.dumps(body), media_type="application/json")

    if handler == "sync":

        @app.post("/predict")
        def predict(payload: dict[str, Any] = Body(...)) -> Response:
            return answer(payload)

    else:

        @app.post("/predict")
        async def predict_async(request: Request) -> Response:
            return answer(orjson.loads(await request.body()))

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    return app


def ceiling_app() -> Any:
    """The ceiling: parse the V1 body with orjson, check it holds instances, return a fixed answer."""
    from starlette.applications import Starlette
    from starlette.requests import Request as StarletteRequest
    from starlette.responses import Response as StarletteResponse
    from starlette.routing import Route

    answer = orjson.dumps({"predictions": [False], "probabilities": [[0.9, 0.1]], "model_version": "v1"})

    async def predict(request: StarletteRequest) -> StarletteResponse:
        payload = orjson.loads(await request.body())
        status = 200 if isinstance(payload.get("instances"), list) else 422
        return StarletteResponse(answer, status_code=status, media_type="application/json")

    async def ready(request: StarletteRequest) -> StarletteResponse:
        return StarletteResponse(b'{"ready": true}', media_type="application/json")

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/v2/health/ready", ready)])


def ceiling_command(workers: int) -> list[str]:
    """uvicorn serving :func:`ceiling_app` with the loop, parser and worker count ``leanml serve`` uses
    (``PORT`` stands for the port)."""
    app = ["serve:ceiling_app", "--factory", "--app-dir", str(ROOT / "bench")]
    where = ["--host", "127.0.0.1", "--port", "PORT", "--workers", str(workers)]
    stack = ["--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]
    return [sys.executable, "-m", "uvicorn", *app, *where, *stack]


def run_baseline(bundle_path: str, port: int, handler: str, threads: int | None) -> None:
    """Serve the baseline app with uvicorn (uvloop + httptools, as ``leanml serve``) until terminated."""
    import uvicorn

    app = baseline_app(bundle_path, handler, threads)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


# ------------------------------------------------------------------------------------------ subprocesses
def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (all its threads), from ``/proc``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Target:
    """A running server under test."""

    name: str
    port: int
    path: str
    process: subprocess.Popen[bytes]

    def cpu(self) -> float:
        """CPU seconds the server process has used so far."""
        return cpu_seconds(self.process.pid)


@contextlib.contextmanager
def started(name: str, command: Sequence[str], port: int, path: str, log: Path) -> Iterator[Target]:
    """Start a server subprocess, wait for ``/v2/health/ready``, and always stop it afterwards."""
    with open(log, "wb") as output:
        process = subprocess.Popen(
            list(command), stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} was not ready within 120 s; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        yield Target(name, port, path, process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ------------------------------------------------------------------------------------------ load
@dataclass
class Run:
    """One measured run of one server at one concurrency level."""

    server: str
    clients: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client_cpu: float  # cores used by the load generator
    server_cpu: float  # cores used by the server process

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Load:
    """What a load run returns before the server's CPU is added."""

    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    client_cpu_s: float = field(default=0.0)


def http_request(port: int, path: str, body: bytes) -> bytes:
    """A raw HTTP/1.1 keep-alive POST."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(
    port: int, requests: list[bytes], first: int, stop_at: float, latencies: list[float], errors: list[int]
) -> None:
    """One connection sending requests back to back until ``stop_at``; reconnects after a failure."""
    index = first
    while time.perf_counter() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            errors[0] += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while True:
                sent = time.perf_counter()
                if sent >= stop_at:
                    break
                writer.write(requests[index % len(requests)])
                index += 1
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                        break
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - sent)
                if head[9:12] != b"200":
                    errors[0] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            errors[0] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _python_load(port: int, requests: list[bytes], clients: int, duration: float) -> Load:
    latencies: list[float] = []
    errors = [0]
    cpu = time.process_time()
    began = time.perf_counter()
    stop_at = began + duration
    stride = max(1, len(requests) // clients)
    await asyncio.gather(
        *[_client(port, requests, i * stride, stop_at, latencies, errors) for i in range(clients)]
    )
    seconds = time.perf_counter() - began
    cpu = time.process_time() - cpu
    p50, p99 = (np.percentile(latencies, [50, 99]) * 1000).tolist() if latencies else (float("nan"),) * 2
    return Load(len(latencies), errors[0], seconds, p50, p99, cpu)


def python_load(port: int, path: str, bodies: list[bytes], clients: int, duration: float) -> Load:
    """Closed-loop load from ``clients`` asyncio connections (uvloop) for ``duration`` seconds."""
    import uvloop

    requests = [http_request(port, path, body) for body in bodies]
    return uvloop.run(_python_load(port, requests, clients, duration))


WRK_SCRIPT = """
local bodies = {
%s
}
local requests = {}
local index = 0
init = function(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  for k, body in ipairs(bodies) do requests[k] = wrk.format("POST", nil, nil, body) end
  index = math.random(#requests)
end
request = function()
  index = index %% #requests + 1
  return requests[index]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%f %%f\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_load(wrk: str, port: int, path: str, script: Path, clients: int, duration: float) -> Load:
    """Closed-loop load from ``wrk`` (one thread, ``clients`` connections) for ``duration`` seconds."""
    seconds = max(1, round(duration))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [wrk, "-t1", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script)]
    done = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=seconds + 60
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    requests, micros, errors, p50, p99 = lines[-1].split()[1:]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Load(int(requests), int(errors), int(micros) / 1e6, float(p50) / 1000, float(p99) / 1000, cpu)


def wrk_script(bodies: list[bytes], folder: Path) -> Path:
    """A wrk Lua script cycling through ``bodies`` and printing one ``RESULT`` line at the end."""
    text = ",\n".join(f"[==[{body.decode()}]==]" for body in bodies)
    path = folder / "requests.lua"
    path.write_text(WRK_SCRIPT % text)
    return path


# ------------------------------------------------------------------------------------------ checks
def agreement(targets: list[Target], rows: list[dict[str, Any]]) -> tuple[float, int]:
    """Send each row to every server; the largest probability difference and the prediction mismatches."""
    answers: list[list[dict[str, Any]]] = []
    with httpx.Client(timeout=30) as client:
        for target in targets:
            url = f"http://127.0.0.1:{target.port}{target.path}"
            replies = []
            for row in rows:
                response = client.post(url, content=orjson.dumps({"instances": [row]}), headers=JSON_HEADERS)
                response.raise_for_status()
                replies.append(response.json())
            answers.append(replies)
    first, second = answers
    worst = max(
        float(np.max(np.abs(np.asarray(a["probabilities"]) - np.asarray(b["probabilities"]))))
        for a, b in zip(first, second, strict=True)
    )
    mismatches = sum(a["predictions"] != b["predictions"] for a, b in zip(first, second, strict=True))
    return worst, mismatches


# ------------------------------------------------------------------------------------------ main
def measure(
    target: Target, clients: int, args: argparse.Namespace, bodies: list[bytes], script: Path | None
) -> Run:
    """Warm up, then one measured run of ``target`` at ``clients`` concurrent clients."""

    def load(duration: float) -> Load:
        if script is not None:
            return wrk_load(args.wrk, target.port, target.path, script, clients, duration)
        return python_load(target.port, target.path, bodies, clients, duration)

    load(args.warmup)
    cpu = target.cpu()
    result = load(args.duration)
    server_cpu = target.cpu() - cpu
    return Run(
        server=target.name,
        clients=clients,
        requests=result.requests,
        errors=result.errors,
        seconds=result.seconds,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        client_cpu=result.client_cpu_s / result.seconds,
        server_cpu=server_cpu / result.seconds,
    )


def median_of(runs: list[Run], key: str) -> float:
    """The median of one figure over the rounds."""
    values = [getattr(run, key) if key != "rps" else run.rps for run in runs]
    return float(statistics.median(values))


def report(runs: list[Run], levels: list[int], names: list[str]) -> str:
    """The side-by-side markdown table (medians over the rounds), then each server's ratios to the first."""
    lines = [
        "| clients | server | req/s | p50 ms | p99 ms | errors | server CPU | client CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    others = names[1:]
    ratios = [
        "| clients | " + " | ".join(f"req/s {names[0]} / {o} | p99 {names[0]} / {o}" for o in others) + " |",
        "|---:|" + "---:|---:|" * len(others),
    ]
    for clients in levels:
        medians: dict[str, dict[str, float]] = {}
        for name in names:
            mine = [r for r in runs if r.server == name and r.clients == clients]
            if not mine:
                continue
            figures = {k: median_of(mine, k) for k in ("rps", "p50_ms", "p99_ms", "server_cpu", "client_cpu")}
            figures["errors"] = sum(r.errors for r in mine)
            medians[name] = figures
            lines.append(
                f"| {clients} | {name} | {figures['rps']:,.0f} | {figures['p50_ms']:.2f} | "
                f"{figures['p99_ms']:.2f} | {figures['errors']:.0f} | {figures['server_cpu']:.2f} | "
                f"{figures['client_cpu']:.2f} |"
            )
        lean = medians[names[0]]
        cells = [
            f"{lean['rps'] / medians[o]['rps']:.2f}× | {lean['p99_ms'] / medians[o]['p99_ms']:.2f}×"
            for o in others
            if o in medians
        ]
        ratios.append(f"| {clients} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(ratios)


def ensure_shrunk_store(out: Path, retrain: bool) -> Path:
    """A residual-MLP teacher (v1) and the model ``leanml shrink`` makes of it (v2), cached under ``out``."""
    store = out / "shrink" / "models"
    if (store / MODEL / "v2" / "manifest.json").is_file() and not retrain:
        return store
    import leanml
    from leanml.config import parse_config
    from leanml.datasets import flights_frame
    from leanml.training.stage import train_and_bundle

    shutil.rmtree(out / "shrink", ignore_errors=True)
    (out / "shrink").mkdir(parents=True)
    data = out / "shrink" / "flights-train.parquet"
    flights_frame().collect().gather_every(TRAIN_EVERY).write_parquet(data)
    raw = {
        **raw_config(out / "shrink"),
        "model": {"arch": "resmlp", "hidden": [256, 256], "blocks": 3, "dropout": 0.1},
        "train": {"epochs": 3, "batch_size": 512, "optimizer": "adamw", "lr": 0.002},
        "shrink": {"max_metric_drop": 0.01},
    }
    outcome = train_and_bundle(parse_config(raw))
    result = leanml.shrink(outcome.bundle.path.parent, parse_config(raw))
    if result.bundle is None:
        raise SystemExit(f"shrink wrote no model: {result.reason}")
    print(f"teacher {outcome.bundle.path}, shrunk {result.bundle.path}: {result.final.model}")
    return store


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the context managers, which stop the servers


def main() -> None:
    """Train (or reuse) the model, start the servers, check they agree, load them alternately, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each run")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per level (servers alternate)")
    parser.add_argument("--levels", default="1,16,64,256", help="concurrency levels, comma-separated")
    parser.add_argument("--quick", action="store_true", help="3 s runs, 1 s warm-ups")
    parser.add_argument("--rows", type=int, default=300, help="distinct request rows cycled through")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--baseline-handler", choices=["sync", "async"], default="sync")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the per-request FastAPI app")
    parser.add_argument("--shrink", action="store_true", help="also serve a teacher and its shrunk model")
    parser.add_argument(
        "--ort-threads",
        type=int,
        default=None,
        help="ONNX Runtime intra-op threads in leanml and the baseline (default: leanml serve's)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="cache folder for the trained store")
    parser.add_argument("--retrain", action="store_true", help="train the model again")
    parser.add_argument("--json", type=Path, default=None, help="also write every run here")
    parser.add_argument("--baseline-app", metavar="BUNDLE", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.baseline_app:  # the baseline server's own process
        run_baseline(args.baseline_app, args.port, args.baseline_handler, args.ort_threads)
        return
    if args.quick:
        args.duration, args.warmup = 3.0, 1.0
    signal.signal(signal.SIGTERM, _terminate)
    levels = [int(level) for level in args.levels.split(",")]
    args.wrk = shutil.which("wrk") if args.client != "python" else None
    if args.client == "wrk" and args.wrk is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk), use --client python")

    store = ensure_store(args.out, args.retrain)
    shrunk_store = ensure_shrunk_store(args.out, args.retrain) if args.shrink else None
    rows = request_rows(args.rows)
    bodies = [orjson.dumps({"instances": [row]}) for row in rows]
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    workers = os.cpu_count() or 1
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {memory:.0f} GiB, load average "
        f"{os.getloadavg()[0]:.1f}; client: {'wrk' if args.wrk else 'python asyncio (uvloop)'}; "
        f"workers: {workers} (leanml's default and the ceiling's); ONNX Runtime threads: "
        f"{args.ort_threads or 'default'}; {args.repeats} rounds × ({args.warmup:g} s warm-up + "
        f"{args.duration:g} s) per server and level"
    )

    leanml = Path(sys.executable).parent / "leanml"
    lean_command = [str(leanml)] if leanml.exists() else [sys.executable, "-m", "leanml"]
    bundle = store / MODEL / "v1"
    lean_options: list[str] = []
    base_options: list[str] = []
    if args.ort_threads is not None:  # leanml serve takes it from the serve: section of a config
        config = args.out / f"serve-threads-{args.ort_threads}.yaml"
        config.write_text(json.dumps({**raw_config(args.out), "serve": {"threads": args.ort_threads}}))
        lean_options = ["--config", str(config)]
        base_options = ["--ort-threads", str(args.ort_threads)]
    with tempfile.TemporaryDirectory(prefix="leanml-bench-serve-") as tmp, contextlib.ExitStack() as stack:
        folder = Path(tmp)
        path = f"/v1/models/{MODEL}:predict"

        def serve(name: str, command: list[str], route: str = path) -> Target:
            port = free_port()
            command = [part if part != "PORT" else str(port) for part in command]
            return stack.enter_context(started(name, command, port, route, folder / f"{name}.log"))

        lean = serve("leanml", [*lean_command, "serve", str(store), "--port", "PORT", *lean_options])
        ceiling = serve("ceiling", ceiling_command(workers), "/predict")
        targets = [lean, ceiling]
        if not args.no_baseline:
            base_app = [sys.executable, __file__, "--baseline-app", str(bundle), "--port", "PORT"]
            base_app += ["--baseline-handler", args.baseline_handler, *base_options]
            base = serve(f"baseline-{args.baseline_handler}", base_app, "/predict")
            worst, mismatches = agreement([lean, base], rows[:100])
            print(f"agreement on 100 rows: max |Δ probability| = {worst:.2e}, mismatches: {mismatches}")
            if worst > 1e-6 or mismatches:
                raise SystemExit("leanml and the baseline disagree")
            targets.append(base)

        script = wrk_script(bodies, folder) if args.wrk else None
        runs = compare(targets, levels, args, bodies, script)
        print()
        print(report(runs, levels, [t.name for t in targets]))
        if shrunk_store is not None:
            versions = shrunk_store / MODEL
            parent = serve("teacher", [*lean_command, "serve", str(versions / "v1"), "--port", "PORT"])
            shrunk = serve("shrunk", [*lean_command, "serve", str(versions / "v2"), "--port", "PORT"])
            shrink_runs = compare([shrunk, parent], [1, 16], args, bodies, script)
            print()
            print(report(shrink_runs, [1, 16], ["shrunk", "teacher"]))
            runs += shrink_runs
    if args.json is not None:
        args.json.write_text(json.dumps([{**asdict(r), "rps": r.rps} for r in runs], indent=1))


def compare(
    targets: list[Target],
    levels: list[int],
    args: argparse.Namespace,
    bodies: list[bytes],
    script: Path | None,
) -> list[Run]:
    """Every target at every level, ``args.repeats`` rounds each, the order reversed every other round."""
    runs: list[Run] = []
    for clients in levels:
        for round_ in range(args.repeats):
            for target in targets if round_ % 2 == 0 else targets[::-1]:
                run = measure(target, clients, args, bodies, script)
                runs.append(run)
                print(
                    f"  c={clients:<3} round {round_ + 1} {run.server:<16} {run.rps:8,.0f} req/s  "
                    f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  errors {run.errors}  "
                    f"cpu server {run.server_cpu:.2f} client {run.client_cpu:.2f}",
                    flush=True,
                )
    return runs


if __name__ == "__main__":
    main()
