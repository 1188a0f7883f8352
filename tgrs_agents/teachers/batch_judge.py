"""``mode = "batch"``: an OpenAI or Anthropic judge asked through the provider's batch API, at about half price.

The panel sees a teacher like any other (``await judge(candidate) -> Verdict``), but an answer may
take hours, so a candidate that reaches this judge is *parked*: :data:`PARK` (set by the run, see
:mod:`tgrs_agents.curation.batching`) tells the run's worker to take the next candidate while this
one waits, at most ``batch.max_parked`` at once. The request is the online one
(:meth:`ApiJudge.request_body`); it waits in a buffer that :meth:`BatchJudge.run` submits through a
:class:`~tgrs_agents.paid.batch_runner.BatchRunner` once it holds ``max_items`` requests or
``max_bytes`` bytes, or its first one has waited ``window_s``. The same task polls the batches and
hands each answer on as it arrives, parsed exactly as online.

Money: the budget reserves each request's worst case at the batch price before it joins a batch and
settles it from the reported usage. Verdicts go to the verdict ledger under the online judge's key
(a batch verdict serves a later online run, and the reverse), and to ``answers.jsonl`` beside the
batch journal (``<run>/batch/<teacher>/``), fsync'd before the journal records a batch as ended: a
``kill -9`` anywhere, then the same command, re-polls the open batches, answers the candidates
whose verdicts had arrived from that file, and submits none twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

from ..errors import ConfigError, Halted, TeacherError
from ..paid.batch_runner import BatchRunner
from ..paid.call import Paid
from ..paid.cost import batch_price_for
from ..paid.ledger import content_hash, teacher_key
from ..types import Candidate, Usage, Verdict
from .llm_judge import ApiJudge

PARK: ContextVar[asyncio.Event | None] = ContextVar("tgrs_batch_park", default=None)
Result = Verdict | TeacherError


class BatchJudge:
    """An :class:`ApiJudge` whose requests go into provider batches (see the module docstring)."""

    paid: ClassVar[bool] = True
    inline: ClassVar[bool] = False

    def __init__(self, adapter: ApiJudge, services: Any, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        c = adapter.config
        if c.kind not in ("openai", "anthropic"):
            raise ConfigError(f"mode = 'batch' needs kind 'openai' or 'anthropic', not {c.kind!r}",
                              file=adapter.ctx.source, field=f"teacher.{c.name}.mode")
        self.adapter = adapter
        self.services = services
        self.settings = c.batch
        self.config = c.model_copy(update={"max_concurrency": c.batch.max_parked})  # the panel's bound
        self.price = adapter.price  # online, for the dry run's side-by-side
        self.batch_price = batch_price_for(c.model, c.price_input_per_mtok, c.price_output_per_mtok)
        ident = adapter.cache_identity()
        self._tkey = teacher_key(ident.identity, ident.prompt_hash)  # the online judge's ledger keys
        self.clock, self.sleep = clock, sleep
        self.runner: BatchRunner | None = None  # set by open(run_dir); until then the judge asks online
        self._online = services.wrap(adapter)  # (calibration, the loop's panels: no run directory to journal in)
        self._buf: list[tuple[str, dict[str, Any]]] = []
        self._buf_bytes = 0
        self._t_first = 0.0
        self._waiting: dict[str, asyncio.Future[Result]] = {}  # key -> its answer
        self._held: dict[str, int] = {}  # key -> budget reservation
        self._early: dict[str, Verdict] = {}  # answered before its candidate came (a resume)
        self._in_open: set[str] = set()  # keys in batches a killed run left open
        self._slots = asyncio.Semaphore(c.batch.max_parked)
        self._wake = asyncio.Event()  # the buffer grew, or the run is closing
        self._submitted = asyncio.Event()
        self._closing = False
        self._answers: Any = None
        self.counts = {"requests": 0, "batches": 0, "answers": 0, "resumed_in_flight": 0, "answered_early": 0}

    name = property(lambda self: self.adapter.name)
    cost_rank = property(lambda self: self.adapter.cost_rank)

    def key(self, candidate: Candidate) -> str:
        return f"{self._tkey[:32]}:{content_hash(candidate)}"

    def estimate(self, candidate: Candidate) -> tuple[int, int]:
        return self.adapter.estimate(candidate)

    def lookup(self, candidate: Candidate) -> Verdict | None:
        led = self.services.ledger
        return led.get(self.key(candidate)) if led is not None else None

    def settle(self, candidate: Candidate) -> None:
        """The run journaled this candidate's verdict: the ledger owes nothing for it any more."""
        led = self.services.ledger
        if led is not None:
            try:
                led.settle(self.key(candidate))
            except sqlite3.Error as e:
                raise Halted(f"{led.path}: {led.advice(e)}", teacher=self.name) from None

    # ----- the run's side ------------------------------------------------------------------------
    def open(self, run_dir: str | Path) -> None:
        """Journal under ``run_dir/batch/<name>``; pick up what a killed run left there."""
        from ..paid.batch_journal import BatchJournal

        where = Path(run_dir) / "batch" / self.name
        if self.adapter.config.kind == "openai":
            from ..paid.batch_openai import OpenAIBatchClient as Client
        else:
            from ..paid.batch_anthropic import AnthropicBatchClient as Client  # type: ignore[assignment]
        client = Client(self.adapter._client, name=self.name, price=self.batch_price)  # the judge's own client
        self.runner = BatchRunner(client, where, poll_s=self.settings.poll_s, retry=self.services.retry,
                                  max_resubmits=self.settings.max_resubmits, sleep=self.sleep, clock=self.clock)
        self.runner.checkpoint = self._checkpoint
        journal = BatchJournal(where)
        for e in journal.load().values():
            if e.open:
                self._in_open.update(k for k, _ in journal.items(e.key))
        path = where / "answers.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    rec = json.loads(line)
                    self._early[rec["key"]] = Verdict.model_validate(rec["verdict"])
                except (ValueError, KeyError):
                    continue  # a torn last line
        where.mkdir(parents=True, exist_ok=True)
        self._answers = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in aclose

    def close(self) -> None:
        """No more candidates: submit what is buffered now, then end once every answer is in."""
        self._closing = True
        self._wake.set()
        self._submitted.set()

    async def run(self) -> None:
        """Submit buffered requests by count, bytes or window, and hand answers on, until closed."""
        assert self.runner is not None, "open(run_dir) first"
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._flusher())
            tg.create_task(self._collector())

    async def _flusher(self) -> None:
        s = self.settings
        while True:
            if not self._buf:
                if self._closing and not self._waiting:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            due = self._t_first + s.window_s
            if self._closing or len(self._buf) >= s.max_items or self._buf_bytes >= s.max_bytes \
                    or self.clock() >= due:
                await self._flush()
                continue
            self._wake.clear()
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(self.sleep(due - self.clock()))]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def _flush(self) -> None:
        assert self.runner is not None
        size, s = self.runner.client.item_bytes, self.settings
        n, used = 0, 0
        while n < len(self._buf) and n < s.max_items and (n == 0 or used + size(self._buf[n]) <= s.max_bytes):
            used += size(self._buf[n])
            n += 1
        items, self._buf = self._buf[:n], self._buf[n:]
        self._buf_bytes -= used
        self._t_first = self.clock()  # what is left waits a window from now
        keys = await self.runner.submit(items)  # journaled before the provider hears of them
        self.counts["requests"] += len(items)
        self.counts["batches"] += len(keys)
        self._submitted.set()

    async def _collector(self) -> None:
        assert self.runner is not None
        while True:
            self._submitted.clear()
            async for key, answer in self.runner.collect():
                self._deliver(key, answer)
            if self._closing and not self._buf and not self._waiting:
                return
            await self._submitted.wait()

    def _checkpoint(self) -> None:
        if self._answers is not None:
            self._answers.flush()
            os.fsync(self._answers.fileno())

    def _deliver(self, key: str, answer: Paid[Any] | TeacherError) -> None:
        """One answer: parsed as online, paid for, stored (ledger, answers file), handed to its waiter."""
        self.counts["answers"] += 1
        self._in_open.discard(key)
        result: Result
        if isinstance(answer, TeacherError):
            result, usage = answer, answer.usage or Usage()
        else:
            try:
                result = self.adapter.parse_paid(answer).value
                usage = result.usage
            except TeacherError as e:  # malformed output: billed, an error verdict
                result, usage = e, e.usage or answer.usage
        budget = self.services.budget
        token = self._held.pop(key, None)
        if token is not None:
            budget.settle(token, usage.cost_usd)
        else:  # asked by a killed run: its reservation died with it
            budget.spent_usd += usage.cost_usd
        if isinstance(result, Verdict):
            result = result.model_copy(update={"teacher": self.name})
            self._store(key, result)
        fut = self._waiting.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(result)
        elif isinstance(result, Verdict):
            self._early[key] = result
        if self._closing and not self._waiting:  # the last one: let the loops of run() end
            self._wake.set()
            self._submitted.set()

    def _store(self, key: str, v: Verdict) -> None:
        led = self.services.ledger
        if led is not None and led.failure is None:
            try:
                led.put(key, v)
            except sqlite3.Error as e:  # paid, so kept: the run halts at its next check
                led.failure = e
        if self._answers is not None:
            self._answers.write(json.dumps({"key": key, "verdict": v.model_dump(mode="json")}) + "\n")
            self._answers.flush()  # in the OS's hands (kill -9 safe); fsync'd at the checkpoint

    # ----- the panel's side ----------------------------------------------------------------------
    def _ready(self, key: str) -> Verdict | None:
        v = self._early.pop(key, None)
        if v is not None:
            self.counts["answered_early"] += 1
            return v
        led = self.services.ledger
        hit = led.take(key) if led is not None and led.failure is None else None
        if hit is None:
            return None
        v, owed = hit
        if owed:  # this run paid for it and was killed before its journal got it: count it once
            self.services.budget.spent_usd += v.usage.cost_usd
            return v.model_copy(update={"teacher": self.name, "cached": False})
        return v.model_copy(update={"teacher": self.name, "usage": Usage(), "cached": True})

    def _enqueue(self, key: str, cand: Candidate) -> asyncio.Future[Result]:
        fut: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        if key in self._in_open:
            self.counts["resumed_in_flight"] += 1
        else:
            assert self.runner is not None, "open(run_dir) first"
            body = self.adapter.request_body(cand)
            price = self.batch_price or self.adapter.price
            self._held[key] = self.services.budget.reserve(price.cost(*self.adapter.estimate(cand)))
            if not self._buf:
                self._t_first = self.clock()
            self._buf.append((key, body))
            self._buf_bytes += self.runner.client.item_bytes((key, body))
            self._wake.set()
        self._waiting[key] = fut
        return fut

    async def judge(self, candidate: Candidate) -> Verdict:
        if self.runner is None:
            return await self._online.judge(candidate)  # type: ignore[no-any-return]
        key = self.key(candidate)
        if (v := self._ready(key)) is not None:
            return v
        async with self._slots:
            if (v := self._ready(key)) is not None:
                return v
            fut = self._waiting.get(key)
            leader = fut is None
            if fut is None:
                fut = self._enqueue(key, candidate)  # a BudgetExhausted leaves it pending
            park = PARK.get()
            if park is not None:
                park.set()  # the run's worker takes the next candidate
            t0 = self.clock()
            result = await asyncio.shield(fut)
        if isinstance(result, TeacherError):
            if leader:
                raise result
            raise TeacherError(str(result), teacher=self.name, retryable=result.retryable, kind=result.kind)
        if not leader:  # the same content, asked once: the others pay nothing
            return result.model_copy(update={"usage": Usage(), "cached": True, "latency_s": 0.0})
        return result.model_copy(update={"latency_s": max(self.clock() - t0, 0.0)})

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.counts)
        if self.runner is not None:
            out["in_flight"] = len(self.runner.in_flight())
            out["reported"] = list(self.runner.reported)
        return out

    async def aclose(self) -> None:
        if self._answers is not None:
            self._answers.close()
            self._answers = None
        await self.adapter.aclose()
