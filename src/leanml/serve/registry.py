"""The models a server serves, and hot reload when the store's aliases change.

``leanml serve`` takes a store (every model in it), ``STORE/NAME`` (one model) or a bundle folder (one
fixed bundle). Store models are served at their ``production`` version, else ``latest``. A background
task checks the aliases every ``reload_interval_s``; when the wanted version changes it loads and verifies
the new bundle in a thread and swaps it in between batches. A bundle that fails its checks is refused,
logged and counted, and the old one keeps serving. A refusal is remembered by the bundle's content (its
manifest and the size and time of each file), not its name, so a repaired version is tried again.

The loop itself never dies: a failure that is not the bundle's fault (file descriptors exhausted, the
store unreadable for a moment) is logged once, counted in ``leanml_reload_errors_total``, and the loop
tries again at its next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from leanml.bundle.artifact import MANIFEST, BundleError, load_bundle
from leanml.bundle.store import ALIASES, ModelStore
from leanml.config import ServeConfig
from leanml.serve.batcher import Batcher
from leanml.serve.engine import Job, ServedModel
from leanml.serve.metrics import ServerMetrics

log = logging.getLogger("leanml.serve")


@dataclass(frozen=True)
class Source:
    """Where a served model comes from: a store model (reloadable) or a fixed bundle folder."""

    name: str
    store: Path | None = None
    bundle: Path | None = None

    def wanted(self) -> Path:
        """The bundle folder that should be served now."""
        if self.bundle is not None:
            return self.bundle
        assert self.store is not None
        return ModelStore(self.store).resolve(self.name).path


def discover(reference: str | Path) -> list[Source]:
    """The models behind a serve reference (store, STORE/NAME or bundle folder)."""
    path = Path(reference)
    if (path / MANIFEST).is_file():
        from leanml.bundle.artifact import read_manifest

        return [Source(name=str(read_manifest(path)["name"]), bundle=path)]
    if (path / ALIASES).is_file() or ModelStore(path.parent).versions(path.name):
        return [Source(name=path.name, store=path.parent)]
    names = ModelStore(path).models()
    if not names:
        raise BundleError(f"'{reference}' holds no bundle, model or store with models")
    return [Source(name=name, store=path) for name in names]


class ModelSlot:
    """One served model: the current bundle, its batcher, and where it reloads from."""

    def __init__(
        self, source: Source, served: ServedModel, config: ServeConfig, metrics: ServerMetrics
    ) -> None:
        self.source = source
        self.served = served
        self.metrics = metrics
        self.refused: str | None = None
        """Fingerprint (:func:`fingerprint`) of the last bundle refused, so it is not loaded again."""
        self.batcher = Batcher(
            self._infer,
            config.max_batch_size,
            config.max_wait_ms,
            config.max_queue,
            on_batch=metrics.batch_rows.labels(model=source.name).observe,
        )
        metrics.watch_queue(source.name, lambda: self.batcher.depth)
        metrics.serving(source.name, None, served.version)

    def _infer(self, jobs: list[Job]) -> list[object]:
        # The slot's current model at the moment the batch runs: a swap takes effect on the next batch.
        return self.served.infer(jobs)  # type: ignore[return-value]

    def swap(self, served: ServedModel) -> None:
        """Serve another bundle from the next batch on."""
        old = self.served
        self.served = served
        self.metrics.serving(self.source.name, old.version, served.version)


class Registry:
    """Every served model by name, with the reload loop."""

    def __init__(self, reference: str | Path, config: ServeConfig, metrics: ServerMetrics) -> None:
        self.reference = reference
        self.config = config
        self.metrics = metrics
        self.slots: dict[str, ModelSlot] = {}
        self._reloader: asyncio.Task[None] | None = None

    def load(self) -> None:
        """Load every model (at start-up; a failure here stops the server with its message)."""
        for source in discover(self.reference):
            bundle = load_bundle(source.wanted(), threads=self.config.threads)
            self.slots[source.name] = ModelSlot(source, ServedModel(bundle), self.config, self.metrics)

    async def start(self) -> None:
        """Start the batchers and the reload loop."""
        for slot in self.slots.values():
            slot.batcher.start()
        if any(slot.source.store is not None for slot in self.slots.values()):
            self._reloader = asyncio.get_running_loop().create_task(self._reload_forever())

    async def stop(self) -> None:
        """Stop the reload loop and the batchers."""
        if self._reloader is not None:
            self._reloader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reloader
        for slot in self.slots.values():
            await slot.batcher.stop()

    async def _reload_forever(self) -> None:
        last_error: str | None = None
        while True:
            await asyncio.sleep(self.config.reload_interval_s)
            try:
                for slot in self.slots.values():
                    if slot.source.store is not None:
                        await self.reload(slot)
            except Exception as exc:  # the loop must outlive anything: count it, log it once, retry
                self.metrics.reload_errors.inc()
                text = f"{type(exc).__name__}: {exc}"
                if text != last_error:
                    log.error(
                        "hot reload failed (retrying every %gs): %s", self.config.reload_interval_s, text
                    )
                    last_error = text
            else:
                if last_error is not None:
                    log.info("hot reload works again")
                last_error = None

    async def reload(self, slot: ModelSlot) -> None:
        """Load the version the aliases point at, when it differs from the one being served.

        A bundle that fails its checks is refused (logged, counted) and not tried again until its files
        change. Failures of the file system itself (``OSError``) are raised, for the loop to retry.
        """
        try:
            wanted = slot.source.wanted()
        except BundleError as exc:
            log.warning("model %s: cannot resolve its version: %s", slot.source.name, exc)
            return
        if wanted == slot.served.bundle.path:
            return
        seen = await asyncio.to_thread(fingerprint, wanted)
        if seen == slot.refused:
            return
        try:
            bundle = await asyncio.to_thread(load_bundle, wanted, "onnx", self.config.threads)
            served = await asyncio.to_thread(ServedModel, bundle)
        except OSError:
            raise
        except Exception as exc:  # the bundle's fault: keep the old model serving, log and count it
            slot.refused = seen
            self.metrics.reloads.labels(model=slot.source.name, outcome="refused").inc()
            log.error(
                "model %s: refused %s, still serving %s: %s",
                slot.source.name,
                wanted.name,
                slot.served.version,
                exc,
            )
            return
        slot.refused = None
        slot.swap(served)
        self.metrics.reloads.labels(model=slot.source.name, outcome="loaded").inc()
        log.info("model %s: now serving %s", slot.source.name, served.version)


def fingerprint(folder: Path) -> str:
    """What a bundle folder holds now: its path, manifest bytes, and each file's name, size and mtime.

    Cheap (one small read and a stat per file) and changed by any repair of the files.
    """
    digest = hashlib.sha256(str(folder).encode())
    with contextlib.suppress(OSError):
        digest.update((folder / MANIFEST).read_bytes())
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        with contextlib.suppress(OSError):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()
