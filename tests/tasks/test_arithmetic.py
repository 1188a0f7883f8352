"""The built-in arithmetic family: canonical forms, and splits that never share a problem, not even reordered."""

from __future__ import annotations

import pytest

from tgrs_agents.tasks.arithmetic import Difficulty, calculate, canonical, make_tasks, splits, task_canonical
from tgrs_agents.types import Task


@pytest.mark.parametrize("a,b", [("12 + 5", "5 + 12"), ("59 - 7 + 13", "13 - 7 + 59"), ("3*2+1", "1 + 2 * 3"),
                                 ("-3 + 10", "10 - 3"), ("07 + 1", "1+7")])
def test_reorderings_share_a_canonical_form(a, b):
    assert canonical(a) == canonical(b)
    assert calculate(canonical(a)) == calculate(a)
    assert canonical(canonical(a)) == canonical(a)  # an expression again, and a fixed point


@pytest.mark.parametrize("a,b", [("5 - 3", "3 - 5"), ("10 + 20", "15 + 15"), ("2*3+1", "2+3*1")])
def test_different_problems_keep_different_forms(a, b):
    assert canonical(a) != canonical(b)


def test_task_canonical_reads_metadata_or_the_question():
    (t,) = make_tasks(1, seed=0)
    assert task_canonical(t) == canonical(t.metadata["expression"])
    asked = Task(id="x", messages=[{"role": "user", "content": "What is 5 + 12?"}])
    assert task_canonical(asked) == "5+12"
    assert task_canonical(Task(id="y", messages=[{"role": "user", "content": "Write a haiku."}])) is None
    assert task_canonical(Task(id="z", messages=[{"role": "user", "content": "What is love?"}])) is None


def test_one_operation_splits_exclude_reordered_twins():
    # with one operation, a + b / b + a twins are common: 2000 x 500 draws of 90 x 90 x 2 problems
    train, held = splits(2000, 500, seed=0, d=Difficulty(n_ops=1))
    forms_train = {task_canonical(t) for t in train}
    forms_held = {task_canonical(t) for t in held}
    assert len(forms_train) == 2000 and len(forms_held) == 500  # no twins inside a split either
    assert not forms_train & forms_held
    assert make_tasks(3, seed=4, exclude={"12 + 5"}) == make_tasks(3, seed=4, exclude={"5+12"})
