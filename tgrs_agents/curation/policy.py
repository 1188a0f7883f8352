"""Acceptance policies and the short-circuit rule.

Every policy here is *monotone*: turning a teacher's verdict from fail to pass, or raising its
score, can never turn an acceptance into a rejection. That makes the short-circuit exact: with some
teachers still unheard, evaluate the policy twice, once as if every unheard teacher passed with
score 1 and once as if each failed with score 0. If both agree, no unheard teacher can change the
outcome and none of them needs to be paid for. A verdict that carries an ``error`` is unheard too,
except that it cannot be asked again: if the outcome still depends on it, the candidate *failed*.

The decision rule, in full (the README copies this text)
--------------------------------------------------------
A panel has *seats* (its teachers; ``reserve`` judges are not seats). Seats marked
``escalate_only`` form E, the others B. For every seat the outcome f reads a verdict (passed, and a
score in [0, 1]); a seat whose teacher failed for good is first given the next unused ``reserve``
judge (in the order listed), whose verdict then counts in that seat, with that seat's weight.

1. Failed seats. Without ``min_successful`` a seat that failed (reserves exhausted) is unknown: the
   outcome is the one that every completion of it gives, and if completions disagree the candidate
   fails (it is retried by the next run). With ``min_successful = m`` such a seat is *dropped*: it
   takes no part, and the outcome needs at least m successful seats (fewer: the candidate fails);
   the panel then hears at least m verdicts before it decides anything.
2. Escalation. Let t be the threshold (``threshold`` for mean_score and weighted_mean, else 0.5) and
   M the mean score of the successful B seats. If E is not empty and B is *firm* (every successful B
   seat passed and M >= t + margin, or every one failed and M <= t - margin), the outcome is that
   common verdict and no E seat is called (they are counted as saved). Otherwise (the B seats
   disagree, or M is within ``margin`` of t, or no B seat succeeded) the outcome is step 3 over
   every successful seat, B and E. E seats are called after every B seat, whatever their cost_rank.
3. The policy, over the successful seats S:
   unanimous: every seat passed. majority: more passed than failed; exactly as many is a tie, and
   ``ties`` decides it: reject (the default), accept, or escalate (the majority of the successful E
   seats; a tie among them, or none, rejects). k_of_n: at least k passed. mean_score: the mean score
   >= threshold. weighted_mean: the weighted mean score >= threshold; with ``weights = "auto"`` or a
   calibration file, the Dawid-Skene posterior P(good | passed flags) >= threshold instead
   (:mod:`.reliability`: a weighted vote with log diagnostic-odds weights).

Each step is monotone with "failed" <= "dropped" <= "passed" per seat, so the short-circuit above
never changes a decision; the property tests in tests/curation/test_policy.py check it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError
from ..types import Verdict
from .reliability import Reliability

PolicyName = Literal["unanimous", "majority", "k_of_n", "mean_score", "weighted_mean"]
POLICY_NAMES: tuple[str, ...] = ("unanimous", "majority", "k_of_n", "mean_score", "weighted_mean")
TIE_RULES: tuple[str, ...] = ("reject", "accept", "escalate")
_TOL = 1e-12


@dataclass(frozen=True, slots=True)
class Policy:
    """An acceptance rule over a fixed set of seats (see the module docstring for the whole rule).

    ``best_k`` (optional) keeps only the k best accepted candidates of each task; ranking needs
    every consulted seat's score, so with best_k the panel short-circuits rejections only.
    ``rankers`` (group-mode judges) rank by their scores alone when they were heard.
    """

    name: PolicyName
    teachers: tuple[str, ...]
    k: int | None = None
    threshold: float | None = None
    weights: Mapping[str, float] = field(default_factory=dict)
    best_k: int | None = None
    ties: str = "reject"
    escalate: tuple[str, ...] = ()
    margin: float = 0.0
    quorum: int | None = None  # min_successful
    reliability: Reliability | None = None  # weights = "auto" or a calibration file
    rankers: tuple[str, ...] = ()

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
        if self.name == "weighted_mean" and self.reliability is None:
            self._check_weights()
        if self.reliability is not None:
            missing = [t for t in self.teachers if t not in self.reliability.teachers]
            if missing:
                raise ConfigError(f"no reliability estimate for {', '.join(missing)}", field="weights")
        if self.best_k is not None and self.best_k < 1:
            raise ConfigError(f"expected a positive integer; got {self.best_k!r}", field="best_k")
        self._check_jury(n)

    def _check_weights(self) -> None:
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

    def _check_jury(self, n: int) -> None:
        if self.ties not in TIE_RULES:
            raise ConfigError(f"expected one of {', '.join(TIE_RULES)}; got {self.ties!r}", field="ties")
        unknown = [t for t in (*self.escalate, *self.rankers) if t not in self.teachers]
        if unknown:
            raise ConfigError(f"not a seat of the panel: {', '.join(unknown)}", field="escalate_only")
        if self.escalate and len(set(self.escalate)) == n:
            raise ConfigError("every teacher is escalate_only: at least one must be asked first",
                              field="escalate_only")
        if self.ties == "escalate" and not self.escalate:
            raise ConfigError("ties = 'escalate' needs a teacher with escalate_only = true", field="ties")
        if not 0.0 <= self.margin <= 0.5:
            raise ConfigError(f"expected a margin between 0 and 0.5; got {self.margin!r}", field="margin")
        if self.quorum is not None and not 1 <= self.quorum <= n:
            raise ConfigError(f"expected min_successful between 1 and {n} (the number of seats); got "
                              f"{self.quorum!r}", field="min_successful")

    # ------------------------------------------------------------------------------------------
    @property
    def centre(self) -> float:
        """The t of the escalation rule: the threshold of a score policy, else 0.5."""
        return self.threshold if self.threshold is not None else 0.5

    @property
    def uses_scores(self) -> bool:
        """Whether an outcome or a rank can depend on scores (not only on passed flags)."""
        votes_only = self.name in ("unanimous", "majority", "k_of_n") or self.reliability is not None
        return not votes_only or bool(self.escalate) or self.best_k is not None

    def firm(self, passed: Mapping[str, bool], scores: Mapping[str, float]) -> bool | None:
        """Step 2: the common verdict of firmly agreeing B seats, or None (escalate / no E)."""
        if not self.escalate:
            return None
        base = [t for t in self.teachers if t in passed and t not in self.escalate]
        if not base:
            return None
        mean = sum(scores[t] for t in base) / len(base)
        if all(passed[t] for t in base) and mean >= self.centre + self.margin - _TOL:
            return True
        if not any(passed[t] for t in base) and mean <= self.centre - self.margin + _TOL:
            return False
        return None

    def accepts(self, passed: Mapping[str, bool], scores: Mapping[str, float]) -> bool:
        """The outcome with every seat heard; a seat missing from ``passed`` was dropped."""
        firm = self.firm(passed, scores)
        if firm is not None:
            return firm
        seats = [t for t in self.teachers if t in passed]
        if not seats:
            return False
        n_pass = sum(passed[t] for t in seats)
        if self.name == "unanimous":
            return n_pass == len(seats)
        if self.name == "majority":
            if 2 * n_pass != len(seats):
                return 2 * n_pass > len(seats)
            if self.ties == "escalate":
                esc = [passed[t] for t in self.escalate if t in passed]
                return 2 * sum(esc) > len(esc)
            return self.ties == "accept"
        if self.name == "k_of_n":
            assert self.k is not None
            return n_pass >= self.k
        assert self.threshold is not None
        if self.name == "mean_score":
            return sum(scores[t] for t in seats) / len(seats) >= self.threshold - _TOL
        if self.reliability is not None:
            return self.reliability.posterior({t: passed[t] for t in seats}) >= self.threshold - _TOL
        total = sum(self.weights[t] for t in seats)
        mean = sum(self.weights[t] * scores[t] for t in seats) / total
        return mean >= self.threshold - _TOL

    def decide(self, verdicts: Mapping[str, Verdict]) -> bool | None:
        """The outcome if it no longer depends on seats without a usable verdict, else None."""
        if self.name == "unanimous" and not self.escalate and self.quorum is None:
            return _unanimous(self.teachers, verdicts)  # the same answer, without the two completions
        passed: dict[str, bool] = {}
        scores: dict[str, float] = {}
        unheard: list[str] = []
        for t in self.teachers:
            v = verdicts.get(t)
            if v is None or (v.error is not None and self.quorum is None):
                unheard.append(t)
            elif v.error is None:
                passed[t] = v.passed
                scores[t] = v.score
            # else: failed for good under a quorum -> dropped
        if self.quorum is not None and len(passed) < self.quorum:
            return None
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
        """The panel's score for a candidate: the group judges' mean score when one was heard;
        else the posterior probability of "good" (calibrated weights), or the (weighted) mean of
        the heard seats' scores."""
        heard = [(t, v) for t, v in verdicts.items() if v.error is None and t in self.teachers]
        if not heard:
            return 0.0
        ranked = [v.score for t, v in heard if t in self.rankers]
        if ranked:
            return sum(ranked) / len(ranked)
        if self.reliability is not None:
            return self.reliability.posterior({t: v.passed for t, v in heard})
        if self.name == "weighted_mean":
            tw = sum(self.weights[t] for t, _ in heard)
            return sum(self.weights[t] * v.score for t, v in heard) / tw
        return sum(v.score for _, v in heard) / len(heard)

    def describe(self) -> str:
        if self.name == "k_of_n":
            head = f"k_of_n (k={self.k})"
        elif self.name in ("mean_score", "weighted_mean"):
            auto = ", calibrated weights" if self.reliability is not None else ""
            head = f"{self.name} (threshold={self.threshold}{auto})"
        elif self.name == "majority" and self.ties != "reject":
            head = f"majority (ties {self.ties})"
        else:
            head = self.name
        if self.escalate:
            head += f", escalating to {', '.join(self.escalate)} (margin {self.margin})"
        if self.quorum is not None:
            head += f", min_successful {self.quorum}"
        return head

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
        if self.quorum is not None and accepted is None and len(heard) < self.quorum:
            parts.append(f"fewer than min_successful = {self.quorum} judges answered")
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
    ties: str = "reject",
    escalate: Sequence[str] = (),
    margin: float = 0.0,
    quorum: int | None = None,
    reliability: Reliability | None = None,
    rankers: Sequence[str] = (),
) -> Policy:
    return Policy(
        name=name,  # type: ignore[arg-type]
        teachers=tuple(teachers),
        k=k,
        threshold=threshold,
        weights=dict(weights or {}),
        best_k=best_k,
        ties=ties,
        escalate=tuple(escalate),
        margin=margin,
        quorum=quorum,
        reliability=reliability,
        rankers=tuple(rankers),
    )


def _unanimous(teachers: tuple[str, ...], verdicts: Mapping[str, Verdict]) -> bool | None:
    """``decide`` for a plain unanimous panel (no escalation, no quorum; run per verdict, so it
    is worth its own loop): any heard fail rejects; every seat heard and passing accepts; else
    undecided (an error, without a quorum, leaves its seat unheard)."""
    heard_all = True
    for t in teachers:
        v = verdicts.get(t)
        if v is None or v.error is not None:
            heard_all = False
        elif not v.passed:
            return False
    return True if heard_all else None
