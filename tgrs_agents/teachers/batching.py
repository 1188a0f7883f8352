"""Micro-batching: many concurrent ``await batcher.submit(item)`` calls become a few batched calls.

Local teachers (a reward model, the student's perplexities) are fastest when one forward pass
scores many candidates, but the panel judges one candidate per ``judge`` call, with many calls in
flight. A :class:`MicroBatcher` sits between the two::

    batcher = MicroBatcher(score_batch, max_batch_size=32, max_wait_ms=5)
    score = await batcher.submit(candidate)   # from many tasks at once
    await batcher.aclose()

``fn(list[item]) -> list[result]`` (same length, same order) is a plain function: it runs in the
batcher's own worker thread, so the event loop stays free while a model computes. An ``async def``
``fn`` is awaited on the loop instead (for engines that are async already).

When a batch starts
    As soon as ``max_batch_size`` items wait, or when the oldest waiting item has waited
    ``max_wait_ms``, provided a worker is free (``max_concurrent_batches``, default 1: one model,
    one batch at a time). While every worker is busy, items keep queueing, so a loaded batcher runs
    full batches back to back; the moment a worker frees up it takes whatever waits (at most
    ``max_batch_size``), without waiting again. So ``max_wait_ms`` is the extra latency a lone
    item pays; it never delays an item behind a batch that is already due.

Results and errors
    Each caller gets its own result. If ``fn`` raises, or returns a list of the wrong length,
    every caller of *that batch* gets the exception; other batches are unaffected. A caller that is
    cancelled while waiting is simply left out of its batch's results (or out of the batch, if it
    had not started).

Lifecycle
    The batcher binds to the running event loop at the first ``submit``. :meth:`aclose` refuses new
    items, starts what is waiting at once, waits for the running batches and stops the worker
    thread. ``async with MicroBatcher(...) as b:`` does the same on exit. ``stats`` counts calls,
    items and the largest batch.

Nothing here imports torch; the batcher knows nothing about models.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

BatchFn = Callable[[list[T]], Sequence[R]] | Callable[[list[T]], Awaitable[Sequence[R]]]


@dataclass(slots=True)
class BatchStats:
    """What a batcher did: ``calls`` of ``fn``, ``items`` through them, the largest batch."""

    calls: int = 0
    items: int = 0
    largest: int = 0
    errors: int = 0  # calls that raised (each fails every item of its batch)
    sizes: list[int] = field(default_factory=list)

    @property
    def mean_batch(self) -> float:
        return self.items / self.calls if self.calls else 0.0


class MicroBatcher(Generic[T, R]):
    """Coalesce concurrent :meth:`submit` calls into batched calls of ``fn``."""

    def __init__(self, fn: BatchFn[T, R], *, max_batch_size: int = 32, max_wait_ms: float = 5.0,
                 max_concurrent_batches: int = 1, name: str = "batcher") -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be >= 1, got {max_concurrent_batches}")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_concurrent_batches = max_concurrent_batches
        self.name = name
        self.stats = BatchStats()
        self._async = inspect.iscoroutinefunction(fn)
        self._pending: deque[tuple[T, asyncio.Future[R], float]] = deque()
        self._running: set[asyncio.Future[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._backlogged = False  # items queued while every worker was busy: start them when one frees

    # ----- public ------------------------------------------------------------------------------
    async def submit(self, item: T) -> R:
        """Queue ``item`` for the next batch and wait for its result."""
        if self._closed:
            raise RuntimeError(f"{self.name}: submit() after aclose()")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._pending or self._running:
                raise RuntimeError(f"{self.name}: used from a second event loop while busy")
            self._loop, self._timer = loop, None  # a new asyncio.run(): start over on this loop
        fut: asyncio.Future[R] = loop.create_future()
        self._pending.append((item, fut, time.monotonic()))
        self._pump()
        return await fut

    @property
    def waiting(self) -> int:
        """Items queued and not yet in a batch."""
        return len(self._pending)

    async def aclose(self) -> None:
        """Refuse new items, run what is queued now, wait for every batch, stop the worker."""
        self._closed = True
        self._pump()
        while self._running:
            await asyncio.wait(set(self._running))
            self._pump()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def __aenter__(self) -> MicroBatcher[T, R]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ----- scheduling (always on the loop's thread) --------------------------------------------
    def _pump(self) -> None:
        """Start every batch that is due while a worker is free; else arm the timer."""
        while self._pending and self._pending[0][1].done():  # cancelled callers leave the queue
            self._pending.popleft()
        while self._pending and len(self._running) < self.max_concurrent_batches:
            age = time.monotonic() - self._pending[0][2]
            due = (self._closed or len(self._pending) >= self.max_batch_size
                   or age >= self.max_wait_s or self._backlogged)
            if not due:
                self._arm(self.max_wait_s - age)
                return
            self._start_batch()
        self._backlogged = bool(self._pending)  # items left over wait for a worker, not the clock

    def _arm(self, delay: float) -> None:
        if self._timer is not None:
            return
        assert self._loop is not None

        def fire() -> None:
            self._timer = None
            self._pump()

        self._timer = self._loop.call_later(max(0.0, delay), fire)

    def _start_batch(self) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch: list[tuple[T, asyncio.Future[R]]] = []
        while self._pending and len(batch) < self.max_batch_size:
            item, fut, _ = self._pending.popleft()
            if not fut.done():
                batch.append((item, fut))
        if not batch:
            return
        items = [item for item, _ in batch]
        self.stats.calls += 1
        self.stats.items += len(items)
        self.stats.largest = max(self.stats.largest, len(items))
        self.stats.sizes.append(len(items))
        running: asyncio.Future[Any]
        if self._async:
            running = self._loop.create_task(self.fn(items))  # type: ignore[arg-type]
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_concurrent_batches,
                                                    thread_name_prefix=self.name)
            running = self._loop.run_in_executor(self._executor, self.fn, items)
        self._running.add(running)
        running.add_done_callback(lambda f: self._finish(f, batch))

    def _finish(self, done: asyncio.Future[Any], batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self._running.discard(done)
        error: BaseException | None
        if done.cancelled():
            error = asyncio.CancelledError(f"{self.name}: batch cancelled")
        else:
            error = done.exception()
        results: Sequence[R] = ()
        if error is None:
            results = done.result()
            if not isinstance(results, Sequence) or len(results) != len(batch):
                n = len(results) if isinstance(results, Sequence) else type(results).__name__
                error = ValueError(f"{self.name}: fn returned {n} results for {len(batch)} items")
        if error is not None:
            self.stats.errors += 1
        for i, (_, fut) in enumerate(batch):
            if fut.done():  # the caller was cancelled meanwhile
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(results[i])
        self._backlogged = bool(self._pending)
        self._pump()
