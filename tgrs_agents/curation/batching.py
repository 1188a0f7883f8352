"""Batch judges inside the curation run: parked candidates, and ``tgrs status``.

A candidate whose cascade reaches a ``mode = "batch"`` judge may wait hours for its verdict. The
run's judge workers are few and bounded, so the worker does not wait with it: :meth:`BatchStage.start`
runs each candidate's cascade as a task of the run's task group and returns as soon as that task
either ends or *parks* (the batch judge sets :data:`~tgrs_agents.teachers.batch_judge.PARK`), and
the worker takes the next candidate. A parked task resumes when its verdict arrives and runs the
later stages of the cascade itself. The judges bound how many candidates park
(``batch.max_parked``), so memory stays flat and a slow batch slows the reader as any slow stage does.

When the input is read, :meth:`BatchStage.drain` submits what is buffered at once and waits for
every parked candidate; a run that was stopped (budget, a fault) :meth:`~BatchStage.abort`\\ s
instead: parked candidates stay pending, and the next invocation polls the same batches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from ..paid.batch_journal import JOURNAL, BatchJournal


class BatchStage:
    def __init__(self, judges: list[Any], run_dir: Path, tg: asyncio.TaskGroup) -> None:
        self.judges = judges
        self.tg = tg
        self.parked: set[asyncio.Task[Any]] = set()
        for j in judges:
            j.open(run_dir)
        self._runs = [tg.create_task(j.run()) for j in judges]

    @classmethod
    def of(cls, panel: Any, run_dir: Path, tg: asyncio.TaskGroup) -> BatchStage | None:
        """The stage for ``panel``'s batch judges (None when it has none)."""
        judges = [t for t in [*panel.teachers, *panel.reserves] if hasattr(t, "batch_price")]
        return cls(judges, run_dir, tg) if judges else None

    async def start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run one candidate's cascade; return once it has ended or parked."""
        from ..teachers.batch_judge import PARK

        parked = asyncio.Event()
        token = PARK.set(parked)
        try:
            task = self.tg.create_task(coro)  # the task's context holds ``parked``
        finally:
            PARK.reset(token)
        self.parked.add(task)
        task.add_done_callback(self.parked.discard)
        wait = asyncio.ensure_future(parked.wait())
        try:
            await asyncio.wait([task, wait], return_when=asyncio.FIRST_COMPLETED)
        finally:
            wait.cancel()

    async def drain(self) -> None:
        """No more candidates: submit what is buffered, wait for every parked one, end the judges."""
        for j in self.judges:
            j.close()
        while self.parked:
            await asyncio.wait(list(self.parked))
        await asyncio.gather(*self._runs)

    async def abort(self) -> None:
        """Stop without waiting: parked candidates stay pending; open batches wait for the next run."""
        for t in [*self.parked, *self._runs]:
            t.cancel()
        await asyncio.gather(*self.parked, *self._runs, return_exceptions=True)

    def report(self) -> dict[str, Any]:
        return {j.name: j.report() for j in self.judges}


def batch_status(run_dir: str | Path, *, now: float | None = None) -> dict[str, Any]:
    """What the journals of ``run_dir`` say, per batch judge: batches in flight (age, items, the last
    known counts) and the ended ones by status. Reads files only; no network."""
    now = time.time() if now is None else now
    out: dict[str, Any] = {}
    for jpath in sorted((Path(run_dir) / "batch").glob(f"*/{JOURNAL}")):
        entries = BatchJournal(jpath.parent).load().values()
        ended: dict[str, int] = {}
        for e in entries:
            if not e.open:
                ended[e.ended or "?"] = ended.get(e.ended or "?", 0) + 1
        out[jpath.parent.name] = {
            "in_flight": [{"key": e.key, "batch_id": e.batch_id, "items": e.n, "age_s": round(now - e.t, 1),
                           "attempt": e.attempt, "state": "submitted" if e.batch_id else "unsubmitted",
                           "counts": {}} for e in entries if e.open],
            "ended": ended,
            "items_in_flight": sum(e.n for e in entries if e.open),
        }
    return out


async def poll_status(run_dir: str | Path, status: dict[str, Any], panel_file: Path) -> None:
    """Ask the provider about each batch in flight (``tgrs status --poll``): its state and counts."""
    from ..paid.services import Services
    from ..teachers.base import BuildContext, teacher_class
    from ..teachers.batch_judge import BatchJudge
    from .panel_file import load_panel

    cfg = load_panel(panel_file)
    ctx = BuildContext(base_dir=Path(cfg.base_dir), source=cfg.source)
    for tc in cfg.teachers:
        if tc.name not in status or getattr(tc, "mode", "") != "batch":
            continue
        judge = BatchJudge(teacher_class(tc.kind)(tc, ctx), Services())  # type: ignore[arg-type]
        judge.open(run_dir)
        assert judge.runner is not None
        try:
            for row in status[tc.name]["in_flight"]:
                if row["batch_id"]:
                    st = await judge.runner.client.poll(row["batch_id"])
                    row["state"], row["counts"] = st.provider_status, st.counts
        finally:
            await judge.aclose()
