"""The curate run's first two stages, as a part of :class:`~tgrs_agents.curation.run.CurateRun`::

    reader ──(queue: max_in_flight)──> judge workers ×max_in_flight ──(queue)──> recorder

The reader streams the input (or the batches a loop's generator hands over, ``source``) through the
format's gate and the id index, and blocks when the judges fall behind, so memory stays flat. Each judge
worker takes a candidate through the panel's cascade; its verdicts are journaled the moment they arrive
(a paid one written at once, then its ledger entry settled). A candidate waiting for a batch verdict is
parked, and its worker takes the next one (:mod:`.batching`). Everything runs in one
``asyncio.TaskGroup``; the recorder (:mod:`.recorder`) is the only writer of decisions.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import BudgetExhausted, Halted, RunStoreError
from ..events import CandidateLoaded, EventBus, VerdictReceived
from ..paid.services import Services
from ..types import Candidate, Verdict
from .batching import BatchStage
from .ingest import IdIndex, Invalid, Places, _dedupe, convert_one, read_chunks
from .jsonl import sanitize
from .panel import Panel
from .recorder import _DONE
from .recover import INDEX
from .store import RunStore, io_failure, verdict_record


async def _as_async(chunks: Any) -> Any:
    for item in chunks:
        yield item


def _raw(raw: bytes) -> bytes:  # the openai reader's converter: a line is the record's own bytes
    return raw


class Pipeline:
    """The reader and the judges; :class:`~tgrs_agents.curation.run.CurateRun` holds the state."""

    store: RunStore
    opts: Any  # CurateOptions
    bus: EventBus
    input: Path
    source: Any
    format: Any
    panel: Panel | None
    services: Services
    counts: dict[str, int]
    stopped: str | None
    _batches: BatchStage | None
    _paid: dict[str, Any]
    _prior: dict[int, Any]
    _fail: Callable[[BaseException], None]
    _recorder: Callable[[asyncio.Queue[Any]], Any]

    async def _stages(self, state: Any, index: IdIndex) -> None:
        n = max(1, self.opts.max_in_flight)
        todo: asyncio.Queue[Any] = asyncio.Queue(maxsize=n)
        results: asyncio.Queue[Any] = asyncio.Queue(maxsize=n)
        async with asyncio.TaskGroup() as tg:
            assert self.panel is not None  # batch judges: a candidate waiting for one is parked
            self._batches = BatchStage.of(self.panel, self.store.dir, tg)  # (curation/batching.py)
            tg.create_task(self._reader(state, index, todo, results, n))
            workers = [tg.create_task(self._judge_worker(todo, results)) for _ in range(n)]
            recorder = tg.create_task(self._recorder(results))
            await asyncio.gather(*workers)
            if self._batches is not None:
                await (self._batches.abort() if self.stopped else self._batches.drain())
            await results.put(_DONE)
            await recorder

    async def _reader(self, state: Any, index: IdIndex, todo: asyncio.Queue[Any],
                      results: asyncio.Queue[Any], n_workers: int) -> None:
        try:
            chunks = (self._fed(state, index) if self.source is not None
                      else _as_async(read_chunks(self.input, state.done, index, fmt=self.format)))
            async for lines_read, chunk in chunks:
                if self.stopped:
                    break
                self.counts["input_lines"] = lines_read
                for line, item in chunk:
                    if isinstance(item, Invalid):
                        await results.put((line, item))
                    else:
                        self.counts["valid"] += 1
                        if self.bus.wants(CandidateLoaded):
                            self.bus.publish(CandidateLoaded(candidate_id=item.id, line=line))
                        await todo.put((line, item))
                await asyncio.sleep(0)  # let the judges run between chunks
        except sqlite3.Error as e:  # the id index (a full disk, say)
            self._fail(RunStoreError(f"{self.store.dir / INDEX}: {e}. Fix the cause and run the same "
                                     "command again: the run resumes where it stopped"))
        except OSError as e:
            self._fail(io_failure(e, self.input, "cannot read"))
        except Exception as e:  # noqa: BLE001 - stop, drain the calls in flight, then raise it
            self._fail(e)
        for _ in range(n_workers):
            await todo.put(_DONE)

    async def _fed(self, state: Any, index: IdIndex) -> Any:
        """``read_chunks`` of a file that is still being written: the batches ``self.source`` hands
        over, through the same gate (openai JSONL: :func:`convert_one`) and id index."""
        src, places = str(self.input), Places()
        places.add(0, src, "line")
        last = 0
        async for batch in self.source:
            last = max([last, *(line for line, _ in batch)])
            items = [(line, convert_one(self.format, _raw, raw, line, src, "line"))
                     for line, raw in batch if line not in state.done]
            yield last, _dedupe(items, index, places)

    async def _judge_worker(self, todo: asyncio.Queue[Any], results: asyncio.Queue[Any]) -> None:
        assert self.panel is not None
        while (item := await todo.get()) is not _DONE:
            line, cand = item
            if self.stopped:
                continue  # left pending for the next run
            prior = self._prior.pop(line, None)
            if self._batches is None:
                await self._judge_one(line, cand, prior, results)
            else:  # returns once the candidate is decided or parked for a batch verdict
                await self._batches.start(self._judge_one(line, cand, prior, results))

    async def _judge_one(self, line: int, cand: Candidate, prior: Any, results: asyncio.Queue[Any]) -> None:
        assert self.panel is not None
        try:
            decision, _ = await self.panel.judge(cand, prior, on_verdict=self._verdict_hook(line, cand))
        except Halted as e:  # an endpoint or the ledger: stop, this candidate stays pending
            self._fail(e)
            return
        except BudgetExhausted as e:  # the one budget-stop signal: this candidate stays pending
            self.stopped = self.stopped or f"budget: {e}"
            return
        except Exception as e:  # noqa: BLE001 - stop, drain the calls in flight, then raise it
            self._fail(e)
            return
        if self.store.failure is not None:  # a verdict could not be journaled
            self._fail(self.store.failure)
        if (halted := self.services.halted()) is not None:  # a 401 (say) tripped a breaker
            self._fail(halted)
        await results.put((line, (cand, decision)))

    def _verdict_hook(self, line: int, cand: Candidate) -> Callable[[str, Verdict], None]:
        """Journal a verdict as it arrives: a paid one is written at once (never buffered), then its
        ledger entry is settled. Never raises (it runs inside the panel's task group)."""
        def hook(cand_id: str, v: Verdict) -> None:
            paid = v.usage.requests > 0 and not v.cached
            rec = verdict_record(line, cand_id, v)
            try:
                try:
                    written = self.store.write_now("verdicts", rec) if paid else True
                    if not paid:
                        self.store.append("verdicts", rec)
                except TypeError:  # a teacher's rationale that cannot be written: keep the rest
                    rec = sanitize(rec)
                    written = self.store.write_now("verdicts", rec) if paid else True
                    if not paid:
                        self.store.append("verdicts", rec)
                if paid and written and v.error is None and v.teacher in self._paid:
                    self._paid[v.teacher].settle(cand)
            except Exception as e:  # noqa: BLE001 - a ledger that failed: stop the run after this
                self._fail(e)
            if self.bus.wants(VerdictReceived):
                self.bus.publish(VerdictReceived(candidate_id=cand_id, verdict=v))
        return hook

