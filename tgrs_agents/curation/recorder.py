"""The curate run's last stage, as a part of :class:`~tgrs_agents.curation.run.CurateRun`: the one
writer of decisions and set-aside records.

It drains the judges' queue, appends each decision to ``accepted`` / ``rejected`` (``passed`` under
best-k, finalized once every candidate is decided) and each bad record to ``invalid.jsonl``, commits
every ``commit_interval_s`` and rewrites ``summary.json`` every ``summary_interval_s``. A record that
cannot be written is set aside naming its field, never dropped; a fault that must end the run stops it,
and the recorder keeps draining, so the judges finish (and journal) the calls they started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..events import CandidateDecided, CandidateInvalid, EventBus
from ..types import Candidate, Decision
from .ingest import Invalid
from .jsonl import sanitize, sft_row, unwritable
from .panel_file import PanelConfig
from .policy import select_best_k
from .store import RunStore, iter_jsonl

if TYPE_CHECKING:
    from .run import CurateOptions

_DONE = object()  # the end of a stage's queue


class Recorder:
    """Decisions and set-aside records to the run's files; :class:`~tgrs_agents.curation.run.CurateRun`
    holds the state."""

    store: RunStore
    opts: CurateOptions
    cfg: PanelConfig
    bus: EventBus
    input: Path
    counts: dict[str, int]
    _fail: Callable[[BaseException], None]
    summary: Callable[..., dict[str, Any]]

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

