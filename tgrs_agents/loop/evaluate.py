"""Held-out evaluation: pass@1 and pass@k of the round's student, decided by a check or a panel.

Each held-out task gets ``k`` samples. Whether a sample is right is decided by the run's *eval
panel* (``[eval] panel = "eval-panel.toml"``, any panel file: ``code_tests`` for code,
``json_schema`` for structured output, a user ``python`` verifier for anything else; a built-in
family brings its own, the code family ``teachers/panel-code.toml``): a sample is correct when the
panel accepts it (:func:`panel_counts`). Without one, ``check`` decides (by default
:func:`final_answer_correct`: the text after the last ``Answer:`` equals the task's reference,
numbers within a tolerance, as the ``final_answer`` teacher decides). :func:`eval_counts` picks
between them. The estimator is the unbiased one of Chen et al. (2021), averaged over tasks.

The panel judges each distinct trajectory of a task once (samples that are the same conversation
share the decision): at a round's end most of a good student's samples are the same answer, and a
sandbox run per copy would dominate the evaluation's time. Panel judges are deterministic
(verifiers; API judges at temperature 0 with a fixed seed), so sharing changes no decision.

Each figure carries its standard error: the per-task estimates' sample standard deviation over
sqrt(number of tasks). Tasks are the unit of sampling (a new split draws new tasks), and each
task's estimate already holds its own sampling noise over the k samples, so this one number
covers both (the clustered standard error of Miller, "Adding Error Bars to Evals", 2024). The
per-task counts behind it are :func:`task_results`, which the loop saves per round.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..types import Candidate, Task
from .stages import Evaluated

if TYPE_CHECKING:
    from ..paid.services import Services
    from .config import LoopConfig

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


# ------------------------------------------------------------------------------ the eval panel

def eval_panel_path(cfg: LoopConfig) -> Path | None:
    """The eval panel file: ``[eval] panel`` (relative to the run config, else a shipped file), else
    the built-in family's own; None: the final_answer check. A missing file is a ConfigError."""
    from ..assets import asset_path
    from ..tasks.families import family

    name = cfg.eval.panel
    if name is None:
        fam = family(cfg.tasks.source)
        return asset_path(fam.eval_panel) if fam is not None and fam.eval_panel else None
    path = cfg.resolve(name)
    if path.is_file():
        return path
    try:
        return asset_path(name)
    except FileNotFoundError:
        raise ConfigError(f"eval panel file not found: {path}", file=cfg.source, field="eval.panel") from None


def load_eval_panel(cfg: LoopConfig) -> Any:
    """The eval panel's config (a PanelConfig), or None for the final_answer check; checked at the
    start of a run so a broken file fails before any stage, naming itself."""
    from ..curation.panel_file import load_panel

    path = eval_panel_path(cfg)
    return None if path is None else load_panel(path)


def _key(c: Candidate) -> str:
    """What makes two samples the same trajectory for a judge (everything but the id)."""
    return json.dumps([c.task_id, c.model_dump(mode="json", exclude={"id", "metadata"})], sort_keys=True,
                      default=str)


async def judge_samples(samples: Iterable[dict[str, Any] | Candidate], panel_cfg: Any, *,
                        services: Services | None = None, max_in_flight: int = 64) -> list[tuple[Candidate, bool]]:
    """(sample, accepted by the panel) for every sample; each distinct trajectory judged once."""
    from ..curation.panel import Panel

    cands = [s if isinstance(s, Candidate) else Candidate.model_validate(s) for s in samples]
    unique: dict[str, Candidate] = {}
    for c in cands:
        unique.setdefault(_key(c), c)
    panel = Panel.from_config(panel_cfg, services)
    gate = asyncio.Semaphore(max_in_flight)
    decided: dict[str, bool] = {}

    async def one(key: str, c: Candidate) -> None:
        async with gate:
            decision, _ = await panel.judge(c)
        decided[key] = decision.accepted is True

    try:
        async with asyncio.TaskGroup() as tg:
            for key, c in unique.items():
                tg.create_task(one(key, c))
    finally:
        await panel.aclose()
    return [(c, decided[_key(c)]) for c in cands]


def panel_counts(samples: Iterable[dict[str, Any] | Candidate], tasks: Sequence[Task], panel_cfg: Any, *,
                 services: Services | None = None) -> dict[str, int]:
    """Correct samples per task id, correct meaning accepted by the panel (``panel_cfg``: a PanelConfig)."""
    if not tasks:
        raise ValueError("no held-out tasks to evaluate on")
    judged = asyncio.run(judge_samples(samples, panel_cfg, services=services))
    correct = {t.id: 0 for t in tasks}
    for c, ok in judged:
        correct[c.task_id] += ok
    return correct


def eval_counts(cfg: LoopConfig, samples: Iterable[dict[str, Any] | Candidate], tasks: Sequence[Task], *,
                services: Services | None = None) -> dict[str, int]:
    """Correct samples per task as the run's eval panel decides (the final_answer check without one)."""
    panel_cfg = load_eval_panel(cfg)
    if panel_cfg is None:
        return count_correct(samples, tasks)
    return panel_counts(samples, tasks, panel_cfg, services=services)
