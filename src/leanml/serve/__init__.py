"""HTTP serving: KServe V1 and Open Inference Protocol endpoints with adaptive batching."""

from __future__ import annotations

from leanml.serve.app import create_app
from leanml.serve.server import serve

__all__ = ["create_app", "serve"]
