"""Running the app: uvicorn with uvloop and httptools, one or several worker processes.

Connections are guarded so that idle or slow clients cannot starve the others (:class:`ConnectionLimits`):
a connection must deliver its request head within ``header_s`` of opening (or of its previous request
starting) and its body within ``body_s`` of the head; an idle keep-alive connection is closed after
``idle_s``; at most ``max_connections`` are open at once (more are answered 503 and closed at once, so they
hold no file descriptor); a request head over ``max_header_bytes`` is answered 431. The process raises its
soft open-file limit to the hard limit so that the cap, not the operating system, is what refuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import resource
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from leanml.config import ServeConfig
from leanml.logs import uvicorn_log_config

SPEC_ENV = "LEANML_SERVE_SPEC"
RESERVED_FDS = 256
"""File descriptors kept free of connections: bundles, logs and the model runtime need some too."""


@dataclass(frozen=True)
class ConnectionLimits:
    """Timeouts and caps of client connections."""

    idle_s: float = 5.0
    """An idle keep-alive connection is closed after this long."""
    header_s: float = 10.0
    """Time to deliver a request's head (line and headers) once the connection is open or reused."""
    body_s: float = 30.0
    """Time to deliver a request's body once its head arrived."""
    max_connections: int = 10_000
    """Open connections at most (lowered to fit the open-file limit)."""
    max_header_bytes: int = 64 * 1024


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header and body deadlines, a head size cap and a connection cap."""

    def __init__(self, *args: Any, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes: int | None = 0  # bytes of the current request head; None once it is complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            self._refuse(503, b'{"error":"the server has too many open connections; retry later"}')
            return
        super().connection_made(transport)
        self._arm(self.limits.header_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.flow is None:  # refused in connection_made: uvicorn never saw this connection
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._head_bytes is not None:
            self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(431, b'{"error":"the request head is over the size limit"}')
                return
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = self._head_bytes or 0
        if self._deadline is None:  # a reused connection: its next head has header_s to arrive
            self._arm(self.limits.header_s)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        self._arm(self.limits.body_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._head_bytes = 0
        super().on_message_complete()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        # The request (head or body) did not arrive in time. A handler reading the body sees a disconnect.
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, status: int, body: bytes) -> None:
        reason = {431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}[status]
        head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
            status,
            reason,
            len(body),
        )
        retry = b"retry-after: 1\r\n" if status == 503 else b""
        with contextlib.suppress(OSError, RuntimeError):
            self.transport.write(head + retry + b"connection: close\r\n\r\n" + body)
        self.transport.close()


def raise_open_file_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def connection_limits(config: ServeConfig) -> ConnectionLimits:
    """The connection limits a ``serve:`` section sets."""
    return ConnectionLimits(
        idle_s=config.idle_timeout_s,
        header_s=config.header_timeout_s,
        body_s=config.body_timeout_s,
        max_connections=config.max_connections,
    )


def uvicorn_options(config: ServeConfig, limits: ConnectionLimits | None = None) -> dict[str, Any]:
    """The uvicorn settings of a served app: uvloop, the guarded httptools protocol, quiet logs."""
    limits = limits or connection_limits(config)
    fitting = max(1, min(limits.max_connections, raise_open_file_limit() - RESERVED_FDS))
    limits = ConnectionLimits(**{**asdict(limits), "max_connections": fitting})
    return {
        "host": config.host,
        "port": config.port,
        "loop": "uvloop",
        "http": functools.partial(GuardedHttpProtocol, limits=limits),
        "timeout_keep_alive": limits.idle_s,
        "log_level": "warning",
        "access_log": False,
    }


def logging_options(config: ServeConfig) -> dict[str, Any]:
    """uvicorn's logging settings: uvicorn's and leanml's records at leanml's level and in its format
    (``--log-level``, ``--log-format``) in every worker process, and one access record per request when
    ``serve.access_log`` is on. ``log_level`` stays unset: uvicorn would apply it to the access log too."""
    return {
        "log_config": uvicorn_log_config(access_log=config.access_log),
        "log_level": None,
        "access_log": config.access_log,
    }


def serve(
    reference: str,
    config: ServeConfig,
    on_ready: Callable[[list[str]], None] | None = None,
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve the models behind ``reference`` until interrupted (blocks).

    Every bundle is loaded and verified before the port is bound; ``on_ready`` then gets the model names.
    """
    from leanml.serve.app import create_app

    if config.runtime == "torch":
        logging.getLogger("leanml.serve").warning(
            "serve.runtime: 'torch' is not used: the server runs each bundle's pipeline.onnx on ONNX Runtime"
        )
    options = {**uvicorn_options(config, limits), **logging_options(config)}
    app = create_app(reference, config)  # raises on a bundle that does not load
    if on_ready is not None:
        on_ready(sorted(app.state.registry.slots))
    if config.workers == 1:
        uvicorn.run(app, **options)
        return
    # Several processes: each worker builds its own app from the spec in its environment.
    os.environ[SPEC_ENV] = json.dumps({"reference": reference, "config": config.model_dump(mode="json")})
    uvicorn.run("leanml.serve.server:app_from_environment", factory=True, workers=config.workers, **options)


def app_from_environment() -> Any:
    """App factory for worker processes (reads the spec ``serve`` put in the environment)."""
    from leanml.serve.app import create_app

    spec = json.loads(os.environ[SPEC_ENV])
    return create_app(spec["reference"], ServeConfig.model_validate(spec["config"]))
