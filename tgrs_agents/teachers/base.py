"""The teacher protocol, the per-teacher config base, and the registry of kinds.

A teacher implements one async method, ``judge(candidate) -> Verdict``. Adapters register by
``kind``; built-in kinds are imported lazily, so ``import tgrs_agents`` pulls in no vendor SDK,
torch or transformers. A user plugs in a kind of their own with :func:`register_teacher` or an
entry point in the group ``tgrs_agents.teachers``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError
from ..types import Candidate, Verdict


class TeacherConfig(BaseModel):
    """Fields every teacher has. Kinds subclass this with their own fields (unknown ones are refused).

    Fields named in ``OPERATIONAL`` change how a teacher is run, not what it decides; they stay out
    of the panel's identity (and of cache keys), so tuning them does not invalidate a run.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"cost_rank", "max_concurrency"})

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    kind: str
    cost_rank: int = 0
    max_concurrency: int = Field(default=64, ge=1)

    def identity(self) -> dict[str, Any]:
        """What decides this teacher's verdicts: every field except the operational ones."""
        return self.model_dump(mode="json", exclude=set(self.OPERATIONAL))


@dataclass(frozen=True, slots=True)
class BuildContext:
    """Where a teacher's config came from: relative paths resolve against ``base_dir``."""

    base_dir: Path
    source: str = "<panel>"


class Teacher(ABC):
    """Base of every teacher. Subclasses set ``Config`` and implement :meth:`judge`.

    ``inline = True`` promises that ``judge`` never suspends (pure CPU, microseconds): the panel then
    calls it directly instead of scheduling a task, and in cost order rather than concurrently.
    """

    Config: ClassVar[type[TeacherConfig]] = TeacherConfig
    inline: ClassVar[bool] = False

    def __init__(self, config: TeacherConfig, ctx: BuildContext | None = None) -> None:
        self.config = config
        self.ctx = ctx or BuildContext(base_dir=Path.cwd())

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def cost_rank(self) -> int:
        return self.config.cost_rank

    @abstractmethod
    async def judge(self, candidate: Candidate) -> Verdict:
        """Judge one candidate. Raise :class:`~tgrs_agents.errors.TeacherError` on failure."""

    async def aclose(self) -> None:
        """Release clients, processes or models. Called once when the run ends."""

    def verdict(self, passed: bool, score: float | None = None, rationale: str = "") -> Verdict:
        return Verdict(
            teacher=self.name,
            passed=passed,
            score=(1.0 if passed else 0.0) if score is None else score,
            rationale=rationale,
        )


T = TypeVar("T", bound=type[Teacher])

# Built-in kinds, imported on first use: kind -> "module:class".
_BUILTIN: dict[str, str] = {
    "final_answer": "tgrs_agents.teachers.final_answer:FinalAnswerTeacher",
    "regex": "tgrs_agents.teachers.regex:RegexTeacher",
    "json_schema": "tgrs_agents.teachers.json_schema:JsonSchemaTeacher",
    "python": "tgrs_agents.teachers.python_fn:PythonTeacher",
    "code_tests": "tgrs_agents.teachers.code_tests:CodeTestsTeacher",
    "metadata": "tgrs_agents.teachers.metadata:MetadataTeacher",
    "openai": "tgrs_agents.teachers.openai_judge:OpenAIJudge",
    "anthropic": "tgrs_agents.teachers.anthropic_judge:AnthropicJudge",
    "reward_model": "tgrs_agents.teachers.reward_model:RewardModelTeacher",
    "student_compat": "tgrs_agents.teachers.student_compat:StudentCompatTeacher",
    "local_judge": "tgrs_agents.teachers.local_judge:LocalJudgeTeacher",
}
_REGISTRY: dict[str, type[Teacher]] = {}


def register_teacher(kind: str) -> Callable[[T], T]:
    """Class decorator: make ``kind = "<kind>"`` in a panel file build this teacher class."""

    def deco(cls: T) -> T:
        _REGISTRY[kind] = cls
        return cls

    return deco


def teacher_kinds() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTRY) | set(_entry_points()))


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group="tgrs_agents.teachers")}


def teacher_class(kind: str) -> type[Teacher]:
    """The class registered for ``kind``; imports a built-in or entry-point kind on first use."""
    if kind in _REGISTRY:
        return _REGISTRY[kind]
    if kind in _BUILTIN:
        mod, _, attr = _BUILTIN[kind].partition(":")
        cls = getattr(importlib.import_module(mod), attr)
    else:
        eps = _entry_points()
        if kind not in eps:
            raise ConfigError(
                f"unknown teacher kind {kind!r}; expected one of {', '.join(teacher_kinds())}",
                field="kind",
            )
        cls = eps[kind].load()
    _REGISTRY[kind] = cls
    return cls
