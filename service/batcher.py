"""Micro-batching: requests' already-decoded arrays go into one queue; a single worker gathers
them into forward passes of up to ``max_batch_images`` and splits the results back.

- Decoding happens before :meth:`MicroBatcher.submit`, so a bad request fails alone, in its
  own handler, and never reaches a batch.
- A batch closes when it is full, when its oldest request has waited ``max_wait_s``, or as soon
  as no other request is on its way (being read or decoded: see :meth:`MicroBatcher.arrival`).
  So a lone client pays no wait at all, and under load the previous forward pass takes longer
  than ``max_wait_s`` anyway, so batches form without any waiting.
- Forward passes run in one dedicated thread, off the event loop, one at a time.
- If a forward pass raises, only the requests in that batch fail (500); the worker goes on.
- A request cancelled while queued (its client went away) is dropped from the batch.
- The queue is bounded (``max_queue_images``): beyond it, requests get 503 at once.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from service.errors import InferenceFailed, NotReady, Overloaded
from service.inference import Op, Predictor
from service.metrics import Metrics

if TYPE_CHECKING:  # imported only when tracing is on
    from service.tracing import QueuedRequest, Tracing

log = logging.getLogger(__name__)

Result = tuple[np.ndarray, ...]


@dataclass(eq=False)
class _Job:
    op: Op
    inputs: np.ndarray  # (n, ...) float32
    future: asyncio.Future[Result]
    trace: QueuedRequest | None = None  # with tracing on: the request's spans
    enqueued_at: float = field(default_factory=time.perf_counter)

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])


class MicroBatcher:
    def __init__(
        self,
        predictor: Predictor,
        *,
        max_batch_images: int,
        max_wait_s: float,
        max_queue_images: int,
        metrics: Metrics,
        tracing: Tracing | None = None,
    ) -> None:
        self.predictor = predictor
        self.tracing = tracing
        self.max_batch_images = max_batch_images
        self.max_wait_s = max_wait_s
        self.max_queue_images = max_queue_images
        self.metrics = metrics
        self._pending: collections.deque[_Job] = collections.deque()
        self._queued_images = 0
        self._arriving = 0  # requests being read or decoded, which will submit soon
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._worker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._worker = self._loop.create_task(self._run(), name="micro-batcher")

    def arrival(self) -> _Arrival:
        """``with batcher.arrival():`` around the reading and decoding of a request that will
        :meth:`submit`: while any request is on its way, a forming batch waits for it (up to
        ``max_wait_s``); when none is, it runs at once."""
        return _Arrival(self)

    def _arrived(self) -> None:
        self._arriving -= 1
        if not self._arriving:
            self._wakeup.set()  # a batch waiting for company can go

    async def submit(self, op: Op, inputs: np.ndarray) -> Result:
        """Queue ``inputs`` (n rows) for ``op`` and wait for its n rows of results."""
        if self._closed or self._worker is None or self._loop is None:
            raise NotReady("the server is shutting down" if self._closed else "the model is not loaded yet")
        n = int(inputs.shape[0])
        if self._queued_images + n > self.max_queue_images:
            raise Overloaded(
                f"{self._queued_images} images are queued already (limit {self.max_queue_images}); retry shortly",
                headers={"retry-after": "1"},
            )
        trace = None if self.tracing is None else self.tracing.queued(op.value, n)
        job = _Job(op, inputs, self._loop.create_future(), trace)
        self._pending.append(job)
        self._queued_images += n
        self.metrics.queue_images.set(self._queued_images)
        self._idle.clear()
        # wake the worker only when it has something to decide: its first job, or a full batch
        if len(self._pending) == 1 or self._queued_images >= self.max_batch_images:
            self._wakeup.set()
        return await job.future  # a cancelled wait cancels the future; the worker then skips the job

    async def close(self, timeout_s: float) -> bool:
        """Stop accepting work, finish what was accepted (up to ``timeout_s``), stop the worker.

        Returns True when everything accepted was answered.
        """
        self._closed = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            drained = True
        except TimeoutError:
            drained = False
            log.warning("shutdown: %d queued images not processed within %.1f s", self._queued_images, timeout_s)
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for job in self._pending:
            if not job.future.done():
                job.future.set_exception(NotReady("the server shut down before this request ran"))
        self._executor.shutdown(wait=True)
        return drained

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_for_more()
            jobs = self._take_batch()
            if jobs:
                await self._execute(jobs)

    async def _wait_for_more(self) -> None:
        """Let the batch fill while requests are on their way, until it is full or its oldest job
        has waited ``max_wait_s``."""
        deadline = self._pending[0].enqueued_at + self.max_wait_s
        while self._arriving and self._queued_images < self.max_batch_images and not self._closed:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Job]:
        """Jobs from the front of the queue, up to ``max_batch_images`` (a bigger job goes alone)."""
        jobs: list[_Job] = []
        total = 0
        while self._pending:
            job = self._pending[0]
            if jobs and total + job.size > self.max_batch_images:
                break
            self._pending.popleft()
            self._queued_images -= job.size
            if job.future.done():  # cancelled: the client went away
                if job.trace is not None:
                    job.trace.wait.end()
                continue
            jobs.append(job)
            total += job.size
        self.metrics.queue_images.set(self._queued_images)
        return jobs

    async def _execute(self, jobs: list[_Job]) -> None:
        # once per batch, not per request: the wait of its oldest request, the longest in it
        self.metrics.queue_wait.observe(time.perf_counter() - jobs[0].enqueued_at)
        by_op: dict[Op, list[_Job]] = {}  # one forward pass per operation
        for job in jobs:
            by_op.setdefault(job.op, []).append(job)
        loop = asyncio.get_running_loop()
        for op, group in by_op.items():
            inputs = group[0].inputs if len(group) == 1 else np.concatenate([j.inputs for j in group])
            traces = [j.trace for j in group if j.trace is not None]
            for trace in traces:
                trace.wait.end()
            started, started_ns = time.perf_counter(), time.time_ns()
            try:
                outputs = await loop.run_in_executor(self._executor, self.predictor.run, op, inputs)
            except Exception as exc:
                self.metrics.batch_failures.labels(op.value).inc()
                log.exception("forward pass for %s on %d inputs failed", op.value, len(inputs))
                error = InferenceFailed(f"inference failed for the batch this request was in ({type(exc).__name__})")
                for job in group:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            if self.tracing is not None:
                self.tracing.forward(op.value, len(inputs), traces, started_ns, time.time_ns())
            self.metrics.inference_seconds.labels(op.value).observe(time.perf_counter() - started)
            self.metrics.batch_images.labels(op.value).observe(len(inputs))
            self.metrics.images.labels(op.value).inc(len(inputs))
            _split(group, outputs)


class _Arrival:
    """The context manager behind :meth:`MicroBatcher.arrival` (a class: cheaper than a generator)."""

    __slots__ = ("batcher",)

    def __init__(self, batcher: MicroBatcher) -> None:
        self.batcher = batcher

    def __enter__(self) -> None:
        self.batcher._arriving += 1

    def __exit__(self, *exc: object) -> None:
        self.batcher._arrived()


def _split(jobs: Sequence[_Job], outputs: Result) -> None:
    """Give each job its own rows of every output, in queue order."""
    start = 0
    for job in jobs:
        end = start + job.size
        if not job.future.done():
            job.future.set_result(tuple(out[start:end] for out in outputs))
        start = end
