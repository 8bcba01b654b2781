"""Micro-batching: concurrent requests share one forward pass.

Each request hands its inputs (preprocessed image tensors, or texts) to :meth:`Batcher.embed`
and awaits their embeddings. A single task drains a bounded asyncio queue: it takes the first
waiting request, then keeps collecting for at most ``max_wait_ms`` or until ``max_batch`` inputs,
and runs the whole batch on one model thread, off the event loop. When the queue is full a
request fails at once with :class:`Busy` (the app answers 503 with ``Retry-After``) instead of
waiting without bound. With batching off, every request runs its own forward pass on the same
model thread (the baseline the load benchmark compares with), still bounded by ``queue_size``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

RunBatch = Callable[[list[Any]], Tensor]


class Busy(Exception):
    """The model's queue is full: try again shortly."""


@dataclass
class _Job:
    items: Sequence[Any]
    future: asyncio.Future[Tensor] = field(repr=False)


class Batcher:
    """Queue inputs of concurrent requests into batches for ``run`` (inputs -> (N, D) tensor).

    Call :meth:`start` inside the event loop and :meth:`stop` at shutdown. ``observe_batch``
    is called with the size of every batch run (for the metrics).
    """

    def __init__(
        self,
        run: RunBatch,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        queue_size: int = 256,
        enabled: bool = True,
        observe_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run, self.enabled = run, enabled
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.queue_size = queue_size
        self.observe_batch = observe_batch or (lambda n: None)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="siamkit-model")
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._in_flight = 0  # requests waiting for or inside the model (batching off)

    @property
    def depth(self) -> int:
        """Requests waiting for the model."""
        return self._queue.qsize() if self._queue is not None else self._in_flight

    def start(self) -> None:
        """Start the batching task in the running event loop."""
        if self.enabled and self._task is None:
            self._queue = asyncio.Queue(self.queue_size)
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def stop(self) -> None:
        """Finish the batch in progress, then stop the task and the model thread."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.executor.shutdown(wait=True)

    def call(self, items: list[Any]) -> Tensor:
        """Run one batch on the calling thread and record its size (the model thread's work)."""
        self.observe_batch(len(items))
        return self.run(items)

    async def embed(self, items: Sequence[Any]) -> Tensor:
        """Embeddings (len(items), D) of ``items``, computed with other requests' inputs."""
        loop = asyncio.get_running_loop()
        if not self.enabled or self._queue is None:
            if self._in_flight >= self.queue_size:
                raise Busy("the model's queue is full")
            self._in_flight += 1
            try:
                return await loop.run_in_executor(self.executor, self.call, list(items))
            finally:
                self._in_flight -= 1
        job = _Job(items, loop.create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Busy("the model's queue is full") from None
        return await job.future

    async def _drain(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect(self._queue, loop)
            items = [item for job in jobs for item in job.items]
            try:
                out = await loop.run_in_executor(self.executor, self.call, items)
            except Exception as error:  # noqa: BLE001 -- every waiting request gets the error
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            start = 0
            for job in jobs:
                if not job.future.done():  # a client that went away cancelled its future
                    job.future.set_result(out[start : start + len(job.items)])
                start += len(job.items)

    async def _collect(
        self, queue: asyncio.Queue[_Job], loop: asyncio.AbstractEventLoop
    ) -> list[_Job]:
        """The first waiting job, then more until ``max_batch`` inputs or ``max_wait``."""
        jobs = [await queue.get()]
        count = len(jobs[0].items)
        deadline = loop.time() + self.max_wait
        while count < self.max_batch:
            if queue.empty():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    job = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                job = queue.get_nowait()
            jobs.append(job)
            count += len(job.items)
        return jobs
