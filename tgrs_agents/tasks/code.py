"""The built-in code family: write a small Python function, judged by its unit tests in the sandbox.

"Write f(xs): max of xs times 3 plus 1." -> the agent answers with a fenced block
``def f(xs):return max(xs)*3+1`` and the ``code_tests`` teacher runs the task's asserts
against it (:mod:`tgrs_agents.teachers.code_tests`). Words and code are in :mod:`.code_data`.

Difficulty is how many arithmetic steps follow the base (1 to ``n_ops``, drawn evenly: 1, 2 or 3)
and which bases are drawn. A train pool and a held-out split never share a problem, not even one worded otherwise
(:func:`task_canonical`: the function's outputs on fixed probe inputs, so ``x plus 3 minus 1`` and
``x minus 1 plus 3`` are one problem), and no split holds the same problem twice.
``seed_demonstrations`` makes the warm-start set, a fraction of it corrupted (a wrong operator, a
wrong constant or a wrong base) so the warm student is weak but not hopeless, as in the arithmetic
family. No tools: the answer is the code.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from typing import Any

from ..teachers.code_tests import last_code_block
from ..types import Candidate, Task
from . import code_data as cd
from .env import Tool

SPLITS_VERSION = 1  # bump when splits() would draw other tasks for the same arguments


@dataclass(frozen=True, slots=True)
class Difficulty:
    n_ops: int = 2
    bases: tuple[str, ...] = tuple(cd.BASES)


def make_tools() -> list[Tool]:
    """This family's tool factory: none (the answer is a code block, the sandbox runs it)."""
    return []


def draw(rng: random.Random, d: Difficulty) -> tuple[str, list[tuple[str, int]]]:
    base = rng.choice(d.bases)
    steps = [(rng.choice(tuple(cd.OPS)), rng.choice(cd.CONSTANTS)) for _ in range(rng.randint(1, d.n_ops))]
    return base, steps


def task_of(spec: tuple[str, list[tuple[str, int]]], task_id: str) -> Task:
    base, steps = spec
    return Task(id=task_id, messages=[{"role": "user", "content": cd.prompt(base, steps)}],
                tests=cd.tests(base, steps),
                metadata={"family": "code", "base": base, "steps": [list(s) for s in steps]})


def spec_of(task: Task) -> tuple[str, list[tuple[str, int]]] | None:
    """The (base, steps) a task of this family was made from; None for any other task."""
    md = task.metadata
    if md.get("family") != "code":
        return None
    try:
        base, steps = str(md["base"]), [(str(w), c) for w, c in md["steps"]]
        cd.check_spec(base, steps)
    except (KeyError, TypeError, ValueError):
        return None
    return base, steps


def task_canonical(task: Task) -> str | None:
    """The problem up to wording (see the module docstring); None for a task of another kind."""
    spec = spec_of(task)
    return None if spec is None else cd.canonical(*spec)


def reference_solution(task: Task) -> str:
    spec = spec_of(task)
    if spec is None:
        raise ValueError(f"task {task.id!r} is not of the code family")
    return cd.solution(*spec)


def make_tasks(n: int, *, seed: int, d: Difficulty = Difficulty(), prefix: str = "t",
               exclude: set[str] | None = None) -> list[Task]:
    """``n`` distinct problems (by :func:`task_canonical`), none of them one in ``exclude`` (canonical keys)."""
    rng = random.Random(seed)
    seen = set(exclude or ())
    out: list[Task] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct code tasks at {d}: too few problems")
        spec = draw(rng, d)
        key = cd.canonical(*spec)
        if key in seen:
            continue
        seen.add(key)
        out.append(task_of(spec, f"{prefix}{len(out)}"))
    return out


def splits(n_train: int, n_eval: int, *, seed: int = 0,
           d: Difficulty = Difficulty()) -> tuple[list[Task], list[Task]]:
    """A train pool and a held-out split with no problem in common, not even reworded."""
    held = make_tasks(n_eval, seed=seed + 10_000, d=d, prefix="eval-")
    train = make_tasks(n_train, seed=seed, d=d, prefix="train-",
                       exclude={k for t in held if (k := task_canonical(t))})
    return train, held


def demonstration(task: Task, *, rng: random.Random | None = None,
                  corrupt: str | None = None) -> dict[str, Any]:
    """A teacher answer for ``task``; ``corrupt`` in (None, "op", "const", "base")."""
    spec = spec_of(task)
    if spec is None:
        raise ValueError(f"task {task.id!r} is not of the code family")
    base, steps = spec[0], list(spec[1])
    rng = rng or random.Random(0)
    i = rng.randrange(len(steps)) if steps else 0
    if corrupt == "op" and steps:
        steps[i] = (rng.choice([w for w in cd.OPS if w != steps[i][0]]), steps[i][1])
    elif corrupt == "const" and steps:
        steps[i] = (steps[i][0], rng.choice([c for c in cd.CONSTANTS if c != steps[i][1]]))
    elif corrupt == "base":
        same = [b for b in cd.BASES if b != base and cd.param(b) == cd.param(base)]
        base = rng.choice(same) if same else base
    return {
        "id": f"demo-{task.id}",
        "task_id": task.id,
        "messages": [task.messages[0].model_dump(exclude_none=True),
                     {"role": "assistant", "content": cd.answer(cd.solution(base, steps))}],
        "tools": None,
        "tests": task.tests,
    }


def compiles(candidate: Candidate) -> tuple[bool, str]:
    """A ``python`` teacher that costs microseconds: the final answer holds a code block that
    compiles. Put before ``code_tests`` (a sandbox process each), it spares the sandbox every
    answer that could not pass anyway."""
    code = last_code_block(candidate.final_text)
    if code is None:
        return False, "no fenced code block in the final answer"
    try:
        with warnings.catch_warnings():  # "'int' object is not callable": the sandbox will say so
            warnings.simplefilter("ignore")
            compile(code, "solution.py", "exec")
    except (SyntaxError, ValueError) as e:
        return False, f"does not compile: {e}"
    return True, "compiles"


def seed_demonstrations(tasks: list[Task], *, noise: float = 0.3, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for t in tasks:
        corrupt = rng.choice(("op", "const", "base")) if rng.random() < noise else None
        out.append(demonstration(t, rng=rng, corrupt=corrupt))
    return out
