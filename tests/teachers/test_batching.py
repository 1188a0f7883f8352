"""MicroBatcher: concurrent submits coalesce; size and wait limits hold; errors reach their batch only."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from tgrs_agents.teachers.batching import MicroBatcher


class Recorder:
    """A batch function that records every call (and the thread it ran on)."""

    def __init__(self, delay_s: float = 0.0, fail_on: object = None) -> None:
        self.calls: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s
        self.fail_on = fail_on

    def __call__(self, items: list[int]) -> list[int]:
        self.calls.append(list(items))
        self.threads.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [x * 10 for x in items]


def run(coro):
    return asyncio.run(coro)


def test_concurrent_submits_coalesce_into_fewer_calls():
    fn = Recorder()

    async def go():
        async with MicroBatcher(fn, max_batch_size=64, max_wait_ms=20) as b:
            out = await asyncio.gather(*(b.submit(i) for i in range(100)))
            return out, b.stats

    out, stats = run(go())
    assert out == [i * 10 for i in range(100)]  # each caller gets its own result, in its own order
    assert stats.items == 100 and stats.calls == len(fn.calls)
    assert len(fn.calls) == 2  # 64 at once (size reached), then the 36 left
    assert [len(c) for c in fn.calls] == [64, 36]
    assert sorted(x for c in fn.calls for x in c) == list(range(100))
    assert all(t.startswith("batcher") for t in fn.threads)  # a worker thread, not the loop's
    assert threading.current_thread().name not in fn.threads


def test_max_batch_size_is_never_exceeded():
    fn = Recorder(delay_s=0.01)

    async def go():
        async with MicroBatcher(fn, max_batch_size=7, max_wait_ms=1) as b:
            return await asyncio.gather(*(b.submit(i) for i in range(50)))

    assert run(go()) == [i * 10 for i in range(50)]
    assert max(len(c) for c in fn.calls) <= 7
    assert len(fn.calls) == 8  # ceil(50 / 7): a loaded batcher runs full batches back to back


def test_lone_item_waits_max_wait_then_runs():
    fn = Recorder()

    async def go(wait_ms):
        async with MicroBatcher(fn, max_batch_size=100, max_wait_ms=wait_ms) as b:
            t0 = time.perf_counter()
            await b.submit(1)
            return time.perf_counter() - t0

    waited = run(go(80))
    assert 0.075 <= waited < 0.6  # held for max_wait (no batch-mate came), not longer
    assert run(go(0)) < 0.05  # max_wait 0: straight to the worker


def test_items_arriving_within_the_wait_share_a_batch():
    fn = Recorder()

    async def go():
        async with MicroBatcher(fn, max_batch_size=100, max_wait_ms=100) as b:
            async def late(i, delay):
                await asyncio.sleep(delay)
                return await b.submit(i)
            return await asyncio.gather(late(1, 0), late(2, 0.02), late(3, 0.04), late(4, 0.3))

    assert run(go()) == [10, 20, 30, 40]
    assert fn.calls == [[1, 2, 3], [4]]  # 4 came after the first batch's wait ran out


def test_backlog_runs_as_soon_as_the_worker_frees_up():
    fn = Recorder(delay_s=0.1)

    async def go():
        async with MicroBatcher(fn, max_batch_size=100, max_wait_ms=0) as b:
            first = asyncio.ensure_future(b.submit(0))
            await asyncio.sleep(0.02)  # the first batch is running now
            t0 = time.perf_counter()
            rest = await asyncio.gather(*(b.submit(i) for i in range(1, 6)))
            return await first, rest, time.perf_counter() - t0

    first, rest, dt = run(go())
    assert first == 0 and rest == [10, 20, 30, 40, 50]
    assert fn.calls == [[0], [1, 2, 3, 4, 5]]  # queued behind the busy worker, then one batch
    assert dt < 0.5


def test_an_error_reaches_every_caller_of_its_batch_and_no_other():
    fn = Recorder(fail_on=3)

    async def go():
        async with MicroBatcher(fn, max_batch_size=4, max_wait_ms=5) as b:
            return await asyncio.gather(*(b.submit(i) for i in range(8)), return_exceptions=True)

    out = run(go())
    assert fn.calls == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert all(isinstance(r, ValueError) and "bad item 3" in str(r) for r in out[:4])
    assert out[4:] == [40, 50, 60, 70]


def test_wrong_result_count_is_an_error_for_the_batch():
    async def go():
        async with MicroBatcher(lambda xs: xs[:-1], max_batch_size=3, max_wait_ms=5) as b:
            return await asyncio.gather(*(b.submit(i) for i in range(3)), return_exceptions=True)

    out = run(go())
    assert all(isinstance(r, ValueError) and "2 results for 3 items" in str(r) for r in out)


def test_async_function_is_awaited_on_the_loop():
    calls = []

    async def fn(items):
        calls.append(list(items))
        await asyncio.sleep(0)
        return [x + 1 for x in items]

    async def go():
        async with MicroBatcher(fn, max_batch_size=10, max_wait_ms=5) as b:
            return await asyncio.gather(*(b.submit(i) for i in range(15)))

    assert run(go()) == list(range(1, 16))
    assert [len(c) for c in calls] == [10, 5]


def test_cancelled_caller_is_left_out_and_others_still_get_results():
    fn = Recorder()

    async def go():
        async with MicroBatcher(fn, max_batch_size=10, max_wait_ms=50) as b:
            doomed = asyncio.ensure_future(b.submit(99))
            others = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
            await asyncio.sleep(0)
            doomed.cancel()
            return await asyncio.gather(*others)

    assert run(go()) == [0, 10, 20]
    assert fn.calls == [[0, 1, 2]]


def test_aclose_runs_the_queue_and_refuses_new_items():
    fn = Recorder()

    async def go():
        b = MicroBatcher(fn, max_batch_size=100, max_wait_ms=10_000)
        pending = [asyncio.ensure_future(b.submit(i)) for i in range(3)]
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        await b.aclose()  # does not wait the 10 s: closing starts what is queued
        assert time.perf_counter() - t0 < 1.0
        with pytest.raises(RuntimeError, match="after aclose"):
            await b.submit(5)
        return await asyncio.gather(*pending)

    assert run(go()) == [0, 10, 20]


def test_reusable_across_event_loops():
    fn = Recorder()
    b = MicroBatcher(fn, max_batch_size=8, max_wait_ms=1)
    assert run(b.submit(1)) == 10
    assert run(b.submit(2)) == 20  # a later asyncio.run(): the batcher rebinds


def test_bad_settings_are_refused():
    for kw in ({"max_batch_size": 0}, {"max_wait_ms": -1}, {"max_concurrent_batches": 0}):
        with pytest.raises(ValueError):
            MicroBatcher(lambda xs: xs, **kw)
