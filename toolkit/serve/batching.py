"""Dynamic batching: requests that arrive within `max_wait_ms` of each other run as one batch.

A runtime session is not safe to call from two threads, and a batch of 8 costs far less than 8
batches of 1 on most runtimes, so every inference goes through one worker thread: either one
request at a time (no batching) or a batch gathered from the queue. The event loop never
blocks on inference.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


class Inference:
    """Runs `predict` on one dedicated thread; `observe(batch_size, seconds)` sees each call."""

    def __init__(
        self,
        predict: Predict,
        *,
        max_batch: int = 1,
        max_wait_ms: float = 0.0,
        observe: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch >= 1 and max_wait_ms >= 0; got {max_batch}, {max_wait_ms}")
        self.predict = predict
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.observe = observe or (lambda n, s: None)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._pending: deque[tuple[np.ndarray, asyncio.Future[np.ndarray], float]] = deque()
        self._samples = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def batching(self) -> bool:
        return self.max_batch > 1

    def _timed(self, x: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = self.predict(x)
        self.observe(len(x), time.perf_counter() - start)
        return out

    async def start(self) -> None:
        if self.batching and self._task is None:
            self._pending = deque()
            self._samples = 0
            self._wake, self._full = asyncio.Event(), asyncio.Event()
            self._task = asyncio.create_task(self._gather(), name="batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._pool.shutdown(wait=True)

    async def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs for `x` (N, ...); batched with other requests when batching is on."""
        loop = asyncio.get_running_loop()
        if self._task is None or len(x) >= self.max_batch:
            return await loop.run_in_executor(self._pool, self._timed, x)
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((x, future, loop.time()))
        self._samples += len(x)
        self._wake.set()
        if self._samples >= self.max_batch:
            self._full.set()
        return await future

    async def _gather(self) -> None:
        """One batch at a time: everything queued within max_wait of the oldest request, up to
        max_batch samples. Requests that queue while a batch runs go into the next one."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if not self._pending:
                self._wake.clear()
                continue
            left = self._pending[0][2] + self.max_wait - loop.time()
            if self._samples < self.max_batch and left > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), left)
            items, size = [], 0
            while self._pending and (
                not items or size + len(self._pending[0][0]) <= self.max_batch
            ):
                x, future, _ = self._pending.popleft()
                items.append((x, future))
                size += len(x)
            self._samples -= size
            if self._samples < self.max_batch:
                self._full.clear()
            if not self._pending:
                self._wake.clear()
            await self._run(items)

    async def _run(self, items: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> None:
        loop = asyncio.get_running_loop()
        live = [(x, f) for x, f in items if not f.cancelled()]  # a client that went away
        if not live:
            return
        try:
            out = await loop.run_in_executor(
                self._pool, self._timed, np.concatenate([x for x, _ in live])
            )
        except Exception as err:  # the runtime failed: every waiting request hears it
            for _, future in live:
                if not future.done():
                    future.set_exception(err)
            return
        start = 0
        for x, future in live:
            if not future.done():
                future.set_result(out[start : start + len(x)])
            start += len(x)
