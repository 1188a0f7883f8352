"""The error tree (``tgrs_agents.errors``): a closed set of teacher-error kinds, one budget-stop signal."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

import pytest

from tgrs_agents.errors import ERROR_KINDS, BudgetExhausted, ErrorKind, TeacherError, TgrsError
from tgrs_agents.types import Usage

PKG = Path(__file__).resolve().parents[1] / "tgrs_agents"


def test_teacher_error_kinds_are_a_closed_set_checked_at_construction():
    assert ERROR_KINDS == set(get_args(ErrorKind)) >= {
        "rate_limit", "server", "overloaded", "timeout", "conflict", "connection", "malformed", "auth",
        "bad_request", "error"}
    assert TeacherError("x").kind == "error"
    with pytest.raises(ValueError, match="rate_limited"):
        TeacherError("x", kind="rate_limited")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TeacherError("x", kind="budget")  # type: ignore[arg-type]  # a budget stop is BudgetExhausted


def test_every_kind_the_package_writes_is_in_the_set():
    written = set()
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "kind" and isinstance(node.value, ast.Constant):
                written.add((path.name, node.value.value))
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute) and node.left.attr == "kind":
                written.update((path.name, c.value) for c in node.comparators if isinstance(c, ast.Constant))
    teacher_kinds = {k for f, k in written if f in ("sdk_errors.py", "retry.py", "wrappers.py", "llm_judge.py",
                                                    "openai_backend.py", "refine.py", "errors.py")}
    assert teacher_kinds <= ERROR_KINDS, teacher_kinds - ERROR_KINDS


def test_the_budget_stop_carries_what_was_paid():
    e = BudgetExhausted("cap", teacher="gpt", usage=Usage(requests=2, cost_usd=0.5))
    assert isinstance(e, TgrsError) and not isinstance(e, TeacherError)
    assert e.teacher == "gpt" and e.usage.requests == 2 and str(e) == "cap"
    assert BudgetExhausted("cap").usage is None
