"""The built-in verifiable agent task family: arithmetic solved with a calculator tool.

"What is 59 - 7 + 13?" -> the agent calls ``calculator`` with ``59-7+13``, reads ``65``, and
writes ``Answer: 65``. Difficulty is the number of operations and the operand range. A train pool
and a held-out evaluation split never share a question. ``seed_demonstrations`` makes the warm-start
set: teacher demonstrations of which a fraction are corrupted (a mis-copied operand in the tool
call, or a mis-copied answer), so the warm student is weak but not hopeless.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from ..types import Task

CALCULATOR_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression with + - * and integers.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


@dataclass(frozen=True, slots=True)
class Difficulty:
    n_ops: int = 2
    lo: int = 10
    hi: int = 99
    ops: str = "+-"


def question(rng: random.Random, d: Difficulty) -> tuple[str, int]:
    terms = [str(rng.randint(d.lo, d.hi))]
    for _ in range(d.n_ops):
        terms += [rng.choice(d.ops), str(rng.randint(d.lo, d.hi))]
    expr = " ".join(terms)
    return expr, calculate(expr.replace(" ", ""))


def calculate(expression: str) -> int:
    """Evaluate digits with + - * only (never ``eval``). Raises ValueError on anything else."""
    s = expression.replace(" ", "")
    if not s or any(c not in "0123456789+-*" for c in s):
        raise ValueError(f"unsupported expression {expression!r}: use digits and + - * only")
    # tokens: numbers and operators; leading zeros ("07") are fine
    terms: list[int] = []
    ops: list[str] = []
    num = ""
    for i, c in enumerate(s):
        if c.isdigit():
            num += c
        elif c == "-" and (i == 0 or s[i - 1] in "+-*") and not num:
            num = "-"
        else:
            if num in ("", "-"):
                raise ValueError(f"malformed expression {expression!r}")
            terms.append(int(num))
            ops.append(c)
            num = ""
    if num in ("", "-"):
        raise ValueError(f"malformed expression {expression!r}")
    terms.append(int(num))
    # multiplication first
    vals = [terms[0]]
    signs: list[str] = []
    for op, t in zip(ops, terms[1:], strict=True):
        if op == "*":
            vals[-1] *= t
        else:
            signs.append(op)
            vals.append(t)
    total = vals[0]
    for op, v in zip(signs, vals[1:], strict=True):
        total = total + v if op == "+" else total - v
    return total


def calculator(expression: str) -> str:
    """The tool the agent calls."""
    return str(calculate(expression))


def make_tasks(n: int, *, seed: int, d: Difficulty = Difficulty(), prefix: str = "t",
               exclude: set[str] | None = None) -> list[Task]:
    rng = random.Random(seed)
    seen = set(exclude or ())
    out: list[Task] = []
    while len(out) < n:
        expr, value = question(rng, d)
        if expr in seen:
            continue
        seen.add(expr)
        out.append(Task(id=f"{prefix}{len(out)}", messages=[{"role": "user",
                        "content": f"What is {expr}?"}], tools=[CALCULATOR_TOOL], reference=value,
                        metadata={"expression": expr}))
    return out


def splits(n_train: int, n_eval: int, *, seed: int = 0,
           d: Difficulty = Difficulty()) -> tuple[list[Task], list[Task]]:
    """A train pool and a held-out split with no question in common."""
    held = make_tasks(n_eval, seed=seed + 10_000, d=d, prefix="eval-")
    train = make_tasks(n_train, seed=seed, d=d, prefix="train-",
                       exclude={t.metadata["expression"] for t in held})
    return train, held


def demonstration(task: Task, *, rng: random.Random | None = None,
                  corrupt: str | None = None) -> dict[str, Any]:
    """A teacher trajectory for ``task``; ``corrupt`` in (None, "operand", "answer")."""
    expr = str(task.metadata["expression"]).replace(" ", "")
    rng = rng or random.Random(0)
    if corrupt == "operand":
        digits = [i for i, c in enumerate(expr) if c.isdigit()]
        i = rng.choice(digits)
        expr = expr[:i] + str((int(expr[i]) + rng.randint(1, 9)) % 10) + expr[i + 1:]
    result = calculate(expr)
    answer = result + (rng.choice((-10, -1, 1, 10)) if corrupt == "answer" else 0)
    return {
        "id": f"demo-{task.id}",
        "task_id": task.id,
        "messages": [
            task.messages[0].model_dump(exclude_none=True),
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_0", "type": "function",
                "function": {"name": "calculator", "arguments": json.dumps({"expression": expr})}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": str(result)},
            {"role": "assistant", "content": f"Answer: {answer}"},
        ],
        "tools": [CALCULATOR_TOOL],
    }


def seed_demonstrations(tasks: list[Task], *, noise: float = 0.3, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for t in tasks:
        corrupt = rng.choice(("operand", "answer")) if rng.random() < noise else None
        out.append(demonstration(t, rng=rng, corrupt=corrupt))
    return out
