"""The built-in task families by name (``[tasks] source = "arithmetic"``, ``"code"`` or ``"instructions"``).

Each brings what the loop needs from it: its train/held-out splits, the warm-start demonstrations
of the tiny student, its tool factory, the panel that judges and evaluates it by default, and the
version of its splits (part of a run's fingerprint). :func:`task_canonical` is the canonical form
of a task of any family (the contamination check's strictest level).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..types import Task


@dataclass(frozen=True)
class Family:
    name: str
    module: str  # tgrs_agents.tasks.<module>: splits, seed_demonstrations, make_tools, SPLITS_VERSION
    tools: str  # the tool factory, as a [tasks] tools spec
    panel: str  # shipped panel that judges it (and evaluates it, unless [eval] panel says otherwise)
    eval_panel: str | None  # None: the final_answer check
    max_new_tokens: int | None = None  # a longer answer than the loop's default turn cap

    def _mod(self) -> Any:
        import importlib

        return importlib.import_module(f"tgrs_agents.tasks.{self.module}")

    @property
    def splits_version(self) -> int:
        return int(self._mod().SPLITS_VERSION)

    def splits(self, n_train: int, n_eval: int, *, seed: int, n_ops: int) -> tuple[list[Task], list[Task]]:
        mod = self._mod()
        return mod.splits(n_train, n_eval, seed=seed, d=mod.Difficulty(n_ops=n_ops))  # type: ignore[no-any-return]

    def seed_demonstrations(self, tasks: list[Task], *, noise: float, seed: int) -> list[dict[str, Any]]:
        return self._mod().seed_demonstrations(tasks, noise=noise, seed=seed)  # type: ignore[no-any-return]


FAMILIES: dict[str, Family] = {
    "arithmetic": Family("arithmetic", "arithmetic", "tgrs_agents.tasks.arithmetic:make_tools",
                         "teachers/panel-verifiers.toml", None),
    "code": Family("code", "code", "tgrs_agents.tasks.code:make_tools", "teachers/panel-code.toml",
                   "teachers/panel-code.toml", max_new_tokens=64),
    "instructions": Family("instructions", "instructions", "tgrs_agents.tasks.instructions:make_tools",
                           "teachers/panel-instructions.toml", "teachers/panel-instructions.toml",
                           max_new_tokens=64),
}


def family(source: str) -> Family | None:
    """The built-in family named ``source``; None for a task file."""
    return FAMILIES.get(source)


def task_canonical(task: Task) -> str | None:
    """The canonical form of a built-in family's task (instructions, code, then arithmetic); None otherwise."""
    from .arithmetic import task_canonical as arithmetic
    from .code import task_canonical as code
    from .instructions import task_canonical as instructions

    key = instructions(task)
    key = key if key is not None else code(task)
    return key if key is not None else arithmetic(task)

