"""The built-in verifiable agent task family: arithmetic solved with a calculator tool.

"What is 59 - 7 + 13?" -> the agent calls ``calculator`` with ``59-7+13``, reads ``65``, and
writes ``Answer: 65``. Difficulty is the number of operations and the operand range. A train pool
and a held-out evaluation split never share a problem up to reordering (:func:`canonical`: ``12 + 5``
and ``5 + 12`` are one problem), and no split holds the same problem twice. ``seed_demonstrations``
makes the warm-start set: teacher demonstrations of which a fraction are corrupted (a mis-copied
operand in the tool call, or a mis-copied answer), so the warm student is weak but not hopeless.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Any

from ..types import Task
from .env import Tool

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


SPLITS_VERSION = 2  # bump when splits() would draw other tasks for the same arguments (2: canonical twins apart)
QUESTION = re.compile(r"^\s*What is (.+?)\?\s*$")


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


def _parse(expression: str) -> tuple[list[int], list[str]]:
    """(numbers, operators between them) of digits with + - * (a leading or doubled ``-`` is a sign)."""
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
    return terms, ops


def calculate(expression: str) -> int:
    """Evaluate digits with + - * only (never ``eval``). Raises ValueError on anything else."""
    terms, ops = _parse(expression)
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


def canonical(expression: str) -> str:
    """The problem up to reordering: ``12 + 5`` and ``5 + 12`` -> ``5+12``; ``59 - 7 + 13`` and
    ``13 - 7 + 59`` alike; ``5 - 3`` and ``3 - 5`` differ. Signed products, factors sorted, then the
    terms sorted (positive first); the result is an expression again (``canonical`` of it is itself).
    Raises ValueError on what :func:`calculate` refuses."""
    numbers, ops = _parse(expression)
    products: list[tuple[int, list[int]]] = [(1, [])]
    for i, n in enumerate(numbers):
        if i and ops[i - 1] != "*":
            products.append((-1 if ops[i - 1] == "-" else 1, []))
        sign, factors = products[-1]
        products[-1] = (sign * (-1 if n < 0 else 1), [*factors, abs(n)])
    terms = sorted((sign < 0, sorted(f)) for sign, f in products)
    out = ""
    for negative, factors in terms:
        out += ("-" if negative else "+" if out else "") + "*".join(map(str, factors))
    return out


def task_canonical(task: Task) -> str | None:
    """The canonical form of a task of this family (``metadata.expression``, or a question worded
    ``What is EXPR?``); None for a task of another kind."""
    expr = task.metadata.get("expression")
    if expr is None:
        m = QUESTION.match(task.messages[0].text) if task.messages else None
        expr = m.group(1) if m else None
    try:
        return canonical(str(expr)) if expr is not None else None
    except ValueError:
        return None


def calculator(expression: str) -> str:
    """The tool the agent calls."""
    return str(calculate(expression))


def make_tools() -> list[Tool]:
    """This family's tool factory (see :mod:`tgrs_agents.tasks.env`): the calculator, stateless."""
    return [Tool.from_schema(CALCULATOR_TOOL, calculator)]


def make_tasks(n: int, *, seed: int, d: Difficulty = Difficulty(), prefix: str = "t",
               exclude: set[str] | None = None) -> list[Task]:
    """``n`` distinct problems (up to reordering), none of them a reordering of one in ``exclude``."""
    rng = random.Random(seed)
    seen = {canonical(e) for e in exclude or ()}
    out: list[Task] = []
    while len(out) < n:
        expr, value = question(rng, d)
        key = canonical(expr)
        if key in seen:
            continue
        seen.add(key)
        out.append(Task(id=f"{prefix}{len(out)}", messages=[{"role": "user",
                        "content": f"What is {expr}?"}], tools=[CALCULATOR_TOOL], reference=value,
                        metadata={"expression": expr}))
    return out


def splits(n_train: int, n_eval: int, *, seed: int = 0,
           d: Difficulty = Difficulty()) -> tuple[list[Task], list[Task]]:
    """A train pool and a held-out split with no problem in common, not even reordered."""
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
