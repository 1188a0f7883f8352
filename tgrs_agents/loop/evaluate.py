"""Held-out evaluation: pass@1 and pass@k of the round's student, with a plain answer check.

Each held-out task gets ``k`` samples; ``check`` says whether a sample's final answer is right (by
default :func:`final_answer_correct`: the text after the last ``Answer:`` equals the task's
reference, numbers within a tolerance, as the ``final_answer`` teacher decides). The estimator is
the unbiased one of Chen et al. (2021), averaged over tasks.

Each figure carries its standard error: the per-task estimates' sample standard deviation over
sqrt(number of tasks). Tasks are the unit of sampling (a new split draws new tasks), and each
task's estimate already holds its own sampling noise over the k samples, so this one number
covers both (the clustered standard error of Miller, "Adding Error Bars to Evals", 2024). The
per-task counts behind it are :func:`task_results`, which the loop saves per round.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from typing import Any

from ..types import Candidate, Task
from .stages import Evaluated

Check = Callable[[Candidate], bool]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


@cache
def _matcher() -> Any:
    from ..teachers.final_answer import FinalAnswerConfig, FinalAnswerTeacher

    return FinalAnswerTeacher(FinalAnswerConfig(name="eval", kind="final_answer"))


def final_answer_correct(candidate: Candidate) -> bool:
    """True iff the answer after the last ``Answer:`` matches the candidate's reference."""
    from ..teachers.final_answer import extract_answer

    if candidate.reference is None:
        raise ValueError(f"candidate {candidate.id!r} has no reference to check its answer against")
    answer = extract_answer(candidate.final_text)
    return answer is not None and bool(_matcher().matches(answer, candidate.reference))


def count_correct(samples: Iterable[dict[str, Any] | Candidate], tasks: Sequence[Task], *,
                  check: Check = final_answer_correct) -> dict[str, int]:
    """Correct samples per task id (every task present, 0 when none was right)."""
    if not tasks:
        raise ValueError("no held-out tasks to evaluate on")
    correct = {t.id: 0 for t in tasks}
    for s in samples:
        c = s if isinstance(s, Candidate) else Candidate.model_validate(s)
        correct[c.task_id] += check(c)
    return correct


def standard_error(values: Sequence[float]) -> float | None:
    """The mean's standard error: sample SD / sqrt(n); None for fewer than two values."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def task_results(correct: dict[str, int], k: int) -> list[dict[str, Any]]:
    """One row per task: ``task_id``, ``samples``, ``correct``, ``pass@1``, ``pass@{k}``."""
    return [{"task_id": t, "samples": k, "correct": c, "pass@1": round(pass_at_k(k, c, 1), 6),
             f"pass@{k}": round(pass_at_k(k, c, k), 6)} for t, c in correct.items()]


def summarize(correct: dict[str, int], k: int, *, tokens_per_s: float = 0.0) -> Evaluated:
    """pass@1 and pass@k (means over tasks) with their standard errors."""
    p1 = [pass_at_k(k, c, 1) for c in correct.values()]
    pk = [pass_at_k(k, c, k) for c in correct.values()]
    se1, sek = standard_error(p1), standard_error(pk)
    return Evaluated(pass1=round(sum(p1) / len(p1), 4), passk=round(sum(pk) / len(pk), 4), k=k,
                     eval_tasks=len(correct), eval_tokens_per_s=round(tokens_per_s, 1),
                     pass1_se=None if se1 is None else round(se1, 4),
                     passk_se=None if sek is None else round(sek, 4))


def evaluate(samples: Iterable[dict[str, Any] | Candidate], tasks: Sequence[Task], k: int, *,
             check: Check = final_answer_correct, tokens_per_s: float = 0.0) -> Evaluated:
    """pass@1 and pass@k over ``tasks`` from their ``k`` samples each (trajectories with ``task_id``)."""
    return summarize(count_correct(samples, tasks, check=check), k, tokens_per_s=tokens_per_s)
