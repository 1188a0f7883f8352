"""The panel: teachers consulted cheapest first, stopping as soon as the policy's outcome is fixed.

Teachers (the policy's *seats*) are grouped by ``cost_rank``; ``escalate_only`` seats come after
every other seat, whatever their rank. Groups run one after the other; inside a group, inline
teachers (pure-CPU verifiers) run one by one and I/O teachers run concurrently. After every verdict
(inline) or group (concurrent) the policy is asked whether the outcome is decided; if it is, the
remaining teachers are not called and are counted as *saved*. With ``best_k`` ranking needs every
score, so only rejections short-circuit.

A seat whose teacher fails for good (an error verdict, after the paid layer's retries) is handed
to the next unused ``reserve`` judge at once (inline seats) or when its group ends (concurrent
seats, in seat order), so which reserve fills which seat never depends on timing; the reserve's
verdict then counts in that seat. The whole decision rule is in :mod:`.policy`.

Each candidate is judged with the policy of the moment it started: ``weights = "auto"`` refits the
policy between candidates (:mod:`.jury`), never in the middle of one. A share ``audit`` of the
candidates (chosen by a hash of their id, so a resumed run audits the same ones) is judged by every
seat, short-circuit or not: without such complete rows the verdicts a cascade leaves behind do not
identify each judge's rates (a judge asked only when the others disagree is seen only on hard
cases). Their decision is the same; only the saving is given up.

A teacher that declares what it reads (``memo_content``: the deterministic verifiers) and is worth
remembering (not ``inline``: a sandbox, a user function) is never run twice on the same content
(:mod:`.memo`): a repeat gets the kept verdict, counted in its stats as a call and in ``memo_hits``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from ..errors import CallsStopped, ConfigError, Halted, TeacherError
from ..events import TeacherStats
from ..types import Candidate, Decision, Usage, Verdict
from .jury import JuryLog
from .memo import VerdictMemo, memo_key, shared_memo, teacher_identity
from .policy import Policy

VerdictHook = Callable[[str, Verdict], None]


class _Case:
    """One candidate being judged: what the policy reads (``seats``), every verdict heard
    (``trail``, by teacher name), the reserves it used, and who decided."""

    def __init__(self, panel: Panel, cand: Candidate, prior: Mapping[str, Verdict],
                 on_verdict: VerdictHook | None) -> None:
        self.panel, self.cand, self.on_verdict = panel, cand, on_verdict
        self.policy = panel.policy
        self.seats: dict[str, Verdict] = {}
        self.trail: dict[str, Verdict] = {}
        self.spare: dict[str, Verdict] = {}  # reserves' verdicts from a killed run, used on demand
        self.used: set[str] = set()
        self.new: list[Verdict] = []
        self.decided_by: str | None = None
        self.audit = panel.audited(cand)  # every seat is heard: the reliability estimates need some
        self.stop: list[CallsStopped] = []  # a refusal: raised once the calls in flight end
        for name, v in prior.items():
            if v.error is not None or name not in panel.stats:
                continue
            if name in panel.reserve_names:
                self.spare[name] = v
            else:
                self.seats[name] = self.trail[name] = v
                panel.stats[name].reused += 1
        self.outcome = self.policy.decide(self.seats) if self.seats else None

    def done(self) -> bool:
        return not self.audit and self.panel.stop_rule(self.policy, self.outcome, self.seats)

    def record(self, v: Verdict, seat: str | None, told: bool = False) -> bool:
        """Hear ``v`` (a seat's own verdict, or a reserve's for ``seat``); True once decided."""
        self.trail[v.teacher] = v
        self.new.append(v)
        if self.on_verdict is not None and not told:
            self.on_verdict(self.cand.id, v)
        if seat is not None and (v.error is None or self.panel.next_reserve(self.used) is None):
            self.seats[seat] = v
        self.outcome = self.policy.decide(self.seats)
        done = self.done()
        if done and self.decided_by is None:
            self.decided_by = v.teacher
        return done

    async def fill(self, seat: str) -> None:
        """Reserves for a seat whose teacher failed for good, until one answers or none is left."""
        panel = self.panel
        while seat not in self.seats and not self.stop:
            r = panel.next_reserve(self.used)
            if r is None:  # another seat took the last one meanwhile: this failure is final
                self.seats[seat] = self.trail[seat]
                self.outcome = self.policy.decide(self.seats)
                return
            self.used.add(r.name)
            if r.name in self.spare:
                v = self.spare.pop(r.name)
                panel.stats[r.name].reused += 1
                self.trail[r.name] = v
                self.seats[seat] = v
                self.outcome = self.policy.decide(self.seats)
                return
            got = await panel._consult(r, self.cand, self.stop)
            if got is None:
                return
            self.record(got, seat)  # an error stays out of the seat while a reserve is left


class Panel:
    """A policy and its teachers, ready to judge candidates."""

    def __init__(self, teachers: Sequence[Any], policy: Policy, *, reserves: Sequence[Any] = (),
                 gold: Sequence[str] = (), auto: bool = False, audit: float = 0.0,
                 memo: VerdictMemo | None = None) -> None:
        names = [t.name for t in teachers]
        if sorted(names) != sorted(policy.teachers):
            raise ConfigError(f"policy teachers {policy.teachers} differ from panel {names}")
        esc = set(policy.escalate)
        self.teachers = sorted(teachers, key=lambda t: (t.name in esc, t.cost_rank))
        self.reserves = list(reserves)
        self.reserve_names = {r.name for r in self.reserves}
        self.policy = policy
        self.audit = audit
        self.stats = {t.name: TeacherStats() for t in [*self.teachers, *self.reserves]}
        self.memo = shared_memo() if memo is None else memo
        # an inline verifier (pure CPU, microseconds) judges faster than its memo key is made: only
        # teachers that suspend (a sandbox, a user function) are worth remembering
        self._memo_ids = {t.name: ident for t in [*self.teachers, *self.reserves]
                          if not getattr(t, "inline", False) and (ident := teacher_identity(t)) is not None}
        self.memo_hits = {name: 0 for name in self._memo_ids}
        self.jury = JuryLog([*names, *self.reserve_names], gold=set(gold), auto=auto)
        self._groups = [list(g) for _, g in groupby(self.teachers, key=lambda t: (t.name in esc, t.cost_rank))]
        self._sems = {
            t.name: asyncio.Semaphore(getattr(getattr(t, "config", None), "max_concurrency", 64))
            for t in [*self.teachers, *self.reserves]
            if not getattr(t, "inline", False)
        }

    @classmethod
    def from_config(cls, cfg: Any, services: Any = None) -> Panel:
        """Build every teacher of a :class:`~tgrs_agents.curation.panel_file.PanelConfig`.

        Paid teachers are wrapped by ``services`` (limits, retries, cost, cache); ``repeats = k``
        seats become k copies with seeds seed, seed + 1, ...; ``mode = "group"`` judges score a
        task's candidates in one call.
        """
        from ..paid.services import Services
        from ..teachers.base import BuildContext, teacher_class
        from .repeats import Repeated

        services = services or Services()
        cfg.check_guards()
        ctx = BuildContext(base_dir=Path(cfg.base_dir), source=cfg.source)
        policy = cfg.build_policy()

        def build(tc: Any) -> Any:
            if getattr(tc, "mode", "pointwise") == "group":
                from ..teachers.group_judge import GroupTeacher

                return GroupTeacher.build(teacher_class(tc.kind)(tc, ctx), services)  # type: ignore[arg-type]
            k = cfg.role(tc.name).repeats
            if k == 1:
                return wrap(tc)
            seed = tc.seed or 0
            return Repeated([wrap(tc.model_copy(update={"seed": seed + i})) for i in range(k)],
                            early_stop=not policy.uses_scores)

        def wrap(tc: Any) -> Any:
            if getattr(tc, "mode", "pointwise") == "batch":  # the provider's batch API: parks its candidates
                from ..teachers.batch_judge import BatchJudge

                return BatchJudge(teacher_class(tc.kind)(tc, ctx), services)  # type: ignore[arg-type]
            return services.wrap(teacher_class(tc.kind)(tc, ctx))

        seats = [build(t) for t in cfg.teachers if t.name not in cfg.reserve]
        by_name = {t.name: t for t in cfg.teachers}
        reserves = [build(by_name[n]) for n in cfg.reserve]
        return cls(seats, policy, reserves=reserves, gold=cfg.gold_names(), auto=cfg.weights == "auto",
                   audit=cfg.audit_share())

    async def aclose(self) -> None:
        for t in [*self.teachers, *self.reserves]:
            await t.aclose()

    async def _call(self, teacher: Any, cand: Candidate) -> Verdict:
        ident = self._memo_ids.get(teacher.name)
        key = None if ident is None else memo_key(ident, teacher, cand)
        if key is None:
            return await self._call_once(teacher, cand)
        t0 = time.perf_counter()
        v, hit = await self.memo.get_or_run(key, lambda: self._call_once(teacher, cand))
        if hit:  # the same content was judged before: its verdict, as if judged again
            v = v.model_copy(update={"latency_s": time.perf_counter() - t0})
            self.memo_hits[teacher.name] += 1
            self.stats[teacher.name].add(v)
        return v

    async def _call_once(self, teacher: Any, cand: Candidate) -> Verdict:
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
        except CallsStopped:
            raise  # not this teacher's failure: the run must stop starting calls (see judge)
        except Exception as e:  # noqa: BLE001 - a teacher bug must not crash the run
            msg = f"{type(e).__name__}: {e}"
            v = Verdict.failure(teacher.name, msg, latency_s=time.perf_counter() - t0)
        if v.latency_s == 0.0 and not v.cached:
            if teacher.inline and type(v) is Verdict:  # a verdict made by this call (the inline teachers
                v.__dict__["latency_s"] = time.perf_counter() - t0  # build theirs): timed in place, no copy
            else:
                v = v.model_copy(update={"latency_s": time.perf_counter() - t0})
        self.stats[teacher.name].add(v)
        return v

    async def _consult(self, teacher: Any, cand: Candidate, stop: list[CallsStopped]) -> Verdict | None:
        """``_call``, with a budget refusal kept in ``stop`` (so sibling calls in flight finish
        first) and the error verdict that keeps what the refused call's earlier attempts were
        billed (None when they were billed nothing: the candidate stays pending)."""
        try:
            return await self._call(teacher, cand)
        except CallsStopped as e:
            stop.append(e)
            if e.usage is None or not e.usage.requests:
                return None
            why = "stopped" if isinstance(e, Halted) else "stopped by the budget"
            v = Verdict.failure(teacher.name, f"{why}: {e}", usage=e.usage)
            self.stats[teacher.name].add(v)
            return v

    def audited(self, cand: Candidate) -> bool:
        """Whether every seat judges ``cand`` (a share ``audit`` of candidates, chosen by id)."""
        if self.audit <= 0:
            return False
        h = int.from_bytes(hashlib.sha256(cand.id.encode()).digest()[:8], "big")
        return h / 2**64 < self.audit

    def next_reserve(self, used: set[str]) -> Any | None:
        return next((r for r in self.reserves if r.name not in used), None)

    def _decider(self, policy: Policy, verdicts: Mapping[str, Verdict]) -> str | None:
        """The teacher whose verdict fixed the outcome, replaying ``verdicts`` in call order."""
        esc = set(policy.escalate)
        heard: dict[str, Verdict] = {}
        for t in sorted(self.teachers, key=lambda t: (t.name in esc, t.cost_rank, not t.inline)):
            if t.name in verdicts:
                heard[t.name] = verdicts[t.name]
                if self.stop_rule(policy, policy.decide(heard), heard):
                    return str(verdicts[t.name].teacher)
        return None

    @staticmethod
    def stop_rule(policy: Policy, outcome: bool | None, seats: Mapping[str, Verdict]) -> bool:
        """Whether the outcome is fixed and nothing more is needed: a rejection, or an acceptance
        that ranking needs no more seats for (with best_k: every seat is consulted, except the
        escalate_only ones when the base seats agreed firmly). With best_k an acceptance that
        heard every seat was decided by no one."""
        if outcome is None:
            return False
        if outcome is False or policy.best_k is None:
            return True
        pending = [t for t in policy.teachers if t not in seats]
        if not pending or any(t not in policy.escalate for t in pending):
            return False
        ok = {t: v for t, v in seats.items() if v.error is None}
        return policy.firm({t: v.passed for t, v in ok.items()}, {t: v.score for t, v in ok.items()}) is not None

    async def judge(
        self,
        cand: Candidate,
        prior: Mapping[str, Verdict] | None = None,
        on_verdict: VerdictHook | None = None,
    ) -> tuple[Decision, list[Verdict]]:
        """Judge one candidate. ``prior`` holds verdicts already paid for (from a killed run).

        Returns the decision and the verdicts that are new in this call.
        """
        case = _Case(self, cand, prior or {}, on_verdict)
        for group in self._groups:
            if case.done():
                break
            todo = [t for t in group if t.name not in case.trail]
            done = False
            for t in [t for t in todo if t.inline]:
                v = await self._call(t, cand)
                done = case.record(v, t.name)
                if v.error is not None:
                    await case.fill(t.name)
                    done = case.done()
                if done or case.stop:
                    break
            slow = [t for t in todo if not t.inline]
            if done or case.stop or not slow or case.done():
                if case.stop:
                    raise case.stop[0]
                continue

            async def consult(t: Any) -> Verdict | None:  # told as it arrives: a paid verdict is
                v = await self._consult(t, cand, case.stop)  # journaled at once, not after its group
                if v is not None and on_verdict is not None:
                    on_verdict(cand.id, v)
                return v

            if len(slow) == 1:
                heard = [await consult(slow[0])]
            else:
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(consult(t)) for t in slow]
                heard = [task.result() for task in tasks]
            for t, got in zip(slow, heard, strict=True):
                if got is not None:
                    case.record(got, t.name, told=True)
            for t, got in zip(slow, heard, strict=True):  # reserves, in seat order
                if got is not None and got.error is not None and t.name not in case.seats:
                    await case.fill(t.name)
            if case.stop:  # the calls that did start were kept (and are journaled)
                raise case.stop[0]
        return self._decide(case), case.new

    def _decide(self, case: _Case) -> Decision:
        policy, seats = case.policy, case.seats
        if case.decided_by is None and case.done():
            case.decided_by = self._decider(policy, seats)  # decided by verdicts reused from a killed run
        saved = tuple(t.name for t in self.teachers if t.name not in case.trail)
        for name in saved:
            self.stats[name].saved += 1
        final = policy.decide(seats)
        self.jury.observe(case.cand.id, [(t, None if v.error else v.passed) for t, v in case.trail.items()])
        if self.jury.refit_due() and self.policy.reliability is not None:
            self.policy = dataclasses.replace(self.policy, reliability=self.jury.refit())
        return Decision(
            candidate_id=case.cand.id,
            task_id=case.cand.task_id,
            accepted=final,
            score=policy.rank_score(seats),
            reason=policy.reason(final, seats),
            decided_by=case.decided_by,
            verdicts=tuple(case.trail.values()),
            saved=saved,
        )

    def jury_report(self, verdicts: Path | None = None) -> dict[str, Any]:
        """The ``jury`` section of the run's summary: reliability per teacher (with intervals),
        the weights in use, escalations, substitutions, and group judges' position consistency.
        ``verdicts`` (the run's verdict journal) adds the verdicts of earlier sessions."""
        if verdicts is not None:
            self.jury.follow(verdicts)
        groups = [(t.name, t.group_stats()) for t in [*self.teachers, *self.reserves]
                  if hasattr(t, "group_stats")]
        return self.jury.report(self.policy, groups)
