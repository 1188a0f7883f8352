"""Synthetic calculator-agent trajectories: the built-in example data for demos, tests and benchmarks.

Each task is an arithmetic question; a good trajectory calls the ``calculator`` tool with the
expression, reads the result and writes ``Answer: N``. Bad ones get the arithmetic wrong, copy the
tool result wrongly, skip the answer marker, or are broken records (for the invalid-line path).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .arithmetic import CALCULATOR_TOOL, Difficulty, calculate, question

__all__ = ["CALCULATOR_TOOL", "make_problem", "synthetic_lines", "trajectory", "write_synthetic"]

def make_problem(rng: random.Random, n_ops: int = 2) -> tuple[str, int]:
    return question(rng, Difficulty(n_ops=n_ops))


def trajectory(i: int, rng: random.Random, *, task_id: str | None = None, flavour: str = "good",
               expr: str | None = None, value: int | None = None) -> dict[str, Any]:
    """One candidate record. ``flavour`` in good, wrong_tool, wrong_copy, no_marker."""
    if expr is None or value is None:
        expr, value = make_problem(rng)
    call_expr = expr
    if flavour == "wrong_tool":  # mis-copied operand: the tool answers the wrong question
        call_expr = expr.replace(expr.split()[0], str(int(expr.split()[0]) + rng.choice((-1, 1))), 1)
    tool_result = calculate(call_expr)
    final = tool_result + (rng.choice((-10, -1, 1, 10)) if flavour == "wrong_copy" else 0)
    answer = f"Answer: {final}" if flavour != "no_marker" else f"The result is {final}."
    call_id = f"call_{i}"
    return {
        "id": f"cand-{i}",
        "task_id": task_id or f"task-{i}",
        "messages": [
            {"role": "user", "content": f"What is {expr}?"},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": call_id, "type": "function",
                "function": {"name": "calculator",
                             "arguments": json.dumps({"expression": call_expr.replace(' ', '')})},
            }]},
            {"role": "tool", "tool_call_id": call_id, "content": str(tool_result)},
            {"role": "assistant", "content": answer},
        ],
        "tools": [CALCULATOR_TOOL],
        "reference": value,
    }


BAD_LINES = (
    "{not json",
    json.dumps({"id": "x", "messages": []}),
    json.dumps({"id": "y", "messages": [{"role": "robot", "content": "hi"}]}),
    json.dumps({"messages": [{"role": "user", "content": "no id"}]}),
)


def synthetic_lines(n: int, *, seed: int = 0, per_task: int = 4, bad_every: int = 0,
                    mix: tuple[float, float, float, float] = (0.55, 0.15, 0.15, 0.15)) -> Iterator[str]:
    """``n`` JSONL lines: ``per_task`` candidates per task, flavours drawn with weights ``mix``.

    Every ``bad_every``-th line (if > 0) is a broken record, and one duplicate id is planted.
    """
    rng = random.Random(seed)
    flavours = ("good", "wrong_tool", "wrong_copy", "no_marker")
    expr, value = make_problem(rng)
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            yield BAD_LINES[(i // bad_every) % len(BAD_LINES)]
            continue
        if i % per_task == 0:
            expr, value = make_problem(rng)
        flavour = rng.choices(flavours, weights=mix)[0]
        rec = trajectory(i, rng, task_id=f"task-{i // per_task}", flavour=flavour,
                         expr=expr, value=value)
        if bad_every and i == bad_every + 1:
            rec["id"] = "cand-0"  # a duplicate id
        yield json.dumps(rec)


def write_synthetic(path: str | Path, n: int, **kw: Any) -> Path:
    path = Path(path)
    with path.open("w") as f:
        for line in synthetic_lines(n, **kw):
            f.write(line + "\n")
    return path
