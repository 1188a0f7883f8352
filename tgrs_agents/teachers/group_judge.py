"""``mode = "group"``: one call sees every candidate of a task and scores each (a RULER-like rubric).

Why: judging N attempts at one task side by side is cheaper (the task, reference and rubric are
sent once, not N times) and steadier (a score relative to the other attempts is less arbitrary
than an absolute one: OpenPipe's RULER). The scores rank candidates for ``best_k`` and for
preference pairs (:func:`score_group`).

How the panel uses it: each candidate's ``judge`` joins its task's open group; the first to arrive
leads. A group closes when ``max_group`` candidates joined or when none arrived for
``group_wait_ms``; the leader then makes the call (through the paid layer: limiter, retries,
budget) and hands every member its verdict. Only candidates that reach this judge in the cascade
join, so the verifiers' rejects never take a seat in the comparison. A task's candidates that
arrive far apart are scored in separate groups (their scores are then relative to their own group).

Position bias: ``debias = "swap"`` also judges the group in reverse order (a second call); each
candidate's score is the mean of its two, it passes only if it passed in both, and
``group_stats()`` reports the *position consistency*: the share of candidates judged alike (pass or
fail) in both orders, and of groups whose best candidate is the same in both.

Usage: a call's tokens and cost are split evenly over its candidates (the first carries the
request), so per-candidate cost adds up to the bill and compares directly with pointwise judging.
The ledger keeps each candidate's verdict under the group's content and order.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from ..errors import CallsStopped, TeacherError
from ..paid.call import Paid
from ..paid.ledger import content_hash, teacher_key
from ..types import Candidate, Usage, Verdict
from .llm_judge import ApiJudge, JudgeOutput, render_transcript

GROUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"scores": {"type": "array", "items": {
        "type": "object",
        "properties": {"id": {"type": "string"}, "score": {"type": "number", "minimum": 0, "maximum": 10},
                       "passed": {"type": "boolean"}, "rationale": {"type": "string"}},
        "required": ["id", "score", "passed", "rationale"], "additionalProperties": False}}},
    "required": ["scores"],
    "additionalProperties": False,
}
_VARS = re.compile(r"\{(task|reference|rubric|candidates|n)\}")


class _Entry(JudgeOutput):
    id: str


class GroupOutput(BaseModel):
    scores: list[_Entry] = Field(min_length=1)


def _transcript(c: Candidate) -> str:
    """A candidate's trajectory without its task message (the group prompt states the task once)."""
    from ..chat import JUDGE, render

    msgs = list(c.messages)
    first_user = next((i for i, m in enumerate(msgs) if m.role == "user"), None)
    if first_user is None:
        return render_transcript(c)
    return render(msgs[:first_user] + msgs[first_user + 1:], JUDGE)


def render_group(template: str, cands: Sequence[Candidate], rubric: str) -> str:
    """The group prompt: the task and reference once, each candidate as ``<candidate id="i">``."""
    ref = cands[0].reference
    blocks = [f'<candidate id="{i}">\n<trajectory>\n{_transcript(c)}\n</trajectory>\n'
              f"<final>\n{c.final_text}\n</final>\n</candidate>" for i, c in enumerate(cands, start=1)]
    values = {"task": cands[0].task_text, "rubric": rubric or "(none)", "n": str(len(cands)),
              "reference": "(none)" if ref is None else (ref if isinstance(ref, str) else json.dumps(ref)),
              "candidates": "\n\n".join(blocks)}
    return _VARS.sub(lambda m: values[m.group(1)], template)


def parse_group(data: Any, n: int) -> list[JudgeOutput]:
    """One output per candidate, in order; ValueError unless every id 1..n appears exactly once."""
    if isinstance(data, str):
        data = json.loads(data)
    out = GroupOutput.model_validate(data)
    by_id: dict[str, JudgeOutput] = {}
    for e in out.scores:
        key = e.id.strip().strip('"')
        if key in by_id:
            raise ValueError(f"candidate {key} scored twice")
        by_id[key] = e
    missing = [str(i) for i in range(1, n + 1) if str(i) not in by_id]
    if missing or len(by_id) != n:
        raise ValueError(f"expected scores for candidates 1..{n}; missing {missing}, got {sorted(by_id)}")
    return [by_id[str(i)] for i in range(1, n + 1)]


class GroupAdapter:
    """A group call as a paid adapter (request: a tuple of candidates; value: their verdicts)."""

    def __init__(self, judge: ApiJudge) -> None:
        self.judge = judge

    name = property(lambda self: self.judge.name)
    endpoint_key = property(lambda self: self.judge.endpoint_key)
    limits = property(lambda self: self.judge.limits)
    price = property(lambda self: self.judge.price)
    max_attempts = property(lambda self: self.judge.max_attempts)
    base_url = property(lambda self: self.judge.base_url)
    config = property(lambda self: self.judge.config)

    def max_tokens(self, n: int) -> int:
        return min(self.judge.config.max_tokens * n, 8192)

    def estimate(self, group: tuple[Candidate, ...]) -> tuple[int, int]:
        return len(render_group(self.judge.template, group, self.judge.config.rubric)) // 4 + 16, \
            self.max_tokens(len(group))

    def cache_identity(self) -> None:
        return None  # the group teacher keys the ledger itself, per group and order

    async def call(self, group: tuple[Candidate, ...]) -> Paid[list[Verdict]]:
        j = self.judge
        prompt = render_group(j.template, group, j.config.rubric)
        data, usage, headers = await j.ask(prompt, GROUP_SCHEMA, "scores", max_tokens=self.max_tokens(len(group)))
        try:
            outs = parse_group(data, len(group))
        except (ValueError, ValidationError, TypeError) as e:
            raise j.malformed(f"{e}; {j.WHAT}={json.dumps(data, default=str)[:120]}", usage, headers) from None
        return Paid([Verdict(teacher=j.name, passed=o.passed, score=o.score / 10, rationale=o.rationale[:2000])
                     for o in outs], usage, headers)

    async def aclose(self) -> None:
        await self.judge.aclose()


@dataclass
class GroupStats:
    groups: int = 0
    calls: int = 0
    candidates: int = 0
    compared: int = 0  # candidates judged in both orders (debias = "swap")
    consistent: int = 0  # ... with the same passed flag in both
    top_compared: int = 0  # groups of 2+ judged in both orders
    top_consistent: int = 0  # ... whose best candidate was the same in both

    def to_json(self) -> dict[str, Any]:
        return {"groups": self.groups, "calls": self.calls, "candidates": self.candidates,
                "mean_group": round(self.candidates / self.groups, 3) if self.groups else None,
                "calls_per_candidate": round(self.calls / self.candidates, 4) if self.candidates else None,
                "position_consistency": round(self.consistent / self.compared, 4) if self.compared else None,
                "top_position_consistency": (round(self.top_consistent / self.top_compared, 4)
                                             if self.top_compared else None)}


class _Open:
    def __init__(self) -> None:
        self.members: list[tuple[Candidate, asyncio.Future[Verdict]]] = []
        self.arrived = asyncio.Event()
        self.closed = False


def _share(usage: Usage, n: int, i: int) -> Usage:
    """Candidate i's share of one call's usage (the first carries the request and the remainders)."""
    first = i == 0
    return Usage(requests=usage.requests if first else 0,
                 input_tokens=usage.input_tokens // n + (usage.input_tokens % n if first else 0),
                 output_tokens=usage.output_tokens // n + (usage.output_tokens % n if first else 0),
                 cost_usd=usage.cost_usd / n)


class GroupTeacher:
    """A group judge as the panel sees it: ``judge(candidate)`` returns its share of a group call."""

    paid = True
    inline = False

    def __init__(self, adapter: GroupAdapter, stack: Any, ledger: Any = None) -> None:
        self.adapter = adapter
        self.stack = stack  # the adapter inside the paid layer (Services.stack)
        self.ledger = ledger
        self.stats = GroupStats()
        ident = adapter.judge.cache_identity()
        self._tkey = teacher_key(ident.identity, ident.prompt_hash)
        self._open: dict[str, _Open] = {}

    @classmethod
    def build(cls, judge: ApiJudge, services: Any) -> GroupTeacher:
        adapter = GroupAdapter(judge)
        return cls(adapter, services.stack(adapter), services.ledger)

    name = property(lambda self: self.adapter.name)
    cost_rank = property(lambda self: self.adapter.judge.cost_rank)
    config = property(lambda self: self.adapter.judge.config)
    price = property(lambda self: self.adapter.price)

    def estimate(self, candidate: Candidate) -> tuple[int, int]:
        return self.adapter.judge.estimate(candidate)  # a dry run's bound: as if judged alone

    def lookup(self, candidate: Candidate) -> Verdict | None:
        return None

    def group_stats(self) -> dict[str, Any]:
        return self.stats.to_json()

    # --- one group, one or two calls --------------------------------------------------------
    def _key(self, group: Sequence[Candidate], i: int) -> str:
        gh = hashlib.sha256("".join(content_hash(c) for c in group).encode()).hexdigest()
        return f"{self._tkey[:32]}:group:{gh[:32]}:{i}"

    async def _ordered(self, group: tuple[Candidate, ...]) -> tuple[list[Verdict], bool]:
        """Verdicts in ``group`` order for this order of presentation (ledger first)."""
        if self.ledger is not None:
            hits = [self.ledger.get(self._key(group, i)) for i in range(len(group))]
            if all(h is not None for h in hits):
                return [h.model_copy(update={"usage": Usage(), "cached": True}) for h in hits if h], True
        paid = await self.stack.call(group)
        self.stats.calls += 1
        out = [v.model_copy(update={"usage": _share(paid.usage, len(group), i)}) for i, v in enumerate(paid.value)]
        if self.ledger is not None:
            for i, v in enumerate(out):
                self.ledger.put(self._key(group, i), v)
        return out, False

    async def score(self, cands: Sequence[Candidate]) -> list[Verdict]:
        """Every candidate's verdict from one group call (two with ``debias = "swap"``)."""
        group = tuple(cands)
        self.stats.groups += 1
        self.stats.candidates += len(group)
        if self.config.debias != "swap" or len(group) < 2:
            return (await self._ordered(group))[0]
        async with asyncio.TaskGroup() as tg:
            fwd_t = tg.create_task(self._ordered(group))
            rev_t = tg.create_task(self._ordered(group[::-1]))
        fwd, rev = fwd_t.result()[0], rev_t.result()[0][::-1]
        self.stats.compared += len(group)
        self.stats.consistent += sum(a.passed == b.passed for a, b in zip(fwd, rev, strict=True))
        self.stats.top_compared += 1
        self.stats.top_consistent += max(range(len(group)), key=lambda i: fwd[i].score) == max(
            range(len(group)), key=lambda i: rev[i].score)
        return [a.model_copy(update={
            "passed": a.passed and b.passed, "score": (a.score + b.score) / 2, "usage": a.usage + b.usage,
            "cached": a.cached and b.cached, "rationale": f"{a.rationale} | reversed order: {b.rationale}"[:2000]})
            for a, b in zip(fwd, rev, strict=True)]

    # --- the panel's view: candidates join their task's group ------------------------------
    async def judge(self, candidate: Candidate) -> Verdict:
        g = self._open.get(candidate.task_id)
        leader = g is None
        if g is None:
            g = self._open[candidate.task_id] = _Open()
        fut: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        g.members.append((candidate, fut))
        g.arrived.set()
        if len(g.members) >= self.config.max_group:
            self._close(candidate.task_id, g)
        if not leader:
            return await fut
        try:
            while not g.closed:
                g.arrived.clear()
                try:
                    await asyncio.wait_for(g.arrived.wait(), self.config.group_wait_ms / 1000)
                except TimeoutError:
                    break
            self._close(candidate.task_id, g)
            verdicts = await self.score([c for c, _ in g.members])
        except BaseException as e:
            for _, f in g.members[1:]:
                if not f.done():  # followers paid nothing: the leader's error carries the usage
                    f.set_exception(self._again(e))
            raise
        for (_, f), v in zip(g.members[1:], verdicts[1:], strict=True):
            if not f.done():
                f.set_result(v)
        return verdicts[0]

    def _again(self, e: BaseException) -> Exception:
        """The leader's failure, as a follower sees it (without the usage the leader carries)."""
        if isinstance(e, CallsStopped):
            return type(e)(str(e), teacher=self.name)  # the candidate stays pending
        if isinstance(e, TeacherError):
            return TeacherError(str(e), teacher=self.name, kind=e.kind)
        return TeacherError(f"the group call failed: {e!r}", teacher=self.name)

    def _close(self, task_id: str, g: _Open) -> None:
        g.closed = True
        g.arrived.set()
        if self._open.get(task_id) is g:
            del self._open[task_id]

    async def aclose(self) -> None:
        await self.adapter.aclose()


async def score_group(teacher: GroupTeacher, candidates: Sequence[Candidate]) -> dict[str, float]:
    """Candidate id -> score in [0, 1] from one group call (the preference-pair export's hook)."""
    verdicts = await teacher.score(candidates)
    return {c.id: v.score for c, v in zip(candidates, verdicts, strict=True)}


def group_teacher(judge: ApiJudge, services: Any) -> GroupTeacher:
    """A group teacher for ``judge`` inside ``services``' paid layer (limits, retries, budget, ledger)."""
    return GroupTeacher.build(judge, services)


