"""Dynamic batching: concurrent requests share model calls, and one worker thread owns the model.

Requests enqueue observations on a bounded queue (full: 503, never unbounded memory). The worker takes what is
waiting, waits at most `max_wait_ms` for more when the batch is not full, groups the observations by
`unnorm_key` (one key per model call) and runs each group in a single-thread executor, so inference never runs
concurrently and the event loop stays free to accept, parse and answer requests meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from robovla.serve.errors import RequestError
from robovla.serve.metrics import Metrics
from robovla.serve.observation import Observation

logger = logging.getLogger("robovla.serve")

PredictFn = Callable[[Sequence[Observation]], np.ndarray]  # same unnorm_key throughout -> actions [B, D]


@dataclass(frozen=True)
class BatchedAction:
    chunk: np.ndarray  # [horizon, action_dim]: the next actions in order (horizon 1 unless the model chunks)
    batch_size: int  # observations in the model call that produced it

    @property
    def action(self) -> np.ndarray:
        """The action to execute now: what OpenVLA's `/act` returns."""
        return self.chunk[0]


@dataclass
class _Pending:
    observation: Observation
    future: asyncio.Future


class DynamicBatcher:
    def __init__(self, predict: PredictFn, max_batch_size: int, max_wait_ms: float, max_queue: int,
                 retry_after_s: int, metrics: Metrics) -> None:
        self._predict = predict
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000.0
        self._retry_after_s = retry_after_s
        self._metrics = metrics
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self._executor: ThreadPoolExecutor | None = None
        self._worker: asyncio.Task | None = None
        metrics.queue_capacity = max_queue

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="robovla-model")
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="robovla-batcher")

    async def stop(self) -> None:
        """Finish the model call in flight, then fail whatever still waits (the server is going away)."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        _fail(self._drain(self._queue.qsize()), RequestError(503, "the server is shutting down"))

    def submit(self, observations: Sequence[Observation]) -> list[asyncio.Future]:
        """Enqueue all observations or none; a full queue is a 503 with Retry-After."""
        if self._queue.qsize() + len(observations) > self._queue.maxsize:
            self._metrics.rejected_queue_full += 1
            raise RequestError(
                503, f"the server is busy: {self._queue.qsize()} observations are queued (limit "
                     f"{self._queue.maxsize}); retry later", "queue",
                headers={"Retry-After": str(self._retry_after_s)},
            )
        loop = asyncio.get_running_loop()
        futures = []
        for observation in observations:
            pending = _Pending(observation, loop.create_future())
            self._queue.put_nowait(pending)
            futures.append(pending.future)
        self._metrics.queue_depth = self._queue.qsize()
        return futures

    def _drain(self, limit: int) -> list[_Pending]:
        taken = []
        while len(taken) < limit and not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            try:
                batch += self._drain(self._max_batch_size - len(batch))
                if len(batch) < self._max_batch_size and self._max_wait_s > 0:
                    await asyncio.sleep(self._max_wait_s)  # bounded wait for company
                    batch += self._drain(self._max_batch_size - len(batch))
                self._metrics.queue_depth = self._queue.qsize()
                await self._serve(batch)
            except asyncio.CancelledError:  # stop(): what was taken off the queue gets no action
                _fail(batch, RequestError(503, "the server is shutting down"))
                raise

    async def _serve(self, batch: list[_Pending]) -> None:
        live = [p for p in batch if not p.future.done()]  # a done future here was cancelled by its client
        self._metrics.cancelled += len(batch) - len(live)
        groups: dict[str, list[_Pending]] = {}
        for pending in live:
            groups.setdefault(pending.observation.unnorm_key, []).append(pending)
        loop = asyncio.get_running_loop()
        for group in groups.values():
            start = time.perf_counter()
            try:
                chunks = await loop.run_in_executor(self._executor, self._predict, [p.observation for p in group])
            except Exception as error:  # these requests fail, the worker lives on
                logger.exception("inference failed for a batch of %d", len(group))
                _fail(group, error)
                continue
            self._metrics.record_batch(len(group), time.perf_counter() - start)
            for pending, chunk in zip(group, chunks):
                if not pending.future.done():
                    pending.future.set_result(BatchedAction(chunk, len(group)))


def _fail(pending: list[_Pending], error: Exception) -> None:
    for item in pending:
        if not item.future.done():
            item.future.set_exception(error)
