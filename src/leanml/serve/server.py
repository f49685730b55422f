"""Running the app: uvicorn with uvloop and httptools, one or several worker processes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import uvicorn

from leanml.config import ServeConfig

SPEC_ENV = "LEANML_SERVE_SPEC"


def serve(reference: str, config: ServeConfig, on_ready: Callable[[list[str]], None] | None = None) -> None:
    """Serve the models behind ``reference`` until interrupted (blocks).

    Every bundle is loaded and verified before the port is bound; ``on_ready`` then gets the model names.
    """
    from leanml.serve.app import create_app

    options: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "warning",
        "access_log": False,
    }
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
