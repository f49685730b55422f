"""The model store: ``STORE/NAME/vN/`` bundles plus the aliases ``latest`` and ``production``.

``STORE/NAME/aliases.json`` records both aliases and their history. Adding a bundle writes it into a
hidden temporary folder ``.vN.tmp-PID`` and renames it to ``vN`` (atomic on one file system), then moves
``latest``; temporary folders left by writers that were killed (their PID is gone) are removed on the next
write.
``promote`` points ``production`` at a version (default: latest); ``rollback`` points it back at the
version it held before. Every alias change is an atomic file replace, under a lock, so a running server
that watches the file sees either the old or the new alias, never a half-written one.

A model reference, as the CLI takes it, is one of: a bundle folder; ``STORE/NAME`` (its production
version, else latest); ``STORE/NAME@v3``; ``STORE/NAME@production``/``@latest``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanml.bundle.artifact import MANIFEST, BundleError, BundleInputs, read_manifest, write_bundle
from leanml.files import file_lock, write_json

ALIASES = "aliases.json"
ALIAS_NAMES = ("latest", "production")
VERSION_RE = re.compile(r"^v(\d+)$")
STAGING_RE = re.compile(r"^\.v\d+\.tmp-(\d+)$")


@dataclass(frozen=True)
class BundleRef:
    """Where a bundle is: its folder, model name and version."""

    path: Path
    name: str
    version: str


class ModelStore:
    """A folder of models, each a series of versioned bundles."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # ---------------------------------------------------------------- reading
    def models(self) -> list[str]:
        """Names of the models in the store."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[str]:
        """Versions of a model, oldest first."""
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = [p.name for p in folder.iterdir() if p.is_dir() and VERSION_RE.match(p.name)]
        return sorted(found, key=lambda v: int(v[1:]))

    def aliases(self, name: str) -> dict[str, Any]:
        """The alias file of a model: ``latest``, ``production`` and ``history``."""
        path = self.root / name / ALIASES
        if not path.exists():
            return {"latest": None, "production": None, "history": []}
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleError(f"model '{name}': cannot read {ALIASES}: {exc}") from None

    def resolve(self, name: str, version: str | None = None) -> BundleRef:
        """The bundle of ``name`` at a version or alias; default: production, else latest."""
        if not self.versions(name):
            known = ", ".join(self.models()) or "none"
            raise BundleError(f"no model '{name}' in store '{self.root}' (models: {known})")
        aliases = self.aliases(name)
        if version is None:
            version = aliases.get("production") or aliases.get("latest") or self.versions(name)[-1]
        elif version in ALIAS_NAMES:
            target = aliases.get(version)
            if target is None:
                raise BundleError(f"model '{name}' has no '{version}' version yet")
            version = target
        if version not in self.versions(name):
            raise BundleError(
                f"model '{name}' has no version '{version}' (versions: {', '.join(self.versions(name))})"
            )
        return BundleRef(self.root / name / version, name, version)

    # ---------------------------------------------------------------- writing
    def add(self, inputs: BundleInputs) -> BundleRef:
        """Write a new version of ``inputs.name`` and move ``latest`` to it."""
        folder = self.root / inputs.name
        folder.mkdir(parents=True, exist_ok=True)
        with self._locked(inputs.name):
            _remove_stale_staging(folder)
            versions = self.versions(inputs.name)
            version = f"v{int(versions[-1][1:]) + 1 if versions else 1}"
            staging = folder / f".{version}.tmp-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            try:
                write_bundle(staging, inputs, version)
                os.rename(staging, folder / version)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self._set_alias(inputs.name, "latest", version)
        return BundleRef(folder / version, inputs.name, version)

    def promote(self, name: str, version: str | None = None) -> BundleRef:
        """Point ``production`` at ``version`` (default: latest); the bundle is verified first."""
        from leanml.bundle.artifact import load_bundle

        ref = self.resolve(name, version or "latest")
        try:
            load_bundle(ref.path)  # refuse to promote a bundle that does not verify
        except BundleError:
            raise
        except Exception as exc:  # e.g. weights that are not safetensors: a refusal, not a crash
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BundleError(
                f"bundle '{ref.path}' cannot be loaded, so it is not promoted: {reason}"
            ) from None
        with self._locked(name):
            self._set_alias(name, "production", ref.version)
        return ref

    def rollback(self, name: str) -> BundleRef:
        """Point ``production`` back at the version it held before the current one."""
        with self._locked(name):
            aliases = self.aliases(name)
            current = aliases.get("production")
            earlier = [h["version"] for h in aliases.get("history", []) if h["alias"] == "production"]
            # history holds every production version in order; drop the current one and any repeats of it.
            while earlier and earlier[-1] == current:
                earlier.pop()
            if current is None or not earlier:
                raise BundleError(f"model '{name}': no earlier production version to roll back to")
            previous = earlier[-1]
            aliases["history"] = _trim_history(aliases.get("history", []), current)
            write_json(self.root / name / ALIASES, aliases)
            self._set_alias(name, "production", previous, record=False)
        return self.resolve(name, previous)

    def _set_alias(self, name: str, alias: str, version: str, record: bool = True) -> None:
        aliases = self.aliases(name)
        aliases[alias] = version
        if record:
            stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            aliases.setdefault("history", []).append({"alias": alias, "version": version, "at": stamp})
        write_json(self.root / name / ALIASES, aliases)

    def _locked(self, name: str) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.root / name / ".lock")


def _remove_stale_staging(folder: Path) -> None:
    """Remove ``.vN.tmp-PID`` folders whose writer process no longer exists (killed mid-write)."""
    for path in folder.iterdir():
        found = STAGING_RE.match(path.name)
        if found and path.is_dir() and not _process_exists(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # alive but another user's; or not a real PID: keep it
        return True
    return True


def _trim_history(history: list[dict[str, Any]], current: str) -> list[dict[str, Any]]:
    """History without the last production entry for ``current`` (the one being rolled back)."""
    trimmed = list(history)
    for i in range(len(trimmed) - 1, -1, -1):
        if trimmed[i]["alias"] == "production" and trimmed[i]["version"] == current:
            del trimmed[i]
            break
    return trimmed


def resolve_reference(reference: str | Path) -> BundleRef:
    """Turn a model reference (bundle folder, ``STORE/NAME``, ``STORE/NAME@VERSION``) into a bundle."""
    text = str(reference)
    version = None
    if "@" in Path(text).name:
        text, version = text.rsplit("@", 1)
    path = Path(text)
    if version is None and (path / MANIFEST).is_file():
        manifest = read_manifest(path)
        return BundleRef(path, str(manifest.get("name")), str(manifest.get("version")))
    if (path / ALIASES).is_file() or ModelStore(path.parent).versions(path.name):
        return ModelStore(path.parent).resolve(path.name, version)
    raise BundleError(
        f"'{reference}' is neither a bundle folder (with {MANIFEST}) nor a model in a store (STORE/NAME)"
    )
