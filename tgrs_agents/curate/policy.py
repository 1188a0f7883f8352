"""Acceptance policies and the short-circuit rule.

Every policy here is *monotone*: turning a teacher's verdict from fail to pass, or raising its
score, can never turn an acceptance into a rejection. That makes the short-circuit exact: with some
teachers still unheard, evaluate the policy twice, once as if every unheard teacher passed with
score 1 and once as if each failed with score 0. If both agree, no unheard teacher can change the
outcome and none of them needs to be paid for. A verdict that carries an ``error`` is unheard too,
except that it cannot be asked again: if the outcome still depends on it, the candidate *failed*.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..types import Verdict

PolicyName = Literal["unanimous", "majority", "k_of_n", "mean_score", "weighted_mean"]
POLICY_NAMES: tuple[str, ...] = ("unanimous", "majority", "k_of_n", "mean_score", "weighted_mean")


@dataclass(frozen=True, slots=True)
class Policy:
    """An acceptance rule over a fixed set of teachers.

    ``best_k`` (optional) keeps only the k best accepted candidates of each task; ranking needs
    every teacher's score, so with best_k the panel short-circuits rejections only.
    """

    name: PolicyName
    teachers: tuple[str, ...]
    k: int | None = None
    threshold: float | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    best_k: int | None = None

    def __post_init__(self) -> None:
        n = len(self.teachers)
        if n == 0:
            raise ConfigError("a panel needs at least one teacher", field="teacher")
        if self.name not in POLICY_NAMES:
            raise ConfigError(
                f"expected one of {', '.join(POLICY_NAMES)}; got {self.name!r}", field="policy"
            )
        if self.name == "k_of_n":
            if self.k is None or not 1 <= self.k <= n:
                raise ConfigError(
                    f"policy 'k_of_n' needs an integer k between 1 and {n} (the number of "
                    f"teachers); got {self.k!r}",
                    field="k",
                )
        if self.name in ("mean_score", "weighted_mean"):
            if self.threshold is None or not 0.0 <= self.threshold <= 1.0:
                raise ConfigError(
                    f"policy {self.name!r} needs a threshold between 0 and 1; got "
                    f"{self.threshold!r}",
                    field="threshold",
                )
        if self.name == "weighted_mean":
            missing = [t for t in self.teachers if t not in self.weights]
            extra = [t for t in self.weights if t not in self.teachers]
            if missing or extra:
                raise ConfigError(
                    "expected one weight per teacher"
                    + (f"; missing: {', '.join(missing)}" if missing else "")
                    + (f"; unknown teachers: {', '.join(extra)}" if extra else ""),
                    field="weights",
                )
            bad = {t: w for t, w in self.weights.items() if not w > 0}
            if bad:
                raise ConfigError(f"weights must be positive numbers; got {bad}", field="weights")
        if self.best_k is not None and self.best_k < 1:
            raise ConfigError(f"expected a positive integer; got {self.best_k!r}", field="best_k")

    # ------------------------------------------------------------------------------------------
    def accepts(self, passed: Mapping[str, bool], scores: Mapping[str, float]) -> bool:
        """The outcome with every teacher heard."""
        n = len(self.teachers)
        if self.name == "unanimous":
            return all(passed[t] for t in self.teachers)
        if self.name == "majority":
            return 2 * sum(passed[t] for t in self.teachers) > n
        if self.name == "k_of_n":
            assert self.k is not None
            return sum(passed[t] for t in self.teachers) >= self.k
        assert self.threshold is not None
        if self.name == "mean_score":
            return sum(scores[t] for t in self.teachers) / n >= self.threshold - 1e-12
        total = sum(self.weights[t] for t in self.teachers)
        mean = sum(self.weights[t] * scores[t] for t in self.teachers) / total
        return mean >= self.threshold - 1e-12

    def decide(self, verdicts: Mapping[str, Verdict]) -> bool | None:
        """The outcome if it no longer depends on teachers without a usable verdict, else None."""
        passed: dict[str, bool] = {}
        scores: dict[str, float] = {}
        unheard: list[str] = []
        for t in self.teachers:
            v = verdicts.get(t)
            if v is None or v.error is not None:
                unheard.append(t)
            else:
                passed[t] = v.passed
                scores[t] = v.score
        if not unheard:
            return self.accepts(passed, scores)
        for t in unheard:
            passed[t], scores[t] = True, 1.0
        optimistic = self.accepts(passed, scores)
        if not optimistic:
            return False
        for t in unheard:
            passed[t], scores[t] = False, 0.0
        pessimistic = self.accepts(passed, scores)
        return True if pessimistic else None

    def rank_score(self, verdicts: Mapping[str, Verdict]) -> float:
        """The panel's score for a candidate: the (weighted) mean of the heard teachers' scores."""
        heard = [(t, v.score) for t, v in verdicts.items() if v.error is None and t in self.teachers]
        if not heard:
            return 0.0
        if self.name == "weighted_mean":
            tw = sum(self.weights[t] for t, _ in heard)
            return sum(self.weights[t] * s for t, s in heard) / tw
        return sum(s for _, s in heard) / len(heard)

    def describe(self) -> str:
        if self.name == "k_of_n":
            return f"k_of_n (k={self.k})"
        if self.name in ("mean_score", "weighted_mean"):
            return f"{self.name} (threshold={self.threshold})"
        return self.name

    def reason(self, accepted: bool | None, verdicts: Mapping[str, Verdict]) -> str:
        """A one-line human reason for the outcome."""
        heard = [v for v in verdicts.values() if v.error is None]
        n_pass = sum(v.passed for v in heard)
        fails = [v.teacher for v in heard if not v.passed]
        errors = [v.teacher for v in verdicts.values() if v.error is not None]
        head = {True: "accepted", False: "rejected", None: "undecided"}[accepted]
        parts = [f"{head} by {self.describe()}: {n_pass} of {len(heard)} heard passed"]
        if self.name in ("mean_score", "weighted_mean"):
            parts.append(f"mean score {self.rank_score(verdicts):.3f}")
        if fails and accepted is not True:
            parts.append("failed: " + ", ".join(fails))
        if errors:
            parts.append("errors: " + ", ".join(errors))
        return "; ".join(parts)


def select_best_k(
    scored: Iterable[tuple[str, int, float]], k: int
) -> tuple[set[int], dict[int, tuple[int, int]]]:
    """Pick the k best of each task from ``(task_id, line, score)`` rows.

    Ties go to the earlier line, so the choice is deterministic. Returns the kept lines and, for
    every dropped line, its rank and the number of accepted candidates of its task.
    """
    by_task: dict[str, list[tuple[float, int]]] = {}
    for task_id, line, score in scored:
        by_task.setdefault(task_id, []).append((score, line))
    keep: set[int] = set()
    dropped: dict[int, tuple[int, int]] = {}
    for rows in by_task.values():
        rows.sort(key=lambda r: (-r[0], r[1]))
        for rank, (_, line) in enumerate(rows, start=1):
            if rank <= k:
                keep.add(line)
            else:
                dropped[line] = (rank, len(rows))
    return keep, dropped


def make_policy(
    name: str,
    teachers: Sequence[str],
    *,
    k: int | None = None,
    threshold: float | None = None,
    weights: Mapping[str, float] | None = None,
    best_k: int | None = None,
) -> Policy:
    return Policy(
        name=name,  # type: ignore[arg-type]
        teachers=tuple(teachers),
        k=k,
        threshold=threshold,
        weights=dict(weights or {}),
        best_k=best_k,
    )
