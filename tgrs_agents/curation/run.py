"""The async curation run: read -> judge (panel cascade) -> decide -> record, with resume.

Three stages joined by bounded queues inside one ``asyncio.TaskGroup``::

    reader ──(queue: max_in_flight)──> judge workers ×max_in_flight ──(queue)──> recorder

The reader streams the input and blocks when the judges fall behind, so memory stays flat. The
recorder is the only writer of decisions (paid verdicts are journaled by the judges the moment they
arrive). :class:`CurateRun` holds the run's state, opens and closes the directory; the stages are in
parts beside it: :mod:`.pipeline` (reader, judges), :mod:`.recorder` and :mod:`.run_summary` (the figures).
Cancelling the run (Ctrl-C) cancels the group; whatever was decided is committed and the directory
resumes where it stopped.

One process owns the directory (:func:`~tgrs_agents.curation.lock.run_lock`, taken before anything in
it is read). No single record ends a run: a record that cannot be written is set aside as invalid,
naming the field. A fault that must end it (an endpoint that refuses the key or stopped answering, a
verdict ledger or a file that cannot be written) *stops* it instead of cancelling it: no new
candidate is started, the calls in flight are drained and journaled, and the run then raises the
error, one line naming its cause; the directory resumes once the cause is fixed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunStoreError, TgrsError
from ..events import (
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
from .batching import BatchStage
from .ingest import (
    check_format,
    input_unit,
    remember_format,
)
from .lock import run_lock
from .panel import Panel
from .panel_file import PanelConfig
from .pipeline import Pipeline
from .recorder import Recorder
from .recover import open_index
from .run_summary import RunFigures
from .store import RunStore, io_failure


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


class CurateRun(Pipeline, Recorder, RunFigures):
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
