"""Micro-batching: concurrent requests share one forward pass.

Each request hands its inputs (preprocessed image tensors, or texts) to :meth:`Batcher.embed`
and awaits their embeddings (or what its ``finish`` function makes of them on the model thread,
e.g. a pair's score, so that no tensor work happens on the event loop). A single task drains a
bounded asyncio queue: it takes the first waiting request, then keeps collecting for at most
``max_wait_ms`` or until ``max_batch`` inputs, and runs the whole batch on one model thread, off
the event loop. When the queue is full a
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

Rows = Any  # (N, D) embeddings: a torch tensor or a numpy array (see siamkit.serving.backend)
RunBatch = Callable[[list[Any]], Rows]
Finish = Callable[[Rows], Any]


class Busy(Exception):
    """The model's queue is full: try again shortly."""


@dataclass
class _Failed:
    error: Exception


@dataclass
class _Job:
    items: Sequence[Any]
    future: asyncio.Future[Any] = field(repr=False)
    finish: Finish | None = None


class Batcher:
    """Queue inputs of concurrent requests into batches for ``run`` (inputs -> (N, D) rows).

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
        self._busy = False  # a batch is on the model thread

    @property
    def depth(self) -> int:
        """Requests waiting for the model."""
        return self._queue.qsize() if self._queue is not None else self._in_flight

    def start(self) -> None:
        """Start the batching task in the running event loop."""
        if self.enabled and self._task is None:
            self._queue = asyncio.Queue(self.queue_size)
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def stop(self, timeout: float = 30.0) -> None:
        """Serve the requests already queued (for at most ``timeout`` seconds), then stop the
        task and the model thread."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._busy or self.depth) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.executor.shutdown(wait=True)

    def call(self, jobs: list[_Job]) -> list[Any]:
        """Run the jobs' inputs as one batch and each job's ``finish`` on its rows (the model
        thread's work); one result, or the exception it raised, per job."""
        items = [item for job in jobs for item in job.items]
        self.observe_batch(len(items))
        out = self.run(items)
        results: list[Any] = []
        start = 0
        for job in jobs:
            rows = out[start : start + len(job.items)]
            start += len(job.items)
            try:
                results.append(rows if job.finish is None else job.finish(rows))
            except Exception as error:  # noqa: BLE001 -- this job's own failure
                results.append(_Failed(error))
        return results

    async def embed(self, items: Sequence[Any], finish: Finish | None = None) -> Any:
        """Embeddings (len(items), D) of ``items``, computed with other requests' inputs, or
        ``finish(embeddings)`` computed on the model thread."""
        loop = asyncio.get_running_loop()
        if not self.enabled or self._queue is None:
            if self._in_flight >= self.queue_size:
                raise Busy("the model's queue is full")
            self._in_flight += 1
            try:
                job = _Job(list(items), loop.create_future(), finish)
                (result,) = await loop.run_in_executor(self.executor, self.call, [job])
            finally:
                self._in_flight -= 1
            if isinstance(result, _Failed):
                raise result.error
            return result
        job = _Job(items, loop.create_future(), finish)
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
            self._busy = True
            try:
                results = await loop.run_in_executor(self.executor, self.call, jobs)
            except Exception as error:  # noqa: BLE001 -- every waiting request gets the error
                results = [_Failed(error)] * len(jobs)
            finally:
                self._busy = False
            for job, result in zip(jobs, results, strict=True):
                if job.future.done():  # a client that went away cancelled its future
                    continue
                if isinstance(result, _Failed):
                    job.future.set_exception(result.error)
                else:
                    job.future.set_result(result)

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
