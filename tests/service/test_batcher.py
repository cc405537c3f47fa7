"""MicroBatcher: gathering, batch bounds, routing of outputs and errors, cancellation, worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TypeVar

import pytest

from rsir.service.batcher import BatchStats, MicroBatcher

T = TypeVar("T")
POISON = -1


class Model:
    """A batch function that doubles its inputs and records every call (from the worker thread)."""

    def __init__(self, gate: threading.Event | None = None, always_fail: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.threads: list[threading.Thread] = []
        self.started = threading.Event()
        self.gate = gate
        self.always_fail = always_fail

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.batches.append(list(items))
        self.threads.append(threading.current_thread())
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(5.0), "the test never opened the gate"
        if self.always_fail:
            raise RuntimeError("model is down")
        if POISON in items:
            raise ValueError(f"poisoned batch {list(items)}")
        return [x * 2 for x in items]

    @property
    def sizes(self) -> list[int]:
        return [len(b) for b in self.batches]


def run(main: Callable[[], Awaitable[T]], timeout: float = 10.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(main(), timeout)

    # In a thread of its own: Playwright's sync API (tests/e2e, same session) keeps an event loop
    # running on the main thread, where asyncio.run() refuses to start another.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, bounded()).result()


@asynccontextmanager
async def batcher(
    model: Model, max_batch: int, max_wait_ms: float, sizes: list[int] | None = None
) -> AsyncIterator[MicroBatcher[int, int]]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-model")
    b: MicroBatcher[int, int] = MicroBatcher(
        model, max_batch, max_wait_ms, executor, on_batch=None if sizes is None else sizes.append
    )
    b.start()
    try:
        yield b
    finally:
        await b.stop()
        executor.shutdown(wait=True)


async def _started(model: Model) -> None:
    """Wait (without blocking the loop) until the model is inside a call."""
    assert await asyncio.to_thread(model.started.wait, 5.0)


def test_concurrent_submits_are_gathered_into_one_call() -> None:
    model = Model()
    sizes: list[int] = []

    async def main() -> list[tuple[int, BatchStats]]:
        async with batcher(model, max_batch=16, max_wait_ms=50, sizes=sizes) as b:
            return await asyncio.gather(*(b.submit(x) for x in range(6)))

    out = run(main)
    assert model.batches == [[0, 1, 2, 3, 4, 5]]
    assert sizes == [6]
    assert [value for value, _ in out] == [0, 2, 4, 6, 8, 10]
    assert all(stats.size == 6 for _, stats in out)


def test_items_arriving_within_max_wait_join_the_batch() -> None:
    model = Model()

    async def main() -> list[int]:
        async with batcher(model, max_batch=3, max_wait_ms=2000) as b:
            first = asyncio.ensure_future(b.submit(10))
            await asyncio.sleep(0.02)  # the collector holds the first item, waiting for more
            rest = await asyncio.gather(b.submit(11), b.submit(12))
            return [(await first)[0], *(v for v, _ in rest)]

    start = time.perf_counter()
    assert run(main) == [20, 22, 24]
    assert model.batches == [[10, 11, 12]]
    assert time.perf_counter() - start < 1.5  # a full batch runs at once, without the max wait


@pytest.mark.parametrize(("max_batch", "expected"), [(4, [4, 4, 2]), (3, [3, 3, 3, 1]), (1, [1] * 10)])
def test_batches_never_exceed_max_batch(max_batch: int, expected: list[int]) -> None:
    model = Model()
    sizes: list[int] = []

    async def main() -> list[tuple[int, BatchStats]]:
        async with batcher(model, max_batch=max_batch, max_wait_ms=20, sizes=sizes) as b:
            return await asyncio.gather(*(b.submit(x) for x in range(10)))

    out = run(main)
    assert model.sizes == expected and sizes == expected
    assert sorted(x for batch in model.batches for x in batch) == list(range(10))
    assert [value for value, _ in out] == [2 * x for x in range(10)]
    # Each caller's stats name the size of the batch its item ran in.
    size_of = {x: len(batch) for batch in model.batches for x in batch}
    assert [stats.size for _, stats in out] == [size_of[x] for x in range(10)]


def test_max_batch_one_gives_singleton_calls() -> None:
    model = Model()

    async def main() -> list[tuple[int, BatchStats]]:
        async with batcher(model, max_batch=1, max_wait_ms=1000) as b:
            return await asyncio.gather(*(b.submit(x) for x in (7, 3, 9)))

    start = time.perf_counter()
    out = run(main)
    assert model.batches == [[7], [3], [9]]
    assert out == [(14, out[0][1]), (6, out[1][1]), (18, out[2][1])]
    assert all(stats.size == 1 for _, stats in out)
    assert time.perf_counter() - start < 1.0  # no waiting for company that cannot join


def test_outputs_reach_their_own_callers() -> None:
    model = Model()

    async def caller(b: MicroBatcher[int, int], x: int) -> tuple[int, int]:
        await asyncio.sleep(0.001 * (x % 3))  # staggered arrivals spread over several batches
        value, _ = await b.submit(x)
        return x, value

    async def main() -> list[tuple[int, int]]:
        async with batcher(model, max_batch=5, max_wait_ms=2) as b:
            return await asyncio.gather(*(caller(b, x) for x in range(23)))

    assert all(value == 2 * x for x, value in run(main))
    assert max(model.sizes) <= 5 and sum(model.sizes) == 23


def test_a_failing_item_fails_only_its_caller() -> None:
    model = Model()
    sizes: list[int] = []

    async def main() -> tuple[list[tuple[int, BatchStats] | BaseException], int]:
        async with batcher(model, max_batch=8, max_wait_ms=20, sizes=sizes) as b:
            results = await asyncio.gather(*(b.submit(x) for x in (1, 2, POISON, 4)), return_exceptions=True)
            after, _ = await b.submit(5)  # the loop goes on after the failure
            return results, after

    results, after = run(main)
    assert isinstance(results[2], ValueError) and "poisoned" in str(results[2])
    assert [r for i, r in enumerate(results) if i != 2] == [
        (2, BatchStats(1, _queue_ms(results[0]))),
        (4, BatchStats(1, _queue_ms(results[1]))),
        (8, BatchStats(1, _queue_ms(results[3]))),
    ]
    assert after == 10
    # The whole batch first, then each of its items alone.
    assert model.batches == [[1, 2, POISON, 4], [1], [2], [POISON], [4], [5]]
    assert sizes == [4, 1, 1, 1, 1, 1]


def _queue_ms(result: object) -> float:
    assert isinstance(result, tuple)
    stats = result[1]
    assert isinstance(stats, BatchStats)
    return stats.queue_ms


def test_a_failing_model_fails_every_caller_and_the_loop_survives() -> None:
    model = Model(always_fail=True)

    async def main() -> tuple[list[object], bool]:
        async with batcher(model, max_batch=4, max_wait_ms=5) as b:
            first = await asyncio.gather(*(b.submit(x) for x in range(3)), return_exceptions=True)
            second = await asyncio.gather(b.submit(9), return_exceptions=True)
            alive = b._task is not None and not b._task.done()
            return [*first, *second], alive

    results, alive = run(main)
    assert all(isinstance(r, RuntimeError) for r in results) and len(results) == 4
    assert alive


def test_a_caller_cancelled_while_queued_is_skipped() -> None:
    gate = threading.Event()
    model = Model(gate=gate)

    async def main() -> tuple[int, int, bool]:
        async with batcher(model, max_batch=8, max_wait_ms=5) as b:
            busy = asyncio.ensure_future(b.submit(0))
            await _started(model)  # the worker is inside the first batch, blocked on the gate
            leaving = asyncio.ensure_future(b.submit(1))
            staying = asyncio.ensure_future(b.submit(2))
            await asyncio.sleep(0.01)  # both are queued behind the running batch
            leaving.cancel()
            gate.set()
            (v0, _), (v2, _) = await busy, await staying
            with pytest.raises(asyncio.CancelledError):
                await leaving
            (v3, _) = await b.submit(3)
            return v0, v2 + v3, leaving.cancelled()

    v0, v23, cancelled = run(main)
    assert (v0, v23, cancelled) == (0, 10, True)
    assert model.batches == [[0], [2], [3]]  # the cancelled item never reached the model


def test_a_caller_cancelled_while_its_batch_runs_does_not_break_the_loop() -> None:
    gate = threading.Event()
    model = Model(gate=gate)

    async def main() -> tuple[int, int, bool]:
        async with batcher(model, max_batch=8, max_wait_ms=5) as b:
            leaving = asyncio.ensure_future(b.submit(5))
            await _started(model)
            leaving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await leaving
            neighbour = asyncio.ensure_future(b.submit(6))
            gate.set()  # the batch with the cancelled item finishes; its result has no taker
            (v6, _) = await neighbour
            (v7, _) = await b.submit(7)
            alive = b._task is not None and not b._task.done()
            return v6, v7, alive

    assert run(main) == (12, 14, True)
    assert model.batches == [[5], [6], [7]]


def test_batch_stats_queue_times() -> None:
    gate = threading.Event()
    model = Model(gate=gate)
    hold_s, wait_ms = 0.15, 60.0

    async def main() -> tuple[BatchStats, list[BatchStats], BatchStats]:
        async with batcher(model, max_batch=3, max_wait_ms=wait_ms) as b:
            # A lone item waits the whole max_wait for company before it runs.
            gate.set()
            _, lone = await b.submit(1)
            # Items queued behind a running batch wait at least as long as it runs.
            gate.clear()
            model.started.clear()
            busy = asyncio.ensure_future(b.submit(2))
            await _started(model)
            queued = [asyncio.ensure_future(b.submit(x)) for x in (3, 4, 5)]
            await asyncio.sleep(hold_s)
            gate.set()
            await busy
            behind = [stats for _, stats in await asyncio.gather(*queued)]
            # A batch that fills at once does not wait.
            _, full = (await asyncio.gather(*(b.submit(x) for x in (6, 7, 8))))[0]
            return lone, behind, full

    lone, behind, full = run(main)
    assert lone.size == 1 and wait_ms * 0.8 <= lone.queue_ms < 5000
    assert [s.size for s in behind] == [3, 3, 3]
    assert all(hold_s * 1000 * 0.8 <= s.queue_ms < 5000 for s in behind)
    assert full.size == 3 and 0 <= full.queue_ms < wait_ms * 0.8 + 1000  # lenient: a shared machine


def test_the_model_runs_in_the_worker_thread_not_the_loop() -> None:
    model = Model()

    async def main() -> int:
        async with batcher(model, max_batch=2, max_wait_ms=5) as b:
            await asyncio.gather(*(b.submit(x) for x in range(5)))
            return threading.get_ident()

    loop_thread = run(main)
    assert len(model.threads) == 3
    assert all(t.ident != loop_thread for t in model.threads)
    assert all(t.name.startswith("test-model") for t in model.threads)
    assert len({t.ident for t in model.threads}) == 1  # one worker: the model is never entered twice


def test_start_is_idempotent_and_stop_ends_the_collector() -> None:
    model = Model()

    async def main() -> None:
        executor = ThreadPoolExecutor(max_workers=1)
        b: MicroBatcher[int, int] = MicroBatcher(model, 4, 5, executor)
        try:
            b.start()
            task = b._task
            b.start()
            assert b._task is task and task is not None
            assert (await b.submit(21))[0] == 42
            await b.stop()
            assert b._task is None and task.done()
            await b.stop()  # a second stop is harmless
            b.start()  # and the batcher can start again
            assert (await b.submit(4))[0] == 8
        finally:
            await b.stop()
            executor.shutdown(wait=True)

    run(main)
