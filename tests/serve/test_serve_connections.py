"""Connections: idle and slow clients are closed, the connection cap answers 503, a thousand idle sockets
do not keep a new client waiting, and a client that leaves mid-upload leaves no traceback in the log."""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from leanml.serve.server import ConnectionLimits

FAST = ConnectionLimits(idle_s=0.5, header_s=0.6, body_s=0.6, max_connections=2000, max_header_bytes=8192)
IDLE_SOCKETS = 1000


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    """Whether the server closes ``sock`` (reads reach EOF) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except OSError:  # reset by the server
        return True
    return True


@contextlib.contextmanager
def _sockets(url: str, count: int) -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            opened.append(_connect(url))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def test_idle_and_slow_clients_are_closed(module_store: Path, guarded_server: Any) -> None:
    with guarded_server(str(module_store), limits=FAST) as (url, _):
        silent = _connect(url)  # connects and never sends a byte
        slow_head = _connect(url)
        slow_head.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")  # and never ends its headers
        slow_body = _connect(url)
        slow_body.sendall(
            b'POST /v1/models/flights:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"inst'
        )
        idle = _connect(url)  # a keep-alive connection after one answered request
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        for sock in (silent, slow_head, slow_body, idle):
            assert _closed_by_server(sock, within=5.0)
            sock.close()
        assert time.monotonic() - started < 5.0
        assert httpx.get(f"{url}/v2/health/live").status_code == 200


def test_a_request_head_over_the_limit_gets_431(module_store: Path, guarded_server: Any) -> None:
    with guarded_server(str(module_store), limits=FAST) as (url, _):
        response = httpx.get(f"{url}/v2/health/live", headers={"X-Big": "x" * 20_000})
        assert response.status_code == 431
        assert httpx.get(f"{url}/v2/health/live").status_code == 200


def test_connections_over_the_cap_get_503_and_are_closed(module_store: Path, guarded_server: Any) -> None:
    limits = ConnectionLimits(max_connections=20)
    with guarded_server(str(module_store), limits=limits) as (url, _):
        with _sockets(url, 20) as held:
            time.sleep(0.2)  # let the server accept them all
            response = httpx.get(f"{url}/v2/health/live")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1" and "too many open connections" in response.text
            assert len(held) == 20
        time.sleep(0.2)
        assert httpx.get(f"{url}/v2/health/live").status_code == 200


def test_a_new_client_is_answered_while_a_thousand_idle_connections_are_open(
    module_store: Path, guarded_server: Any, good_rows: list[dict[str, Any]]
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * IDLE_SOCKETS + 512  # both ends live in this process
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"the open-file limit ({hard}) is below the {needed} this test needs")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    limits = ConnectionLimits(header_s=30.0, max_connections=IDLE_SOCKETS + 100)
    with guarded_server(str(module_store), limits=limits) as (url, _), _sockets(url, IDLE_SOCKETS):
        started = time.monotonic()
        response = httpx.post(
            f"{url}/v1/models/flights:predict", json={"instances": good_rows[:2]}, timeout=10
        )
        assert response.status_code == 200, response.text
        assert time.monotonic() - started < 2.0


def test_a_client_that_disconnects_mid_upload_leaves_no_traceback(
    module_store: Path, guarded_server: Any, caplog: pytest.LogCaptureFixture, good_rows: list[dict[str, Any]]
) -> None:
    caplog.set_level(logging.INFO)
    with guarded_server(str(module_store), limits=FAST) as (url, _):
        for _ in range(5):
            sock = _connect(url)
            sock.sendall(
                b"POST /v1/models/flights:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n" + b'{"instances": [' + b" " * 5000
            )
            time.sleep(0.05)
            sock.close()
        time.sleep(0.3)
        response = httpx.post(f"{url}/v1/models/flights:predict", json={"instances": good_rows[:1]})
        assert response.status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
    # nobody was answered 500: a client that left is not a fault of the server
    assert 'status="500"' not in metrics
    assert "leanml_internal_errors_total 0.0" in metrics
    noisy = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not noisy, [r.getMessage() for r in noisy]
