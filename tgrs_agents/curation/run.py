"""The async curation run: read -> judge (panel cascade) -> decide -> record, with resume.

Three stages joined by bounded queues inside one ``asyncio.TaskGroup``::

    reader ──(queue: max_in_flight)──> judge workers ×max_in_flight ──(queue)──> recorder

The reader streams the input and blocks when the judges fall behind, so memory stays flat. The
recorder is the only writer of decisions (paid verdicts are journaled by the judges the moment they
arrive). Cancelling the run (Ctrl-C) cancels the group; whatever was decided is committed and the
directory resumes where it stopped.

One process owns the directory (:func:`~tgrs_agents.curation.lock.run_lock`, taken before anything in
it is read). No single record ends a run: a record that cannot be written is set aside as invalid,
naming the field. A fault that must end it (an endpoint that refuses the key or stopped answering, a
verdict ledger or a file that cannot be written) *stops* it instead of cancelling it: no new
candidate is started, the calls in flight are drained and journaled, and the run then raises the
error, one line naming its cause; the directory resumes once the cause is fixed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BudgetExhausted, Halted, RunStoreError, TgrsError
from ..events import (
    CandidateDecided,
    CandidateInvalid,
    CandidateLoaded,
    EventBus,
    RunFinished,
    RunStarted,
    RunStopped,
    VerdictReceived,
    WallTime,
)
from ..paid.cost import Budget
from ..paid.ledger import Ledger
from ..paid.services import Services
from ..types import Candidate, Decision, Verdict
from .batching import BatchStage
from .ingest import (
    IdIndex,
    Invalid,
    Places,
    _dedupe,
    check_format,
    convert_one,
    input_unit,
    read_chunks,
    remember_format,
)
from .jsonl import sanitize, sft_row, unwritable
from .lock import run_lock
from .memo import add_counts
from .panel import Panel
from .panel_file import PanelConfig
from .policy import select_best_k
from .recover import INDEX, open_index
from .store import RunStore, io_failure, iter_jsonl, verdict_record


@dataclass(frozen=True, slots=True)
class CurateOptions:
    max_in_flight: int = 256
    force: bool = False
    commit_interval_s: float = 0.25
    summary_interval_s: float = 2.0
    budget_usd: float | None = None
    cache: bool = True
    cache_path: str | None = None  # default: the user's cache directory (see tgrs_agents.paid.ledger)
    input_format: str = "auto"  # a reader of tgrs_agents.formats, or "auto" (sniffed; see summary)
    max_set_aside: float = 0.2  # a run that sets aside more than this share of its records says so
    breaker_failures: int = 20  # attempts in a row without an answer that halt an endpoint


_DONE = object()


class CurateRun:
    """One ``tgrs curate`` run over one input file and one run directory."""

    def __init__(
        self,
        input_path: str | Path,
        panel_config: PanelConfig,
        out: str | Path,
        *,
        options: CurateOptions = CurateOptions(),
        bus: EventBus | None = None,
        panel: Panel | None = None,
        services: Services | None = None,
        source: Any = None,
    ) -> None:
        self.input = Path(input_path)
        # ``source``: the candidates handed over as they are made (tgrs_agents.loop.stream.LineFeed):
        # async batches of (line, JSON bytes) of the openai JSONL file ``input_path`` that is still
        # growing, and a ``fingerprint`` standing for that file's content
        self.source = source
        self.cfg = panel_config
        self.store = RunStore(out)
        self.opts = options
        self.bus = bus or EventBus()
        self.panel = panel
        self.counts = {"input_lines": 0, "valid": 0, "accepted": 0, "rejected": 0, "invalid": 0,
                       "failed": 0, "passed": 0}
        self.stopped: str | None = None
        self._jury_last: dict[str, Any] | None = None  # the jury section of the last final summary
        self.format: Any = None  # the reader (tgrs_agents.formats.Format), resolved in run()
        self.format_why = ""
        self.services = services or Services()  # with ``panel``: the services it was built with
        self.fatal: BaseException | None = None  # what stopped the run (raised once it is drained)
        self._paid: dict[str, Any] = {}  # paid teachers by name: their ledger entries are settled
        self._batches: BatchStage | None = None  # the batch judges' parked candidates, if any
        self._wall = WallTime()  # this invocation, plus the earlier ones once the directory is open
        self._cost_before = 0.0  # what earlier invocations of this directory spent
        self._journal_fresh = False  # this session began the verdict journal (see _jury)
        self._memo_before: dict[str, int] = {}

    # --- the run -------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        if self.source is None and not self.input.exists():  # a file, or a directory of trajectory files
            from ..errors import ConfigError

            raise ConfigError("input file not found", file=self.input)
        if self.input.is_dir() and self.store.dir.resolve().is_relative_to(self.input.resolve()):
            from ..errors import ConfigError

            raise ConfigError("--out is inside the input directory (the run's own files would be read as "
                              "input): put it elsewhere", file=self.store.dir)
        if self.panel is None:  # build first: a bad teacher or missing key fails before DIR is touched
            self.services = Services(budget=Budget(self.opts.budget_usd),
                                     ledger=Ledger(self.opts.cache_path) if self.opts.cache else None,
                                     breaker_failures=self.opts.breaker_failures)
            self.panel = Panel.from_config(self.cfg, self.services)
        try:
            if self.services.ledger is not None:
                self.services.ledger.check()  # one that cannot be used stops the run before any call
            with run_lock(self.store.dir):  # one owner: taken before anything in DIR is read
                summary = await self._locked()
        except OSError as e:
            raise io_failure(e, self.store.dir, "cannot use it") from None
        finally:
            await self.panel.aclose()
            self.services.close()
        if self.fatal is not None:
            raise self.fatal  # the calls in flight were drained and journaled first
        return summary

    async def _locked(self) -> dict[str, Any]:
        assert self.panel is not None
        from ..formats import resolve

        fmt = "openai" if self.source is not None else self.opts.input_format  # a stream is the round's JSONL
        self.format, self.format_why = resolve(self.input, fmt)
        if check_format(self.store.dir, self.format, force=self.opts.force):
            self.store._archive()  # --force on a run read with another reader: start afresh
        state = self.store.open(
            panel_toml=self.cfg.to_toml(), panel_fp=self.cfg.fingerprint(),
            input_path=self.input, force=self.opts.force,
            input_fp=self.source.fingerprint if self.source is not None else None,
        )
        for name, st in state.stats.items():
            if name in self.panel.stats:
                self.panel.stats[name] = st
        # the budget (``--budget-usd``) caps what the run spends in all, every invocation: a run its
        # budget stopped resumes with a larger one; what this invocation spent is reported apart
        self._cost_before = sum(st.cost_usd for st in state.stats.values())
        self.services.budget.spent_usd = self._cost_before
        for k in ("accepted", "rejected", "invalid", "passed"):
            self.counts[k] = state.counts[k]
        if self.store.finalized():  # passed.jsonl was already split into accepted and rejected
            self.counts["passed"] = 0
        self.counts["valid"] = self.counts["accepted"] + self.counts["rejected"] + self.counts["passed"]
        prev = self._previous_summary() if state.resumed else None
        wall = WallTime.resume(prev, state.wall_s)
        self._memo_before = (prev or {}).get("memo_hits") or {}  # earlier invocations' (not journaled)
        self._wall = WallTime(wall.before, self._wall.t0)
        self._prior = state.prior
        # a first session observes every verdict its journal holds: its jury needs no journal re-read
        self._journal_fresh = not state.resumed
        self.bus.subscribe(self._journal, skip=(CandidateLoaded, VerdictReceived))
        self.bus.publish(RunStarted(run_dir=str(self.store.dir), input=str(self.input),
                                    resumed=state.resumed, already_done=state.done.count,
                                    panel_fingerprint=self.cfg.fingerprint(),
                                    budget_usd=self.services.budget.limit_usd, cost_before_usd=self._cost_before))
        remember_format(self.store.dir, self.format, input_unit(self.input, self.format))
        if self.services.ledger is not None:
            self.services.ledger.owner = state.run_id  # what it pays for is owed until journaled
        self._paid = {t.name: t for t in [*self.panel.teachers, *self.panel.reserves] if hasattr(t, "settle")}
        index = open_index(self.store, state.resumed)  # rebuilt from the outputs if damaged
        try:
            await self._stages(state, index)
            if self.cfg.best_k is not None and not self.stopped:  # only once every candidate is in
                try:
                    self._finalize_best_k()
                except (OSError, RunStoreError) as e:
                    self._fail(e)
        except (asyncio.CancelledError, KeyboardInterrupt):
            self.stopped = "interrupted"
            raise
        finally:
            index.close()
            summary = self._close()
        return summary

    def _close(self) -> dict[str, Any]:
        """Journal the end, commit, fsync and close the files, write the summary; a failure of any
        of these stops the run like any other (it is raised after)."""
        if (halted := self.services.halted()) is not None:
            self._fail(halted)  # an endpoint or the ledger halted after the last candidate started
        if self.store.failure is not None:
            self._count_on_disk()
        summary = self.summary()
        self.bus.publish(RunStopped(reason=self.stopped) if self.stopped else RunFinished(summary=summary))
        try:
            self.store.close(wall_s=summary["wall_s"])
        except RunStoreError as e:
            self._fail(e)
            self._count_on_disk()
            summary = self.summary()
        try:
            self.store.write_summary(summary)
        except RunStoreError as e:
            self._fail(e)
        return summary

    def _count_on_disk(self) -> None:
        """After a failed write: the summary counts what the files hold, not what was buffered."""
        try:
            self.counts.update(self.store.on_disk())
        except OSError:
            pass
        if self.store.finalized():
            self.counts["passed"] = 0

    def _fail(self, e: BaseException) -> None:
        """Stop the run for ``e``: no new candidate starts, the calls in flight end and are
        journaled, and the first such error is raised when the run ends."""
        if self.fatal is None:
            self.fatal = e
            self.stopped = f"error: {e}" if isinstance(e, TgrsError) else f"error: {type(e).__name__}: {e}"

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

    async def _recorder(self, results: asyncio.Queue[Any]) -> None:
        """Write decisions and set-aside records; keeps draining ``results`` after a failure, so the
        judges finish the calls they started."""
        last_summary = time.monotonic()
        while (item := await results.get()) is not _DONE:
            line, payload = item
            if self.store.failure is not None:
                continue  # nothing more can be written: left pending for the next run
            try:
                self._record(line, payload)
            except Exception as e:  # noqa: BLE001 - one record never ends a run
                self._set_aside(line, payload, e)
            try:
                self.store.maybe_commit(self.opts.commit_interval_s)
                if time.monotonic() - last_summary > self.opts.summary_interval_s:
                    self.store.write_summary(self.summary(final=False))
                    last_summary = time.monotonic()
            except Exception as e:  # noqa: BLE001 - a full disk (say): stop, keep draining
                self._fail(e)
        try:
            self.store.commit()
        except Exception as e:  # noqa: BLE001
            self._fail(e)

    def _record(self, line: int, payload: Any) -> None:
        if isinstance(payload, Invalid):
            self.store.append("invalid", payload.record())
            self.counts["invalid"] += 1
            self.bus.publish(CandidateInvalid(line=line, reason=payload.reason))
        else:
            cand, decision = payload
            self._record_decision(line, cand, decision)

    def _set_aside(self, line: int, payload: Any, err: Exception) -> None:
        """A record that could not be written goes to invalid.jsonl, naming the field at fault."""
        cid = payload.id if isinstance(payload, Invalid) else payload[0].id
        try:
            rec = payload.record() if isinstance(payload, Invalid) else self._decision_row(line, *payload)
            field, why = unwritable(rec) or (None, f"{type(err).__name__}: {err}")
        except Exception as e:  # noqa: BLE001
            field, why = None, f"{type(e).__name__}: {e}"
        at = f"{self.input}:{line}" + (f": field '{field}'" if field else "")
        reason = f"{at}: the record could not be written ({why})"
        self.store.append("invalid", sanitize({"line": line, "id": cid, "field": field, "reason": reason,
                                               "raw": "", "file": str(self.input)}))
        self.counts["invalid"] += 1
        if not isinstance(payload, Invalid):
            self.counts["valid"] -= 1  # read as a candidate; it is counted where a resume counts it
        self.bus.publish(CandidateInvalid(line=line, reason=sanitize(reason)))

    def _decision_row(self, line: int, cand: Candidate, d: Decision) -> dict[str, Any]:
        rec = sft_row(cand)  # tool-call arguments as objects, as TRL renders them
        rec.update(line=line, score=round(d.score, 6), reason=d.reason,
                   decided_by=d.decided_by, saved=list(d.saved))
        return rec

    def _record_decision(self, line: int, cand: Candidate, d: Decision) -> None:
        if d.accepted is None:
            self.bus.publish(CandidateDecided(line=line, decision=d))
            self.counts["failed"] += 1
            return
        rec = self._decision_row(line, cand, d)
        if d.accepted and self.cfg.best_k is not None:
            name = "passed"
        else:
            name = "accepted" if d.accepted else "rejected"
        self.store.append(name, rec)  # raises before anything is buffered if it cannot be written
        self.counts[name] += 1
        self.bus.publish(CandidateDecided(line=line, decision=d))

    def _journal(self, ev: Any) -> None:
        """The journal subscriber: run-level and per-candidate outcome events go to events.jsonl."""
        try:  # (CandidateLoaded and VerdictReceived are skipped: implied by decisions / in verdicts.jsonl)
            self.store.append("events", ev.to_json())
        except TypeError:  # a reason that cannot be written as it is: the event still goes in
            self.store.append("events", sanitize(ev.to_json()))

    def _finalize_best_k(self) -> None:
        assert self.cfg.best_k is not None
        if self.counts["failed"] or self.store.finalized():
            return
        self.store.commit()
        rows = ((r["task_id"], r["line"], r["score"]) for r in iter_jsonl(self.store.path("passed")))
        keep, dropped = select_best_k(rows, self.cfg.best_k)
        self.counts["accepted"] = self.store.finalize_best_k(keep, dropped)
        self.counts["rejected"] += len(dropped)
        self.counts["passed"] = 0  # each passed candidate is now counted as accepted or rejected

    # --- summary -------------------------------------------------------------------------------
    def _previous_summary(self) -> dict[str, Any] | None:
        """The summary an earlier invocation left (its wall time per invocation); None if unreadable."""
        try:
            doc = json.loads(self.store.files.summary.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def limits(self) -> dict[str, Any]:
        """Per paid teacher: the share of its call time spent waiting for the endpoint's limiter, the
        limit that binds and whose it is (tgrs_agents.paid.wrappers.limit_report)."""
        assert self.panel is not None
        out = {}
        for t in [*self.panel.teachers, *self.panel.reserves]:
            rep = t.limit_report() if hasattr(t, "limit_report") else None
            if rep is not None:
                out[t.name] = rep
        return out

    def _jury(self, final: bool) -> dict[str, Any] | None:
        assert self.panel is not None
        if final:  # the journal adds earlier sessions' verdicts, and those of candidates left undecided
            fresh = self._journal_fresh and not self.stopped
            self._jury_last = self.panel.jury_report(None if fresh else self.store.path("verdicts"))
        return self._jury_last

    def summary(self, final: bool = True) -> dict[str, Any]:
        """The run's figures. An interim summary (``final=False``, written every few seconds while the
        run goes) keeps the jury section of the last final one: re-fitting Dawid-Skene over the whole
        verdict journal each time cost a fifth of a verifier-only run."""
        c = dict(self.counts)
        assert self.panel is not None
        teachers = {name: st.to_json() for name, st in self.panel.stats.items()}
        cost = sum(st.cost_usd for st in self.panel.stats.values())
        spent = max(cost - self._cost_before, 0.0)
        limit = self.services.budget.limit_usd
        limits = self.limits()
        decided = c["accepted"] + c["rejected"] + c["passed"]
        share = c["invalid"] / (c["valid"] + c["invalid"]) if c["valid"] + c["invalid"] else 0.0
        return {
            **c,
            "input_format": self.format.name if self.format is not None else None,
            "input_format_why": self.format_why,
            "set_aside_share": round(share, 4),
            "set_aside_warning": (
                f"{c['invalid']} of {c['valid'] + c['invalid']} records ({share:.0%}) were set aside, more "
                f"than {self.opts.max_set_aside:.0%}: is the input format right? (read as "
                f"{self.format.name if self.format is not None else '?'}; see invalid.jsonl)"
            ) if share > self.opts.max_set_aside else None,
            "pending": c["valid"] - decided,
            "policy": self.panel.policy.describe(),
            "best_k": self.cfg.best_k,
            "finalized": self.cfg.best_k is None or self.store.finalized(),
            "stopped": self.stopped,
            "warnings": list(self.store.warnings),  # what recovery set aside or rebuilt
            "teachers": teachers,
            "calls": sum(st.calls for st in self.panel.stats.values()),
            "calls_saved": sum(st.saved for st in self.panel.stats.values()),
            "memo_hits": add_counts(self._memo_before, self.panel.memo_hits),  # see curation.memo
            "jury": self._jury(final),
            "sandbox": {t.name: t.isolation() for t in self.panel.teachers if hasattr(t, "isolation")},
            "cost_usd": round(cost, 6),  # the run's, every invocation: what the budget caps
            "cost_usd_invocation": round(spent, 6),  # this invocation's
            "budget_usd": limit,  # as given to this invocation
            "budget_used": round(cost / limit, 4) if limit else None,
            "limits": limits,
            "batches": self._batches.report() if self._batches is not None else None,
            "limit_notes": [r["note"] for r in limits.values() if r.get("note")],
            "rate_limited": sum(lim.stats.rate_limited for lim in self.services.limiters.all().values()),
            "cost_per_accepted_usd": round(cost / c["accepted"], 6) if c["accepted"] else None,
            **self._wall.to_json(),  # wall_s: every invocation of this directory; and this one's
        }


async def _as_async(chunks: Any) -> Any:
    for item in chunks:
        yield item


def _raw(raw: bytes) -> bytes:  # the openai reader's converter: a line is the record's own bytes
    return raw


async def curate(
    input_path: str | Path,
    panel: PanelConfig,
    out: str | Path,
    *,
    options: CurateOptions = CurateOptions(),
    bus: EventBus | None = None,
    input_format: str | None = None,
) -> dict[str, Any]:
    """Curate a file of trajectories with a panel in this process; returns the run summary.

    ``input_format``: a reader name of :mod:`tgrs_agents.formats` or ``auto`` (overrides ``options``).
    The public ``tgrs_agents.curate`` (:mod:`tgrs_agents.cluster.api`) adds ``engine="ray"``.
    """
    if input_format is not None:
        from dataclasses import replace

        options = replace(options, input_format=input_format)
    return await CurateRun(input_path, panel, out, options=options, bus=bus).run()
