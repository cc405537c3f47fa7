"""Micro-batching: concurrent requests' queries gathered into one model call, off the event loop.

A request awaits :meth:`MicroBatcher.submit`; one collector task takes the first waiting item, then
keeps taking items until ``max_batch`` are gathered or ``max_wait_ms`` has passed, and runs the batch
function in a single worker thread (so the model is never entered twice at once, and the event loop
keeps accepting requests meanwhile). Items arriving while a batch runs wait for the next one, so under
load batches fill up without any wait at all. ``max_batch=1`` turns batching off.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass
class _Pending(Generic[In, Out]):
    item: In
    future: asyncio.Future[Out]
    queued_at: float


@dataclass(frozen=True)
class BatchStats:
    """What one item's batch looked like: its size and how long the item queued before it ran."""

    size: int
    queue_ms: float


class MicroBatcher(Generic[In, Out]):
    def __init__(
        self,
        fn: Callable[[Sequence[In]], Sequence[Out]],
        max_batch: int,
        max_wait_ms: float,
        executor: ThreadPoolExecutor,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.executor = executor
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Pending[In, tuple[Out, BatchStats]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, item: In) -> tuple[Out, BatchStats]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Out, BatchStats]] = loop.create_future()
        await self._queue.put(_Pending(item, future, time.perf_counter()))
        return await future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [p for p in batch if not p.future.done()]  # cancelled: the client went away
            if live:
                await self._run(live)

    async def _run(self, batch: list[_Pending[In, tuple[Out, BatchStats]]]) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        if self.on_batch is not None:
            self.on_batch(len(batch))
        try:
            outputs = await loop.run_in_executor(self.executor, self.fn, [p.item for p in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0].future, exc)
                return
            for p in batch:  # one bad item must not fail its neighbours: retry each alone
                await self._run([p])
            return
        for p, out in zip(batch, outputs, strict=True):
            _settle(p.future, (out, BatchStats(len(batch), (started - p.queued_at) * 1000.0)))


def _settle(future: asyncio.Future[Out], value: Out | BaseException) -> None:
    if future.done():
        return
    if isinstance(value, BaseException):
        future.set_exception(value)
    else:
        future.set_result(value)
