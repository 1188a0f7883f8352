"""Batches that survive ``kill -9``: journal first, submit once, resubmit only what failed.

::

    runner = BatchRunner(OpenAIBatchClient(client, price=batch_price), run_dir)
    await runner.submit([(candidate_id, request_body), ...])     # grouped by the provider's limits
    async for candidate_id, answer in runner.collect():           # Paid body or TeacherError
        ...
    # after a kill, the same run directory: BatchRunner(...).collect() resumes, submitting nothing twice

Submission is *intent, then act, then record*: the items and an intent record are fsync'd
(:mod:`~tgrs_agents.paid.batch_journal`) before the provider hears of the batch, and the batch
carries the intent's local key. A batch whose intent has no batch id (a kill between the journal and
the provider's answer, or a create whose answer was lost) is looked for by that key first
(:meth:`BatchClient.find`) and adopted if found, submitted if not. Items that failed retryably or
expired go, alone, into a child batch (``<root>r<k>``, at most ``max_resubmits`` deep; a resume
that finds the child already journaled does not make another). A batch the provider cancelled is
reported in :attr:`BatchRunner.reported`; its unprocessed items come back as errors. Answers are
handed on before the ``ended`` record, so a kill in between hands them on again: the consumer
stores them idempotently (the verdict ledger does), and nothing is paid twice.

Control calls (submit, find, poll, results) cross the run's one retry policy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import TeacherError
from .batch import Answer, BatchClient, BatchStatus, ForeignBatch, Item, group, item_error, split_custom_id
from .batch_journal import BatchEntry, BatchJournal
from .call import Paid
from .retry import RetryPolicy, call_with_retries

T = TypeVar("T")


class BatchRunner:
    def __init__(self, client: BatchClient, run_dir: str | Path, *, poll_s: float = 60.0, max_resubmits: int = 2,
                 retry: RetryPolicy | None = None, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.journal = BatchJournal(run_dir, clock=clock)
        self.poll_s = poll_s
        self.max_resubmits = max_resubmits
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self.reported: list[str] = []  # provider-side cancellations, for the run's summary
        self.last: dict[str, BatchStatus] = {}  # key -> the latest poll, for `tgrs status`
        # called before each ``ended`` record: what was handed on must be durable by then (the consumer
        # fsyncs its own store of answers here, once a batch instead of once an answer)
        self.checkpoint: Callable[[], None] | None = None
        self._creating: set[str] = set()  # keys this process is sending now: collect() leaves them be

    async def _retried(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await call_with_retries(lambda _n: fn(), self.retry, sleep=self.sleep)

    # ----- submission --------------------------------------------------------------------------------
    async def submit(self, items: Sequence[Item]) -> list[str]:
        """Journal and submit ``(candidate id, request body)`` pairs in groups within the limits; their keys."""
        keys = []
        for chunk in group(items, self.client.limits, self.client.item_bytes):
            key = self.journal.new_key()
            self.journal.intend(key, self.client.name, chunk)
            keys.append(key)
            await self._create(self.journal.load()[key], look_first=False)
        return keys

    async def _create(self, e: BatchEntry, *, look_first: bool) -> None:
        """Send an intended batch to the provider once: adopt the one carrying its key if it is there.

        ``look_first``: a kill may have come after the provider took it (a resume); a retried attempt
        looks too, since the failed one's answer may have been lost after the batch was made."""
        reqs = self.journal.requests(e.key)
        self._creating.add(e.key)

        async def attempt(n: int) -> tuple[str, bool]:
            if n > 1 or look_first:
                found = await self.client.find(e.key, len(reqs), e.t)
                if found:
                    return found, True
            return await self.client.submit(reqs, e.key), False

        try:
            bid, adopted = await call_with_retries(attempt, self.retry, sleep=self.sleep)
            self.journal.record(e.key, "submitted", batch_id=bid, adopted=adopted)
        finally:
            self._creating.discard(e.key)
        e.batch_id, e.adopted = bid, adopted

    async def resume(self) -> None:
        """Submit (or adopt) every journaled batch that has no provider id yet."""
        for e in self.journal.load().values():
            if e.open and e.batch_id is None and e.key not in self._creating:
                await self._create(e, look_first=True)

    async def cancel(self, key: str) -> None:
        e = self.journal.load()[key]
        self.journal.record(key, "cancel")
        if e.batch_id is not None:
            bid = e.batch_id
            await self._retried(lambda: self.client.cancel(bid))

    # ----- collection --------------------------------------------------------------------------------
    def in_flight(self) -> list[dict[str, Any]]:
        """Open batches with their age and last counts (what ``tgrs status`` shows)."""
        now = self.clock()
        return [{"key": e.key, "batch_id": e.batch_id, "items": e.n, "age_s": now - e.t, "attempt": e.attempt,
                 "state": (self.last[e.key].state if e.key in self.last else "unsubmitted" if e.batch_id is None
                           else "submitted"), "counts": self.last[e.key].counts if e.key in self.last else {}}
                for e in self.journal.load().values() if e.open]

    async def collect(self) -> AsyncIterator[Answer]:
        """Every answer of every open batch, as batches end; polls every ``poll_s`` until none is open."""
        await self.resume()
        while True:
            entries = [e for e in self.journal.load().values() if e.open]
            if not entries:
                return
            for e in entries:
                if e.key in self._creating:
                    continue  # a submit() of this process is sending it: polled next round
                if e.batch_id is None:
                    await self._create(e, look_first=True)
                st = await self._retried(lambda e=e: self.client.poll(e.batch_id))  # type: ignore[misc]
                self.last[e.key] = st
                if st.ended:
                    async for ans in self._deliver(e, st):
                        yield ans
            if any(e.open for e in self.journal.load().values()):
                await self.sleep(self.poll_s)

    async def _deliver(self, e: BatchEntry, st: BatchStatus) -> AsyncIterator[Answer]:
        items = self.journal.items(e.key)
        assert e.batch_id is not None
        bid = e.batch_id
        answers: dict[int, Paid[Any] | TeacherError] = {}
        try:
            async def read() -> None:
                answers.clear()
                async for cid, ans in self.client.results(bid, e.key):
                    where = split_custom_id(cid)
                    if where and where[1] < len(items):
                        answers[where[1]] = ans

            if st.state != "failed":
                await self._retried(read)
        except ForeignBatch as why:
            self.reported.append(f"batch {bid} was adopted for {e.key} but is not ours ({why}); resubmitted")
            await self._resubmit(e, list(range(len(items))), items)
            self._end(e, status="foreign", counts=st.counts)
            return
        provider_cancelled = st.state == "cancelled" and not e.cancel_asked
        if provider_cancelled:
            self.reported.append(f"the provider cancelled batch {bid} ({e.key}, {len(items)} items): {st.counts}")
        again = []
        for n, (cand, _) in enumerate(items):
            ans = answers.get(n)
            if ans is None:
                reason = f"batch {bid} {st.state}" + (f": {st.errors}" if st.errors else ": missing from results")
                ans = item_error(None, reason, teacher=self.client.name, kind="error" if st.errors else "timeout",
                                 retryable=st.state in ("completed", "expired"))
            if isinstance(ans, TeacherError) and ans.retryable and e.attempt < self.max_resubmits:
                again.append(n)
            else:
                yield cand, ans
        if again:
            await self._resubmit(e, again, items)
        self._end(e, status=st.state, counts=st.counts, resubmitted=len(again))

    def _end(self, e: BatchEntry, **fields: Any) -> None:
        if self.checkpoint is not None:
            self.checkpoint()
        self.journal.record(e.key, "ended", **fields)

    async def _resubmit(self, e: BatchEntry, which: list[int], items: list[Item]) -> None:
        key = f"{e.root}r{e.attempt + 1}"
        known = self.journal.load()
        journaled = key in known  # a resume after a kill here finds the child already journaled
        if not journaled:
            self.journal.intend(key, self.client.name, [items[n] for n in which], parent=e)
            known = self.journal.load()
        if known[key].batch_id is None:  # it may have reached the provider before the kill
            await self._create(known[key], look_first=journaled)
