"""Bundles (one safe folder per trained model), the model store, and batch prediction."""

from __future__ import annotations

from leanml.bundle.artifact import Bundle, BundleError, BundleInputs, load_bundle
from leanml.bundle.store import BundleRef, ModelStore, resolve_reference


def load(reference: str, runtime: str = "onnx") -> Bundle:
    """Load a model by reference: a bundle folder, ``STORE/NAME`` or ``STORE/NAME@VERSION``."""
    return load_bundle(resolve_reference(reference).path, runtime=runtime)


__all__ = [
    "Bundle",
    "BundleError",
    "BundleInputs",
    "BundleRef",
    "ModelStore",
    "load",
    "load_bundle",
    "resolve_reference",
]
