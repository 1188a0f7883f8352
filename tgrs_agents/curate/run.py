"""The async curation run: read -> judge (panel cascade) -> decide -> record, with resume.

Three stages joined by bounded queues inside one ``asyncio.TaskGroup``::

    reader ──(queue: max_in_flight)──> judge workers ×max_in_flight ──(queue)──> recorder

The reader streams the input and blocks when the judges fall behind, so memory stays flat. The
recorder is the only writer of the run directory. Cancelling the run (Ctrl-C) cancels the group;
whatever was decided is committed and the directory resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BudgetExhausted
from ..events import (
    CandidateDecided,
    CandidateInvalid,
    CandidateLoaded,
    EventBus,
    RunFinished,
    RunStarted,
    RunStopped,
    VerdictReceived,
)
from ..paid.cost import Budget
from ..paid.ledger import Ledger
from ..paid.services import Services
from ..types import Candidate, Decision, Verdict
from .ingest import IdIndex, Invalid, check_format, read_chunks, remember_format
from .panel import Panel
from .panel_file import PanelConfig
from .policy import select_best_k
from .store import RunStore, iter_jsonl, verdict_record


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
    ) -> None:
        self.input = Path(input_path)
        self.cfg = panel_config
        self.store = RunStore(out)
        self.opts = options
        self.bus = bus or EventBus()
        self.panel = panel
        self.counts = {"input_lines": 0, "valid": 0, "accepted": 0, "rejected": 0, "invalid": 0,
                       "failed": 0, "passed": 0}
        self.stopped: str | None = None
        self.format: Any = None  # the reader (tgrs_agents.formats.Format), resolved in run()
        self.format_why = ""
        self.services = Services()
        self._t0 = time.monotonic()
        self._wall_before = 0.0

    # --- the run -------------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        if not self.input.is_file():
            from ..errors import ConfigError

            raise ConfigError("input file not found", file=self.input)
        if self.panel is None:  # build first: a bad teacher or missing key fails before DIR is touched
            self.services = Services(
                budget=Budget(self.opts.budget_usd),
                ledger=Ledger(self.opts.cache_path) if self.opts.cache else None,
            )
            self.panel = Panel.from_config(self.cfg, self.services)
        from ..formats import resolve

        self.format, self.format_why = resolve(self.input, self.opts.input_format)
        if check_format(self.store.dir, self.format, force=self.opts.force):
            self.store._archive()  # --force on a run read with another reader: start afresh
        state = self.store.open(
            panel_toml=self.cfg.to_toml(), panel_fp=self.cfg.fingerprint(),
            input_path=self.input, force=self.opts.force,
        )
        for name, st in state.stats.items():
            if name in self.panel.stats:
                self.panel.stats[name] = st
        self.services.budget.spent_usd = sum(st.cost_usd for st in state.stats.values())
        for k in ("accepted", "rejected", "invalid", "passed"):
            self.counts[k] = state.counts[k]
        if self.store.finalized():  # passed.jsonl was already split into accepted and rejected
            self.counts["passed"] = 0
        self.counts["valid"] = self.counts["accepted"] + self.counts["rejected"] + self.counts["passed"]
        self._wall_before = state.wall_s
        self._prior = state.prior
        self.bus.subscribe(self._journal)
        self.bus.publish(RunStarted(run_dir=str(self.store.dir), input=str(self.input),
                                    resumed=state.resumed, already_done=state.done.count,
                                    panel_fingerprint=self.cfg.fingerprint()))
        remember_format(self.store.dir, self.format, self.format.open(self.input).unit)
        index = IdIndex(self.store.dir / "ids.sqlite")
        try:
            await self._stages(state, index)
            if self.cfg.best_k is not None and not self.stopped:  # only once every candidate is in
                self._finalize_best_k()
        except (asyncio.CancelledError, KeyboardInterrupt):
            self.stopped = "interrupted"
            raise
        finally:
            index.close()
            summary = self.summary()
            if self.stopped:
                self.bus.publish(RunStopped(reason=self.stopped))
            else:
                self.bus.publish(RunFinished(summary=summary))
            self.store.close(wall_s=summary["wall_s"])
            self.store.write_summary(summary)
            await self.panel.aclose()
            self.services.close()
        return summary

    async def _stages(self, state: Any, index: IdIndex) -> None:
        n = max(1, self.opts.max_in_flight)
        todo: asyncio.Queue[Any] = asyncio.Queue(maxsize=n)
        results: asyncio.Queue[Any] = asyncio.Queue(maxsize=n)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._reader(state, index, todo, results, n))
            workers = [tg.create_task(self._judge_worker(todo, results)) for _ in range(n)]
            recorder = tg.create_task(self._recorder(results))
            await asyncio.gather(*workers)
            await results.put(_DONE)
            await recorder

    async def _reader(self, state: Any, index: IdIndex, todo: asyncio.Queue[Any],
                      results: asyncio.Queue[Any], n_workers: int) -> None:
        for lines_read, chunk in read_chunks(self.input, state.done, index, fmt=self.format):
            if self.stopped:
                break
            self.counts["input_lines"] = lines_read
            for line, item in chunk:
                if isinstance(item, Invalid):
                    await results.put((line, item))
                else:
                    self.counts["valid"] += 1
                    self.bus.publish(CandidateLoaded(candidate_id=item.id, line=line))
                    await todo.put((line, item))
            await asyncio.sleep(0)  # let the judges run between chunks
        for _ in range(n_workers):
            await todo.put(_DONE)

    async def _judge_worker(self, todo: asyncio.Queue[Any], results: asyncio.Queue[Any]) -> None:
        assert self.panel is not None
        while (item := await todo.get()) is not _DONE:
            line, cand = item
            if self.stopped:
                continue  # left pending for the next run
            prior = self._prior.pop(line, None)
            try:
                decision, _ = await self.panel.judge(cand, prior,
                                                     on_verdict=self._verdict_hook(line))
            except BudgetExhausted as e:  # the one budget-stop signal: this candidate stays pending
                self.stopped = self.stopped or f"budget: {e}"
                continue
            await results.put((line, (cand, decision)))

    def _verdict_hook(self, line: int) -> Callable[[str, Verdict], None]:
        def hook(cand_id: str, v: Verdict) -> None:
            self.store.append("verdicts", verdict_record(line, cand_id, v))
            self.bus.publish(VerdictReceived(candidate_id=cand_id, verdict=v))
        return hook

    async def _recorder(self, results: asyncio.Queue[Any]) -> None:
        last_summary = time.monotonic()
        while (item := await results.get()) is not _DONE:
            line, payload = item
            if isinstance(payload, Invalid):
                self.counts["invalid"] += 1
                self.store.append("invalid", payload.record())
                self.bus.publish(CandidateInvalid(line=line, reason=payload.reason))
            else:
                cand, decision = payload
                self._record_decision(line, cand, decision)
            self.store.maybe_commit(self.opts.commit_interval_s)
            if time.monotonic() - last_summary > self.opts.summary_interval_s:
                self.store.write_summary(self.summary())
                last_summary = time.monotonic()
        self.store.commit()

    def _record_decision(self, line: int, cand: Candidate, d: Decision) -> None:
        self.bus.publish(CandidateDecided(line=line, decision=d))
        if d.accepted is None:
            self.counts["failed"] += 1
            return
        rec = cand.sft_record()
        rec.update(line=line, score=round(d.score, 6), reason=d.reason,
                   decided_by=d.decided_by, saved=list(d.saved))
        if d.accepted and self.cfg.best_k is not None:
            name = "passed"
        else:
            name = "accepted" if d.accepted else "rejected"
        self.counts[name] += 1
        self.store.append(name, rec)

    def _journal(self, ev: Any) -> None:
        """The journal subscriber: run-level and per-candidate outcome events go to events.jsonl."""
        if isinstance(ev, CandidateLoaded | VerdictReceived):
            return  # implied by decisions / kept in verdicts.jsonl
        self.store.append("events", ev.to_json())

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
    def summary(self) -> dict[str, Any]:
        c = dict(self.counts)
        wall = self._wall_before + time.monotonic() - self._t0
        assert self.panel is not None
        teachers = {name: st.to_json() for name, st in self.panel.stats.items()}
        cost = sum(st.cost_usd for st in self.panel.stats.values())
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
            "teachers": teachers,
            "calls": sum(st.calls for st in self.panel.stats.values()),
            "calls_saved": sum(st.saved for st in self.panel.stats.values()),
            "cost_usd": round(cost, 6),
            "budget_usd": self.services.budget.limit_usd,
            "rate_limited": sum(lim.stats.rate_limited for lim in self.services.limiters.all().values()),
            "cost_per_accepted_usd": round(cost / c["accepted"], 6) if c["accepted"] else None,
            "wall_s": round(wall, 3),
        }


async def curate(
    input_path: str | Path,
    panel: PanelConfig,
    out: str | Path,
    *,
    options: CurateOptions = CurateOptions(),
    bus: EventBus | None = None,
    input_format: str | None = None,
) -> dict[str, Any]:
    """Curate a file of trajectories with a panel; returns the run summary.

    ``input_format``: a reader name of :mod:`tgrs_agents.formats` or ``auto`` (overrides ``options``).
    """
    if input_format is not None:
        from dataclasses import replace

        options = replace(options, input_format=input_format)
    return await CurateRun(input_path, panel, out, options=options, bus=bus).run()
