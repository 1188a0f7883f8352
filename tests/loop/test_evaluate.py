"""Held-out evaluation: the pass@k estimator, the plain answer check, and the stage's record."""

from __future__ import annotations

import pytest

from tgrs_agents.loop.evaluate import evaluate, final_answer_correct, pass_at_k
from tgrs_agents.loop.stages import Evaluated
from tgrs_agents.types import Candidate, Task


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(8, 0, 1) == 0.0
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - 15 / 70)


def sample(task: str, i: int, answer: str, reference: object = 5) -> dict:
    return {"id": f"{task}-{i}", "task_id": task, "reference": reference,
            "messages": [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": answer}]}


def task(tid: str) -> Task:
    return Task(id=tid, messages=[{"role": "user", "content": "2 + 3?"}], reference=5)


def test_final_answer_correct_is_a_plain_function():
    assert final_answer_correct(Candidate.model_validate(sample("t", 0, "so... Answer: 5")))
    assert final_answer_correct(Candidate.model_validate(sample("t", 0, "Answer: 5.0000000001")))
    assert final_answer_correct(Candidate.model_validate(sample("t", 0, "Answer: 1,000", reference="1000")))
    assert not final_answer_correct(Candidate.model_validate(sample("t", 0, "Answer: 6")))
    assert not final_answer_correct(Candidate.model_validate(sample("t", 0, "5")))  # no marker
    with pytest.raises(ValueError, match="no reference"):
        final_answer_correct(Candidate.model_validate(sample("t", 0, "Answer: 5", reference=None)))


def test_evaluate_counts_per_task_and_averages():
    tasks = [task("a"), task("b")]
    samples = [sample("a", 0, "Answer: 5"), sample("a", 1, "Answer: 4"),  # a: 1 of 2
               sample("b", 0, "Answer: 4"), sample("b", 1, "Answer: 3")]  # b: 0 of 2
    ev = evaluate(samples, tasks, 2, tokens_per_s=123.456)
    # per task pass@1 (0.5, 0) and pass@2 (1, 0): standard errors sd / sqrt(2) = 0.25 and 0.5
    assert ev == Evaluated(pass1=0.25, passk=0.5, k=2, eval_tasks=2, eval_tokens_per_s=123.5,
                           pass1_se=0.25, passk_se=0.5)


def test_evaluate_takes_any_check_and_candidates():
    seen = []

    def check(c: Candidate) -> bool:
        seen.append(c.id)
        return c.id.endswith("-0")

    samples = [Candidate.model_validate(sample("a", i, "x")) for i in range(4)]
    ev = evaluate(samples, [task("a")], 4, check=check)
    assert seen == ["a-0", "a-1", "a-2", "a-3"]
    assert (ev.pass1, ev.passk) == (0.25, 1.0)
    with pytest.raises(ValueError, match="no held-out tasks"):
        evaluate([], [], 4)


def test_the_record_keeps_the_marker_and_summary_keys():
    ev = Evaluated(pass1=0.25, passk=0.5, k=8, eval_tasks=2, eval_tokens_per_s=10.0, wall_s=1.5)
    assert ev.to_json() == {"pass@1": 0.25, "pass@8": 0.5, "eval_tasks": 2, "eval_tokens_per_s": 10.0,
                            "wall_s": 1.5}
    assert Evaluated.from_json(ev.to_json()) == ev
    one = Evaluated(pass1=0.5, passk=0.5, k=1, eval_tasks=2, eval_tokens_per_s=0.0)
    assert Evaluated.from_json(one.to_json()) == one
