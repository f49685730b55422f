"""Adaptive batching inside the server process.

Requests wait in a bounded queue. A worker takes the first, then every request already queued, then
keeps waiting for more until the batch holds ``max_batch_size`` rows or ``max_wait_ms`` has passed since
it started, and runs the batch in a worker thread. The event loop keeps accepting requests meanwhile, so
the next batch fills while this one runs: with ``max_wait_ms: 0`` (the default) a lone request runs at
once, and under load batches still form from the requests that arrive during a model call.
A full queue sheds load: the request is refused at once with 503 and ``Retry-After``. A request whose
deadline has passed before its batch runs is answered 504 without being computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from leanml.serve.engine import Job
from leanml.serve.validation import RequestError

RETRY_AFTER_S = 1


class Batcher:
    """The queue and worker of one model."""

    def __init__(
        self,
        infer: Callable[[list[Job]], list[Any]],
        max_batch_size: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.infer = infer
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=max_queue)
        self.on_batch = on_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leanml-infer")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker and its thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def depth(self) -> int:
        """Requests waiting."""
        return self.queue.qsize()

    def submit(self, job: Job) -> None:
        """Queue a job, or refuse it with 503 when the queue is full."""
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise RequestError(
                503,
                f"the server is at capacity ({self.queue.maxsize} requests queued); "
                f"retry in {RETRY_AFTER_S} s",
            ) from None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            batch, rows = [first], first.rows
            close_at = loop.time() + self.max_wait_s
            while rows < self.max_batch_size:
                try:
                    if not self.queue.empty():  # what queued while the last batch ran: no waiting
                        job = self.queue.get_nowait()
                    else:
                        remaining = close_at - loop.time()
                        if remaining <= 0:
                            break
                        job = await asyncio.wait_for(self.queue.get(), remaining)
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                batch.append(job)
                rows += job.rows
            now = time.perf_counter()
            live = []
            for job in batch:
                if now > job.deadline:
                    _settle(job, RequestError(504, "the request's deadline passed while it was queued"))
                else:
                    job.queued_s = now - job.enqueued
                    live.append(job)
            if not live:
                continue
            if self.on_batch is not None:
                self.on_batch(sum(job.rows for job in live))
            try:
                answers = await loop.run_in_executor(self.executor, self.infer, live)
            except Exception as exc:  # a failure of the model itself: every request of the batch learns it
                answers = [exc] * len(live)
            for job, answer in zip(live, answers, strict=True):
                _settle(job, answer)


def _settle(job: Job, answer: Any) -> None:
    if job.future.done():  # the client gave up (timeout or disconnect)
        return
    if isinstance(answer, BaseException):
        job.future.set_exception(answer)
    else:
        job.future.set_result(answer)
