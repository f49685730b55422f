"""Test helpers for the server: a real uvicorn server on a loopback port, in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from leanml.config import ServeConfig
from leanml.serve import create_app
from leanml.serve.server import ConnectionLimits, uvicorn_options


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running_server(
    reference: str, limits: ConnectionLimits | None = None, **settings: Any
) -> Iterator[tuple[str, Any]]:
    """Serve ``reference`` on 127.0.0.1 with the production settings (uvloop, the guarded httptools
    protocol and its timeouts, or ``limits``); yield (base URL, app)."""
    config = ServeConfig(port=free_port(), **settings)
    app = create_app(reference, config)
    server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options(config, limits)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{config.port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=15)
