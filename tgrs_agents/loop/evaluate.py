"""Held-out evaluation: pass@1 and pass@k of the round's student, with a plain answer check.

Each held-out task gets ``k`` samples; ``check`` says whether a sample's final answer is right (by
default :func:`final_answer_correct`: the text after the last ``Answer:`` equals the task's
reference, numbers within a tolerance, as the ``final_answer`` teacher decides). The estimator is
the unbiased one of Chen et al. (2021), averaged over tasks.
"""

from __future__ import annotations

import math
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


def evaluate(samples: Iterable[dict[str, Any] | Candidate], tasks: Sequence[Task], k: int, *,
             check: Check = final_answer_correct, tokens_per_s: float = 0.0) -> Evaluated:
    """pass@1 and pass@k over ``tasks`` from their ``k`` samples each (trajectories with ``task_id``)."""
    if not tasks:
        raise ValueError("no held-out tasks to evaluate on")
    correct = {t.id: 0 for t in tasks}
    for s in samples:
        c = s if isinstance(s, Candidate) else Candidate.model_validate(s)
        correct[c.task_id] += check(c)
    p1 = sum(pass_at_k(k, c, 1) for c in correct.values()) / len(tasks)
    pk = sum(pass_at_k(k, c, k) for c in correct.values()) / len(tasks)
    return Evaluated(pass1=round(p1, 4), passk=round(pk, 4), k=k, eval_tasks=len(tasks),
                     eval_tokens_per_s=round(tokens_per_s, 1))
