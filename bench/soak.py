"""Soak: ``leanml serve`` under steady load for minutes, with hot reloads and bad requests mixed in.

* ``leanml serve STORE`` (one worker) in a subprocess; the store holds ``flights`` v1 and v2 (v1's files
  under another version name), ``production`` at v1;
* ``--connections`` (default 256) asyncio keep-alive connections on loopback send one-row V1 requests
  back to back; 1 % of the requests are bad on purpose (wrong type, missing field, malformed JSON,
  a V2 body of the wrong shape, a lone surrogate, a non-JSON Content-Type), each expecting its 4xx;
* every ``--reload-every`` seconds (default 30) the soak alternates ``promote v2`` and ``rollback``;
* at the end, ``--idle`` (default 5,000) idle connections are opened and held while a new client sends a
  normal request: it must be answered, and promptly.

Reported: requests, answers by status (only the deliberate 4xx and 503 may appear besides 200), answers
whose status differs from what was expected, server RSS after warm-up and at the end (growth must stay
under 10 %), the versions that answered, and the idle-connection check. Run:
``.venv/bin/python bench/soak.py --minutes 10`` (the trained store is shared with ``bench/serve.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from leanml.serve.server import raise_open_file_limit
from serve import ensure_store, free_port, http_request, request_rows, started

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "soak"
PREDICT = "/v1/models/flights:predict"
INFER = "/v2/models/flights/infer"


def bad_requests(port: int, row: dict[str, Any]) -> list[tuple[bytes, int]]:
    """Requests that must be refused, each with the status it must get."""

    def post(path: str, body: bytes, content_type: str = "application/json") -> bytes:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    v1 = lambda instance: orjson.dumps({"instances": [instance]})  # noqa: E731
    return [
        (post(PREDICT, v1({**row, "dep_delay": "abc"})), 422),
        (post(PREDICT, v1({k: v for k, v in row.items() if k != "origin"})), 422),
        (post(PREDICT, b'{"instances": [{'), 400),
        (post(INFER, b'{"inputs": [{"name": "dep_delay", "datatype": {}, "shape": [1], "data": [1]}]}'), 422),
        (post(INFER, b'{"inputs": [], "parameters": "x"}'), 422),
        (post(PREDICT, b'{"instances": [{"carrier": "\\ud800"}]}'), 400),
        (post(PREDICT, v1(row), "text/plain"), 415),
    ]


async def client(
    port: int,
    good: list[bytes],
    bad: list[tuple[bytes, int]],
    first: int,
    stop_at: float,
    tally: dict[str, Counter[Any]],
) -> None:
    """One keep-alive connection sending requests back to back; every 100th is a bad one."""
    index = first
    while time.monotonic() < stop_at:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        except OSError as exc:
            tally["errors"][f"connect: {exc.strerror}"] += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while time.monotonic() < stop_at:
                index += 1
                if index % 100 == 0:
                    request, expected = bad[(index // 100) % len(bad)]
                else:
                    request, expected = good[index % len(good)], 200
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length, version = 0, None
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"x-model-version":
                        version = value.strip().decode()
                await reader.readexactly(length)
                tally["status"][status] += 1
                if status != expected and status != 503:
                    tally["unexpected"][f"{expected}->{status}"] += 1
                if version is not None:
                    tally["versions"][version] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            tally["errors"][type(exc).__name__] += 1
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def reloads(store: Path, every: float, stop_at: float, log: list[str]) -> None:
    """Alternate ``promote v2`` and ``rollback`` every ``every`` seconds."""
    from leanml.bundle import ModelStore

    models = ModelStore(store)
    promote = True
    while time.monotonic() + every < stop_at:
        await asyncio.sleep(every)
        ref = await asyncio.to_thread(models.promote, "flights", "v2") if promote else None
        if ref is None:
            ref = await asyncio.to_thread(models.rollback, "flights")
        log.append(f"{time.strftime('%H:%M:%S')} production → {ref.version}")
        promote = not promote


async def load(
    port: int, store: Path, args: argparse.Namespace, good: list[bytes], bad: Any
) -> dict[str, Any]:
    tally: dict[str, Counter[Any]] = {k: Counter() for k in ("status", "unexpected", "versions", "errors")}
    log: list[str] = []
    stop_at = time.monotonic() + args.minutes * 60
    stride = max(1, len(good) // args.connections)
    await asyncio.gather(
        reloads(store, args.reload_every, stop_at, log),
        *[client(port, good, bad, i * stride, stop_at, tally) for i in range(args.connections)],
    )
    return {"tally": tally, "reloads": log}


def idle_check(port: int, count: int, body: bytes) -> dict[str, Any]:
    """Hold ``count`` idle connections open and time one normal request meanwhile."""
    held: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(count):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                refused += 1
        time.sleep(1.0)
        started_at = time.perf_counter()
        response = httpx.post(
            f"http://127.0.0.1:{port}{PREDICT}", content=body, headers={"Content-Type": "application/json"}
        )
        seconds = time.perf_counter() - started_at
        return {
            "idle_connections": len(held),
            "not_opened": refused,
            "status": response.status_code,
            "ms": round(seconds * 1000, 1),
        }
    finally:
        for sock in held:
            sock.close()


def prepare_store(out: Path) -> Path:
    """A fresh soak store: the benchmark's flights v1, and v2 (v1's files under another version)."""
    source = ensure_store(ROOT / "bench" / "out" / "serve", retrain=False)
    store = out / "models"
    shutil.rmtree(store, ignore_errors=True)
    shutil.copytree(source, store)
    v2 = store / "flights" / "v2"
    shutil.rmtree(v2, ignore_errors=True)
    shutil.copytree(store / "flights" / "v1", v2)
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["version"] = "v2"
    (v2 / "manifest.json").write_text(json.dumps(manifest))
    from leanml.bundle import ModelStore

    ModelStore(store).promote("flights", "v1")
    return store


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--reload-every", type=float, default=30.0)
    parser.add_argument("--idle", type=int, default=5000, help="idle connections held for the final check")
    args = parser.parse_args()

    raise_open_file_limit()  # the client holds thousands of idle connections at the end
    OUT.mkdir(parents=True, exist_ok=True)
    store = prepare_store(OUT)
    port = free_port()
    rows = [
        {**row, "time_hour": row["time_hour"].replace("Z", "+00:00")} for row in request_rows(500, seed=7)
    ]
    good = [http_request(port, PREDICT, orjson.dumps({"instances": [row]})) for row in rows]
    bad = bad_requests(port, rows[0])
    command = [sys.executable, "-m", "leanml", "serve", str(store), "--port", str(port), "--workers", "1"]
    with started("leanml", command, port, PREDICT, OUT / "server.log") as target:
        server = psutil.Process(target.process.pid)
        asyncio.run(load(port, store, argparse.Namespace(**{**vars(args), "minutes": 0.1}), good, bad))
        rss_start = server.memory_info().rss
        began = time.monotonic()
        result = asyncio.run(load(port, store, args, good, bad))
        seconds = time.monotonic() - began
        rss_end = server.memory_info().rss
        idle = idle_check(port, args.idle, orjson.dumps({"instances": rows[:1]}))
        alive = server.is_running()
    tally = result["tally"]
    total = sum(tally["status"].values())
    summary = {
        "minutes": args.minutes,
        "connections": args.connections,
        "requests": total,
        "requests_per_s": round(total / seconds, 1),
        "status": dict(sorted(tally["status"].items())),
        "unexpected": dict(tally["unexpected"]),
        "client_errors": dict(tally["errors"]),
        "versions": dict(tally["versions"]),
        "reloads": result["reloads"],
        "rss_start_mb": round(rss_start / 2**20, 1),
        "rss_end_mb": round(rss_end / 2**20, 1),
        "rss_growth_pct": round(100 * (rss_end - rss_start) / rss_start, 2),
        "idle_check": idle,
        "server_alive": alive,
    }
    (OUT / "result.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    ok = (
        not tally["unexpected"]
        and summary["rss_growth_pct"] < 10
        and idle["status"] == 200
        and len(tally["versions"]) == 2
    )
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
