"""The panel: teachers consulted cheapest first, stopping as soon as the policy's outcome is fixed.

Teachers are grouped by ``cost_rank``. Groups run one after the other; inside a group, inline
teachers (pure-CPU verifiers) run one by one and I/O teachers run concurrently. After every verdict
(inline) or group (concurrent) the policy is asked whether the outcome is decided; if it is, the
remaining teachers are not called and are counted as *saved*. With ``best_k`` ranking needs every
score, so only rejections short-circuit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import groupby
from typing import Any

from ..errors import BudgetExhausted, ConfigError, TeacherError
from ..events import TeacherStats
from ..types import Candidate, Decision, Usage, Verdict
from .policy import Policy

VerdictHook = Callable[[str, Verdict], None]


class Panel:
    """A policy and its teachers, ready to judge candidates."""

    def __init__(self, teachers: Sequence[Any], policy: Policy) -> None:
        names = [t.name for t in teachers]
        if sorted(names) != sorted(policy.teachers):
            raise ConfigError(f"policy teachers {policy.teachers} differ from panel {names}")
        self.teachers = sorted(teachers, key=lambda t: t.cost_rank)
        self.policy = policy
        self.stats = {t.name: TeacherStats() for t in self.teachers}
        self._groups = [list(g) for _, g in groupby(self.teachers, key=lambda t: t.cost_rank)]
        self._sems = {
            t.name: asyncio.Semaphore(getattr(getattr(t, "config", None), "max_concurrency", 64))
            for t in self.teachers
            if not getattr(t, "inline", False)
        }

    @classmethod
    def from_config(cls, cfg: Any, services: Any = None) -> Panel:
        """Build every teacher of a :class:`~tgrs_agents.curate.panel_file.PanelConfig`.

        Paid teachers are wrapped by ``services`` (limits, retries, cost, cache).
        """
        from pathlib import Path

        from ..paid.services import Services
        from ..teachers.base import BuildContext, teacher_class

        services = services or Services()
        ctx = BuildContext(base_dir=Path(cfg.base_dir), source=cfg.source)
        teachers = [services.wrap(teacher_class(t.kind)(t, ctx)) for t in cfg.teachers]
        return cls(teachers, cfg.build_policy())

    async def aclose(self) -> None:
        for t in self.teachers:
            await t.aclose()

    async def _call(self, teacher: Any, cand: Candidate) -> Verdict:
        t0 = time.perf_counter()
        try:
            if teacher.inline:
                v = await teacher.judge(cand)
            else:
                async with self._sems[teacher.name]:
                    v = await teacher.judge(cand)
        except TeacherError as e:
            usage = e.usage if isinstance(e.usage, Usage) else None
            v = Verdict.failure(teacher.name, str(e), latency_s=time.perf_counter() - t0,
                                usage=usage)
        except BudgetExhausted:
            raise  # not this teacher's failure: the run must stop starting calls (see judge)
        except Exception as e:  # noqa: BLE001 - a teacher bug must not crash the run
            msg = f"{type(e).__name__}: {e}"
            v = Verdict.failure(teacher.name, msg, latency_s=time.perf_counter() - t0)
        if v.latency_s == 0.0 and not v.cached:
            v = v.model_copy(update={"latency_s": time.perf_counter() - t0})
        self.stats[teacher.name].add(v)
        return v

    async def _consult(self, teacher: Any, cand: Candidate, stop: list[BudgetExhausted]) -> Verdict | None:
        """``_call``, with a budget refusal kept in ``stop`` (so sibling calls in flight finish
        first) and the error verdict that keeps what the refused call's earlier attempts were
        billed (None when they were billed nothing: the candidate stays pending)."""
        try:
            return await self._call(teacher, cand)
        except BudgetExhausted as e:
            stop.append(e)
            if e.usage is None or not e.usage.requests:
                return None
            v = Verdict.failure(teacher.name, f"stopped by the budget: {e}", usage=e.usage)
            self.stats[teacher.name].add(v)
            return v

    def _decider(self, verdicts: Mapping[str, Verdict]) -> str | None:
        """The teacher whose verdict fixed the outcome, replaying ``verdicts`` in call order."""
        heard: dict[str, Verdict] = {}
        for t in sorted(self.teachers, key=lambda t: (t.cost_rank, not t.inline)):
            if t.name in verdicts:
                heard[t.name] = verdicts[t.name]
                if self._stop(self.policy.decide(heard)):
                    return str(t.name)
        return None

    def _stop(self, outcome: bool | None) -> bool:
        if outcome is None:
            return False
        return outcome is False or self.policy.best_k is None

    async def judge(
        self,
        cand: Candidate,
        prior: Mapping[str, Verdict] | None = None,
        on_verdict: VerdictHook | None = None,
    ) -> tuple[Decision, list[Verdict]]:
        """Judge one candidate. ``prior`` holds verdicts already paid for (from a killed run).

        Returns the decision and the verdicts that are new in this call.
        """
        verdicts: dict[str, Verdict] = {}
        for name, v in (prior or {}).items():
            if v.error is None and name in self.stats:
                verdicts[name] = v
                self.stats[name].reused += 1
        new: list[Verdict] = []
        decided_by: str | None = None
        outcome = self.policy.decide(verdicts) if verdicts else None

        def record(v: Verdict) -> bool:
            nonlocal outcome, decided_by
            verdicts[v.teacher] = v
            new.append(v)
            if on_verdict is not None:
                on_verdict(cand.id, v)
            outcome = self.policy.decide(verdicts)
            if self._stop(outcome) and decided_by is None:
                decided_by = v.teacher
            return self._stop(outcome)

        stop: list[BudgetExhausted] = []  # the budget's refusal: raised once the calls in flight end
        for group in self._groups:
            if self._stop(outcome):
                break
            todo = [t for t in group if t.name not in verdicts]
            for t in [t for t in todo if t.inline]:
                if record(await self._call(t, cand)):
                    break
            slow = [t for t in todo if not t.inline]
            if self._stop(outcome) or not slow:
                continue
            if len(slow) == 1:
                heard = [await self._consult(slow[0], cand, stop)]
            else:
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(self._consult(t, cand, stop)) for t in slow]
                heard = [task.result() for task in tasks]
            for got in heard:
                if got is not None:
                    record(got)
            if stop:  # the calls that did start were kept (and are journaled)
                raise stop[0]

        if decided_by is None and self._stop(outcome):
            decided_by = self._decider(verdicts)  # decided by verdicts reused from a killed run
        saved = tuple(t.name for t in self.teachers if t.name not in verdicts)
        for name in saved:
            self.stats[name].saved += 1
        final = self.policy.decide(verdicts)
        decision = Decision(
            candidate_id=cand.id,
            task_id=cand.task_id,
            accepted=final,
            score=self.policy.rank_score(verdicts),
            reason=self.policy.reason(final, verdicts),
            decided_by=decided_by,
            verdicts=tuple(verdicts.values()),
            saved=saved,
        )
        return decision, new
