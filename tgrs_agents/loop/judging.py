"""The loop's judge stage (and the refine stage after it), as a part of
:class:`~tgrs_agents.loop.rounds.ExpertIteration`.

A round's candidates are judged by the panel through :mod:`tgrs_agents.curation.run`: a local student
sampled in chunks is judged through the stream's feed as it is written (:mod:`tgrs_agents.loop.stream`),
anything else after the round is sampled. The round's panel is the panel file with the teachers that
follow the student (``model = "{student}"``) pointed at round K-1's student, with held-out calibration
demonstrations; the round's curate run gets the budget the rest of the run left (and the verdict
ledger, so nothing is paid twice). ``refine`` then has a teacher rewrite what was accepted, and the
student keeps, per candidate, the version Selective Reflection-Tuning's rule picks.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..curation.layout import LoopDir, RoundDir
from ..curation.store import atomic_write, iter_jsonl
from ..types import Task
from .budget import BudgetStop, RunBudgetGuard, curate_cost, total_spent
from .config import GeneratorConfig, LoopConfig
from .sampling import calibration_demonstrations
from .stages import Judged, Refined

if TYPE_CHECKING:
    from ..paid.services import Services


def _jsonl(recs: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in recs)


class JudgeStages:
    """The judge and refine stages; :class:`~tgrs_agents.loop.rounds.ExpertIteration` holds the state."""

    CALIBRATION_TASKS = 128  # held-out demonstrations a student_compat teacher calibrates on
    cfg: LoopConfig
    dir: Path
    layout: LoopDir
    accept_all: bool
    cache: bool
    cache_path: str | None
    services: Services
    guard: RunBudgetGuard | None
    _limit: float | None

    if TYPE_CHECKING:  # ExpertIteration's
        def model_dir(self, rnd: int) -> Path: ...

        def panel_file(self) -> Path: ...

        def tasks(self) -> tuple[list[Task], list[Task]]: ...

        def _rollouts(self, *args: Any, **kw: Any) -> Any: ...

    @property
    def chunked(self) -> bool:
        """Whether rounds are sampled in chunks (tgrs_agents.loop.stream) and judged through its feed: a
        local student on the local engine. A served generator or student writes its chunks (see
        :attr:`journaled`) and is judged after the round (its calls are paid, and a budget sees them per
        stage); the ray engine splits a round over workers, and so does a :meth:`_rollouts` of one's own
        (an override on a subclass or instance: scripted rollouts)."""
        return (self._own_sampler and self.cfg.generate.engine == "local" and self.cfg.generator is None
                and self.cfg.student.backend != "openai")

    @property
    def journaled(self) -> bool:
        """Whether the round's candidates are written chunk by chunk (:mod:`tgrs_agents.loop.stream`), so a
        killed generate stage keeps what it wrote and samples (and pays for) only the rest: the streamed
        local student, and a served generator or student. Their calls are paid, so their chunks are judged
        after the round (a budget sees the generate stage whole); they sample up to ``SERVED_AHEAD`` chunks
        at once (their endpoint's limiter sets the pace, as for a whole round: 1.02x its wall in
        ``benchmarks/bench_served_generate.py``), each written as the ones before it are, and a kill pays
        again only for the chunks sampled and not yet written."""
        served = self.cfg.generator is not None or self.cfg.student.backend == "openai"
        return self._own_sampler and (self.cfg.generate.engine == "local" or served)

    def sampler(self, rnd: int) -> Path | GeneratorConfig:
        """What samples round ``rnd``: the ``[generator]`` in the student's place, else round ``rnd - 1``'s student."""
        return self.cfg.generator or self.model_dir(rnd - 1)

    @property
    def _own_sampler(self) -> bool:
        return "_rollouts" not in vars(self) and getattr(type(self)._rollouts, "own_sampler", False)

    def _streamed(self, rnd: int, train: list[Task], *, judge: bool) -> tuple[Any, Any]:
        """Round ``rnd``'s candidates made chunk by chunk into ``candidates.jsonl`` (what a killed run
        kept is kept) and, with ``judge``, judged by the panel: as they are written with ``[generate]
        stream``, else after the round. Returns (StreamResult, RolloutStats)."""
        from ..generate.rollouts import RolloutStats
        from .stream import SERVED_AHEAD, generate_and_judge, stream_fingerprint, student_chunks

        g, rd, prefix = self.cfg.generate, self.layout.round(rnd), f"r{rnd}-"
        curate = None
        if judge:
            from ..curation.run import CurateRun

            panel = self.round_panel(rnd)
            options = self.judge_options(rnd, panel)

            def curate(feed: Any) -> Any:
                return CurateRun(rd.candidates, panel, rd.curate.dir, options=options, source=feed).run()

        stats = RolloutStats()

        async def go() -> Any:
            async with student_chunks(self.cfg, self.sampler(rnd), g.n, g.temperature, prefix, self.services,
                                      stats) as chunk:
                return await generate_and_judge(chunk, train, g.n, rd.candidates, judge=curate, stream=g.stream,
                                                chunk_tasks=g.chunk_tasks, ahead=1 if self.chunked else SERVED_AHEAD,
                                                fingerprint=stream_fingerprint(train, g.n, prefix))

        res = asyncio.run(go())
        if res.summary is not None:
            self.budget_stopped(rnd, res.summary)
        return res, stats

    def judge(self, rnd: int, train: list[Task] | None = None) -> Judged:
        rd = self.layout.round(rnd)
        if self.accept_all:
            recs = list(iter_jsonl(rd.candidates))
            atomic_write(rd.file(RoundDir.ALL_ACCEPTED), _jsonl(recs))
            return Judged(accepted=len(recs), acceptance_rate=1.0, accepted_file=RoundDir.ALL_ACCEPTED)
        if self.chunked:  # through the stream's feed (a streamed round was judged as it was generated)
            self.panel_file()  # a missing panel file fails before the tasks are read
            res, _ = self._streamed(rnd, train if train is not None else self.tasks()[0], judge=True)
            return self._judged(res.summary)
        from ..curation.run import curate

        panel = self.round_panel(rnd)
        summary = asyncio.run(curate(rd.candidates, panel, rd.curate.dir, options=self.judge_options(rnd, panel)))
        self.budget_stopped(rnd, summary)
        return self._judged(summary)

    @staticmethod
    def _judged(summary: dict[str, Any]) -> Judged:
        return Judged(accepted=summary["accepted"],
                      acceptance_rate=round(summary["accepted"] / max(summary["valid"], 1), 4),
                      calls_saved=summary["calls_saved"], accepted_file=RoundDir.CURATE_ACCEPTED)

    def round_panel(self, rnd: int) -> Any:
        """The panel that judges round ``rnd``: the panel file, with teachers that follow the student
        pointed at round ``rnd - 1``'s (and its calibration demonstrations)."""
        from ..curation.panel_file import load_panel

        panel = load_panel(self.panel_file())
        return self.student_panel(panel, self.model_dir(rnd - 1), self.calibration(rnd, panel))

    def judge_options(self, rnd: int, panel: Any) -> Any:
        """The round's curate options: the verdict ledger when the panel has priced judges, and the budget
        left once everything else the run paid is counted (curate caps its directory's total)."""
        from ..curation.run import CurateOptions
        from .dryrun import priced

        budget = None
        if self._limit is not None:
            budget = max(self._limit - (total_spent(self.dir) - curate_cost(self.layout.round(rnd).curate.dir)), 0.0)
        return CurateOptions(cache=self.cache and bool(priced(panel)), cache_path=self.cache_path, budget_usd=budget)

    def budget_stopped(self, rnd: int, summary: dict[str, Any]) -> None:
        """Raise :class:`~tgrs_agents.loop.budget.BudgetStop` if the budget stopped the round's curate run
        (its pending candidates are judged when the run resumes with a larger one)."""
        if str(summary.get("stopped") or "").startswith("budget") and self.guard is not None:
            raise BudgetStop(self.guard.line(rnd, "judge", total_spent(self.dir), f"{summary['pending']} "
                                             "candidates not judged yet", during=True), round=rnd, stage="judge")

    def refine(self, rnd: int, accepted_file: str, refiner: Any = None) -> Refined:
        """Teacher rewrites of the accepted data; the round's student keeps, per candidate, the version
        Selective Reflection-Tuning's rule picks (tgrs_agents.loop.refine). Writes round-K/refine/."""
        from ..teachers.student_compat import StudentCompatConfig, StudentCompatTeacher
        from .refine import OpenAIRefiner, refine_file

        r = self.cfg.refine
        out_dir = self.layout.round(rnd).refine
        out_dir.mkdir(parents=True, exist_ok=True)
        if refiner is None:
            assert r.model is not None
            refiner = OpenAIRefiner(r.model, base_url=r.base_url, api_key_env=r.api_key_env, target=r.target,
                                    services=self.services, price_input_per_mtok=r.price_input_per_mtok,
                                    price_output_per_mtok=r.price_output_per_mtok)
        scorer = StudentCompatTeacher(StudentCompatConfig(name="refine_student", kind="student_compat",
                                                          model=str(self.model_dir(rnd - 1))))

        async def go() -> Any:
            try:
                return await refine_file(self.layout.round(rnd).file(accepted_file), out_dir, refiner, scorer)
            finally:
                await scorer.aclose()
                if hasattr(refiner, "aclose"):
                    await refiner.aclose()

        out = asyncio.run(go())
        return Refined(counts=dict(out.counts), accepted_file=RoundDir.REFINED)

    @staticmethod
    def student_panel(panel: Any, student: Path, calibration: Path | None = None) -> Any:
        """Point teachers whose ``model = "{student}"`` (e.g. student_compat) at this round's student;
        those with a ``calibration`` field left unset get ``calibration`` (held-out demonstrations)."""
        def follow(t: Any) -> Any:
            if getattr(t, "model", None) != "{student}":
                return t
            update: dict[str, Any] = {"model": str(student)}
            if calibration is not None and "calibration" in type(t).model_fields and t.calibration is None:
                update["calibration"] = str(calibration)
            return t.model_copy(update=update)

        return panel.model_copy(update={"teachers": tuple(follow(t) for t in panel.teachers)})

    def calibration(self, rnd: int, panel: Any) -> Path | None:
        """Held-out demonstrations for the panel's student_compat teachers that follow the student
        (``round-K/calibration.jsonl``): clean demonstrations of fresh built-in tasks, apart from both
        splits. None for task files (no demonstrations to draw) or when no teacher needs them."""
        wants = any(getattr(t, "kind", "") == "student_compat" and getattr(t, "model", None) == "{student}"
                    and getattr(t, "calibration", "") is None for t in panel.teachers)
        if not wants or self.cfg.tasks.source != "arithmetic":
            return None
        path = self.layout.round(rnd).calibration
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, _jsonl(calibration_demonstrations(self.cfg, self.CALIBRATION_TASKS)))
        return path

