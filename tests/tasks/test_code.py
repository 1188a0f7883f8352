"""The built-in code family: its tasks pass their own tests in the sandbox, its splits share no
problem (not even reworded), its warm-start set is partly wrong, and its answers fit the tiny student."""

from __future__ import annotations

import asyncio
import json

import pytest

from tgrs_agents.assets import asset_path
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.loop.contamination import overlaps
from tgrs_agents.loop.evaluate import judge_samples
from tgrs_agents.tasks import code
from tgrs_agents.tasks import code_data as cd
from tgrs_agents.tasks.families import FAMILIES, family, task_canonical
from tgrs_agents.types import Candidate, Task

PANEL = load_panel(asset_path("teachers/panel-code.toml"))


def answered(task: Task, text: str, i: int = 0) -> dict:
    return {"id": f"{task.id}-{i}", "task_id": task.id, "tests": task.tests,
            "messages": [task.messages[0].model_dump(), {"role": "assistant", "content": text}]}


def test_reference_solutions_pass_the_sandbox_and_wrong_ones_fail() -> None:
    _, held = code.splits(40, 24, seed=5, d=code.Difficulty(n_ops=3))
    right = [answered(t, cd.answer(code.reference_solution(t))) for t in held]
    wrong = [answered(t, cd.answer(code.reference_solution(t)).replace("return ", "return 1+"), 1) for t in held]
    judged = asyncio.run(judge_samples([*right, *wrong], PANEL))
    assert [ok for _, ok in judged] == [True] * len(right) + [False] * len(wrong)


def test_demonstrations_are_answers_the_panel_decides_on() -> None:
    train, _ = code.splits(60, 10, seed=2)
    demos = code.seed_demonstrations(train, noise=0.5, seed=0)
    judged = asyncio.run(judge_samples(demos, PANEL))
    passed = sum(ok for _, ok in judged)
    assert 15 < passed < 55  # noise 0.5: clean ones pass, most corrupted ones fail
    clean = code.seed_demonstrations(train[:10], noise=0.0)
    assert all(ok for _, ok in asyncio.run(judge_samples(clean, PANEL)))


def test_splits_share_no_problem_not_even_reworded() -> None:
    for n_ops in (2, 3):
        train, held = code.splits(192, 128, seed=0, d=code.Difficulty(n_ops=n_ops))
        assert len(train) == 192 and len(held) == 128
        keys = [task_canonical(t) for t in [*train, *held]]
        assert None not in keys and len(set(keys)) == len(keys)  # no twins across or within splits
        assert not overlaps(train, held)


def test_canonical_form_is_what_the_function_does() -> None:
    a = code.task_of(("x", [("plus", 3), ("minus", 2)]), "a")
    b = code.task_of(("x", [("minus", 2), ("plus", 3)]), "b")
    c = code.task_of(("x", [("plus", 1)]), "c")
    d = code.task_of(("x", [("times", 2), ("plus", 3)]), "d")
    assert task_canonical(a) == task_canonical(b) == task_canonical(c)
    assert task_canonical(d) != task_canonical(a)
    found = overlaps([a], [b, d])  # the contamination check finds the reworded twin
    assert [(o.level, o.held.id) for o in found] == [("canonical", "b")]
    other = Task(id="o", messages=[{"role": "user", "content": "hi"}], metadata={"family": "code", "base": "import os"})
    assert task_canonical(other) is None  # a spec outside the tables is no code task (never evaluated)


def test_tests_are_plain_asserts_with_types() -> None:
    t = code.task_of(("max", [("times", 3), ("plus", 1)]), "t")
    assert t.messages[0].text == "Write f(xs): max of xs times 3 plus 1."
    assert code.reference_solution(t) == "def f(xs):return max(xs)*3+1\n"
    assert "assert f([3, 1, 2]) == 10 and type(f([3, 1, 2])) is int" in t.tests
    ns: dict = {}
    exec(code.reference_solution(t) + t.tests, ns)  # noqa: S102 (our own reference)


def test_answers_fit_the_tiny_student() -> None:
    """The tiny student has 128 positions: prompt, answer and role tokens must fit, with room."""
    train, held = code.splits(192, 128, seed=0, d=code.Difficulty(n_ops=3))
    demos = code.seed_demonstrations([*train, *held], noise=0.3)
    longest = max(len(d["messages"][0]["content"]) + len(d["messages"][1]["content"]) for d in demos)
    assert longest + 6 <= 128
    assert max(len(d["messages"][1]["content"]) for d in demos) + 1 <= FAMILIES["code"].max_new_tokens


def test_family_registry() -> None:
    fam = family("code")
    assert fam is not None and fam.splits_version == code.SPLITS_VERSION
    assert family("tasks.jsonl") is None
    train, held = fam.splits(10, 5, seed=1, n_ops=2)
    assert (len(train), len(held)) == (10, 5)
    assert code.make_tools() == []
    with pytest.raises(ValueError, match="too few problems"):
        code.make_tasks(500, seed=0, d=code.Difficulty(n_ops=1))


def test_compiles_check() -> None:
    t = code.task_of(("x", [("plus", 1)]), "t")
    ok = code.compiles(Candidate.model_validate(answered(t, "```\ndef f(x):return x+1\n```")))
    bad = code.compiles(Candidate.model_validate(answered(t, "```\ndef f(x) return x+1\n```")))
    none = code.compiles(Candidate.model_validate(answered(t, "x+1")))
    assert ok == (True, "compiles") and not bad[0] and "compile" in bad[1] and not none[0]
    assert json.loads(json.dumps(code.demonstration(t)))["tests"] == t.tests
