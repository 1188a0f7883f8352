"""Scripted fake teachers and small builders shared by the panel and policy tests."""

from __future__ import annotations

import asyncio

from tgrs_agents.curation.panel import Panel
from tgrs_agents.errors import TeacherError
from tgrs_agents.teachers.base import Teacher, TeacherConfig
from tgrs_agents.types import Candidate, Decision, Verdict

Outcome = tuple[bool, float] | None  # None: the teacher raises TeacherError


class FakeTeacher(Teacher):
    """Returns a scripted verdict per candidate id; counts its calls and writes them to a shared log."""

    inline = False

    def __init__(self, name: str, rank: int, script: dict[str, Outcome], *, log: list[str] | None = None,
                 max_concurrency: int = 64) -> None:
        super().__init__(TeacherConfig(name=name, kind="fake", cost_rank=rank, max_concurrency=max_concurrency))
        self.script = script
        self.calls: dict[str, int] = {}
        self.log = log if log is not None else []

    async def judge(self, candidate: Candidate) -> Verdict:
        self.calls[candidate.id] = self.calls.get(candidate.id, 0) + 1
        self.log.append(self.name)
        if not self.inline:
            await asyncio.sleep(0)
        out = self.script[candidate.id]
        if out is None:
            raise TeacherError("scripted failure", teacher=self.name)
        return Verdict(teacher=self.name, passed=out[0], score=out[1])


class InlineFake(FakeTeacher):
    inline = True


def make_teacher(name: str, rank: int, inline: bool, script: dict[str, Outcome],
                 log: list[str] | None = None) -> FakeTeacher:
    return (InlineFake if inline else FakeTeacher)(name, rank, script, log=log)


def cand(i: int = 0, task: str = "task") -> Candidate:
    return Candidate(id=f"c{i}", task_id=task, messages=[{"role": "user", "content": "q"}])


def v(teacher: str, passed: bool, score: float | None = None) -> Verdict:
    return Verdict(teacher=teacher, passed=passed, score=(1.0 if passed else 0.0) if score is None else score)


def judge_all(panel: Panel, cands: list[Candidate]) -> list[Decision]:
    async def go() -> list[Decision]:
        return [(await panel.judge(c))[0] for c in cands]

    return asyncio.run(go())
