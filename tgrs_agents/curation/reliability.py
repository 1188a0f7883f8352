"""How far each teacher can be trusted, learned from the verdicts themselves (binary Dawid-Skene).

Why: a panel that counts votes treats a careless judge like a careful one. With the verdicts of a
run (or of a labelled file) we can estimate, per teacher, its *sensitivity* s (it passes a good
candidate) and *specificity* c (it fails a bad one), and weigh its vote by what it is worth.

The model (Dawid & Skene, 1979, two classes): a candidate is good (y = 1) with probability pi; given
y, each teacher's verdict is an independent coin, P(pass | good) = s_j, P(fail | bad) = c_j. EM
alternates the posterior q_i = P(y_i = 1 | verdicts) and the rates. Each rate has a Beta(8, 2)
prior: every judge starts as right 4 times in 5, worth 10 candidates of evidence, so a judge seen on
a handful of candidates (an escalate_only one, early in a run) is not declared useless or perfect
from them, and no rate is ever exactly 0 or 1; a few dozen candidates outweigh it. It starts from the vote share of each
candidate, so it settles on the solution where judges are better than chance; if it still lands on
the flipped one (mean balanced accuracy below 1/2) the labels are flipped back.

Gold anchors: a teacher marked ``gold = true`` (an exact verifier) is taken as the truth. Where it
gave a verdict, y is fixed to it; this pins the labels, and the other teachers' rates are in effect
measured against it. A gold teacher's own rates are reported as 1, not estimated.

Scale: candidates with the same verdict pattern have the same posterior, so EM runs over distinct
patterns with their counts (at most 3^n for n teachers), whatever the size of the run; pure Python.

Intervals: 95% Wilson score intervals on the EM *soft counts* (the successes and trials a teacher
would have if the posteriors were labels). They are exact for labelled data (``from_labels``) and
too narrow when most labels are inferred, since they ignore the uncertainty of the posteriors.

Decision weights: the posterior log-odds of "good" given verdicts is

    L = logit(pi) + sum over heard j of ( log(s_j / (1 - c_j))  if j passed,
                                          log((1 - s_j) / c_j)  if j failed )

and accepting when P(good | verdicts) >= threshold is accepting when L >= logit(threshold). Each
pass adds a positive term and each fail a negative one as long as s_j + c_j > 1, so the rule is
monotone and the panel's short-circuit stays exact. A teacher estimated no better than chance is
given (almost) no say rather than inverted. The rule is a weighted vote: L is affine in the votes
with weights ``log_dor`` = logit(s_j) + logit(c_j), the log diagnostic odds ratio.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Z95 = 1.959963984540054
EPS = 1e-3  # no estimated rate is used closer to 0 or 1 than this in a decision
GOLD_EPS = 1e-6
PRIOR_RATE = 0.8  # before any data: every teacher right 4 times in 5 (equal weights: a majority vote)
PRIOR_WEIGHT = 10.0  # ... worth this many candidates of evidence in EM (a Beta(8, 2) prior)
EM_PRIOR = (PRIOR_RATE * PRIOR_WEIGHT, (1 - PRIOR_RATE) * PRIOR_WEIGHT)


def wilson(successes: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (soft counts allowed); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, successes / n))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def logit(p: float) -> float:
    p = min(1 - 1e-12, max(1e-12, p))
    return math.log(p / (1 - p))


@dataclass(frozen=True, slots=True)
class Rate:
    """An estimated proportion, its 95% interval and the (soft) number of trials behind it."""

    value: float
    low: float
    high: float
    n: float

    @classmethod
    def of(cls, successes: float, n: float, prior: tuple[float, float] = (1.0, 1.0)) -> Rate:
        """The posterior mean under a Beta(``prior``) prior; the Wilson interval of the data alone."""
        low, high = wilson(successes, n)
        return cls((successes + prior[0]) / (n + prior[0] + prior[1]), low, high, n)

    def to_json(self) -> dict[str, float]:
        return {"value": round(self.value, 4), "low": round(self.low, 4), "high": round(self.high, 4),
                "n": round(self.n, 2)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Rate:
        return cls(float(d["value"]), float(d.get("low", 0.0)), float(d.get("high", 1.0)), float(d.get("n", 0)))


@dataclass(frozen=True, slots=True)
class TeacherReliability:
    sensitivity: Rate
    specificity: Rate
    judged: int = 0  # candidates it gave a verdict on
    gold: bool = False

    def rates(self) -> tuple[float, float]:
        """(s, c) as a decision uses them: clipped away from 0 and 1, and never worse than chance."""
        eps = GOLD_EPS if self.gold else EPS
        s = min(1 - eps, max(eps, self.sensitivity.value))
        c = min(1 - eps, max(eps, self.specificity.value))
        if s + c < 1 + 2 * eps:  # no better than a coin: (almost) no say, and never an inverted one
            s = c = 0.5 + eps
        return s, c

    def terms(self) -> tuple[float, float]:
        """What a pass and a fail add to the log-odds of "good" (positive, negative)."""
        s, c = self.rates()
        return math.log(s / (1 - c)), math.log((1 - s) / c)

    @property
    def log_dor(self) -> float:
        up, down = self.terms()
        return up - down

    def to_json(self) -> dict[str, Any]:
        return {"sensitivity": self.sensitivity.to_json(), "specificity": self.specificity.to_json(),
                "judged": self.judged, "gold": self.gold, "weight": round(self.log_dor, 4)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TeacherReliability:
        return cls(Rate.from_json(d["sensitivity"]), Rate.from_json(d["specificity"]),
                   int(d.get("judged", 0)), bool(d.get("gold", False)))


def prior_reliability(teachers: Iterable[str], gold: Iterable[str] = ()) -> Reliability:
    """Before any data: every teacher right 4 times in 5 (gold ones always), prevalence 1/2."""
    gold = set(gold)
    prior = Rate(PRIOR_RATE, 0.0, 1.0, 0.0)
    sure = Rate(1.0, 1.0, 1.0, 0.0)
    return Reliability({t: TeacherReliability(sure if t in gold else prior, sure if t in gold else prior,
                                              gold=t in gold) for t in teachers},
                       prevalence=0.5, items=0, source="prior")


@dataclass(frozen=True)
class Reliability:
    """Per-teacher rates and the prevalence of good candidates: what a calibrated policy decides by."""

    teachers: Mapping[str, TeacherReliability]
    prevalence: float
    items: int = 0
    iterations: int = 0
    converged: bool = True
    source: str = "em"  # em (a run's own verdicts), labels (a labelled file), prior, or a file name
    flipped: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    def of(self, teacher: str) -> TeacherReliability:
        return self.teachers[teacher]

    def log_odds(self, passed: Mapping[str, bool]) -> float:
        """Posterior log-odds that the candidate is good, given the verdicts in ``passed``."""
        pi = min(1 - EPS, max(EPS, self.prevalence))
        total = logit(pi)
        for t, ok in passed.items():
            up, down = self.teachers[t].terms()
            total += up if ok else down
        return total

    def posterior(self, passed: Mapping[str, bool]) -> float:
        x = self.log_odds(passed)
        return 1 / (1 + math.exp(-x)) if x > -700 else 0.0

    def weights(self) -> dict[str, float]:
        return {t: r.log_dor for t, r in self.teachers.items()}

    def to_json(self) -> dict[str, Any]:
        return {"prevalence": round(self.prevalence, 4), "items": self.items, "iterations": self.iterations,
                "converged": self.converged, "source": self.source, "flipped": self.flipped,
                "teachers": {t: r.to_json() for t, r in self.teachers.items()}, **self.extra}

    @classmethod
    def from_json(cls, d: Mapping[str, Any], *, source: str = "file") -> Reliability:
        return cls({t: TeacherReliability.from_json(r) for t, r in d["teachers"].items()},
                   prevalence=float(d["prevalence"]), items=int(d.get("items", 0)), source=source)


Row = Mapping[str, bool]  # one candidate: teacher -> passed (teachers without a verdict are absent)


def _patterns(rows: Iterable[Row], teachers: Sequence[str]) -> Counter[tuple[int, ...]]:
    return Counter(tuple(-1 if t not in r else int(bool(r[t])) for t in teachers) for r in rows)


def _rates(pats: Mapping[tuple[int, ...], tuple[int, float]], teachers: Sequence[str],
           gold: set[str], prior: tuple[float, float] = EM_PRIOR) -> tuple[dict[str, TeacherReliability], float, float]:
    """The M step: rates from patterns -> (count, q); also pi and the number of items."""
    out: dict[str, TeacherReliability] = {}
    n_items = sum(n for n, _ in pats.values())
    pos = sum(n * q for n, q in pats.values())
    for j, t in enumerate(teachers):
        tp = pq = tn = nq = 0.0
        judged = 0
        for pat, (n, q) in pats.items():
            v = pat[j]
            if v < 0:
                continue
            judged += n
            pq += n * q
            nq += n * (1 - q)
            tp += n * q * v
            tn += n * (1 - q) * (1 - v)
        if t in gold:
            sure = Rate(1.0, 1.0, 1.0, pq)
            out[t] = TeacherReliability(sure, Rate(1.0, 1.0, 1.0, nq), judged, gold=True)
        else:
            out[t] = TeacherReliability(Rate.of(tp, pq, prior), Rate.of(tn, nq, prior), judged)
    return out, (pos + 1) / (n_items + 2), n_items


def dawid_skene(rows: Iterable[Row], teachers: Sequence[str], *, gold: Iterable[str] = (),
                max_iter: int = 2000, tol: float = 1e-7,
                patterns: Mapping[tuple[int, ...], int] | None = None) -> Reliability:
    """Estimate every teacher's sensitivity and specificity from unlabelled verdicts (see the module).

    ``patterns`` instead of ``rows``: how many candidates had each verdict pattern (one entry per
    teacher, in ``teachers`` order: 1 passed, 0 failed, -1 not heard), as the jury keeps them."""
    teachers = list(teachers)
    gold = set(gold) & set(teachers)
    counts = Counter(patterns) if patterns is not None else _patterns(rows, teachers)
    gidx = [j for j, t in enumerate(teachers) if t in gold]
    anchor: dict[tuple[int, ...], float] = {}
    q0: dict[tuple[int, ...], float] = {}
    for pat in counts:
        g = [pat[j] for j in gidx if pat[j] >= 0]
        if g:
            anchor[pat] = sum(g) / len(g)
        votes = [v for j, v in enumerate(pat) if v >= 0 and j not in gidx]
        q0[pat] = anchor.get(pat, sum(votes) / len(votes) if votes else 0.5)
    pats = {p: (n, q0[p]) for p, n in counts.items()}
    rel, pi, n_items = _rates(pats, teachers, gold)
    iterations, converged = 0, not pats
    for it in range(1, max_iter + 1):
        iterations = it
        new: dict[tuple[int, ...], tuple[int, float]] = {}
        for pat, (n, _) in pats.items():
            if pat in anchor:
                new[pat] = (n, anchor[pat])
                continue
            a, b = math.log(pi), math.log(1 - pi)
            for j, v in enumerate(pat):
                if v < 0 or j in gidx:
                    continue
                r = rel[teachers[j]]
                s, c = r.sensitivity.value, r.specificity.value
                a += math.log(s if v else 1 - s)
                b += math.log(1 - c if v else c)
            new[pat] = (n, 1 / (1 + math.exp(b - a)) if b - a < 700 else 0.0)
        pats = new
        rel2, pi2, _ = _rates(pats, teachers, gold)
        delta = max([abs(pi2 - pi)] + [abs(rel2[t].sensitivity.value - rel[t].sensitivity.value)
                                       + abs(rel2[t].specificity.value - rel[t].specificity.value)
                                       for t in teachers])
        rel, pi = rel2, pi2
        if delta < tol:
            converged = True
            break
    flipped = False
    free = [t for t in teachers if t not in gold and rel[t].judged]
    if not gold and free and sum(r.sensitivity.value + r.specificity.value for t, r in rel.items()
                                  if t in free) / len(free) < 1:
        flipped = True  # EM found the mirror image (judges worse than chance): read it the other way
        pats = {p: (n, 1 - q) for p, (n, q) in pats.items()}
        rel, pi, _ = _rates(pats, teachers, gold)
    return Reliability(rel, prevalence=pi, items=int(n_items), iterations=iterations, converged=converged,
                       source="em", flipped=flipped)


def from_labels(rows: Iterable[tuple[Row, bool]], teachers: Sequence[str]) -> Reliability:
    """Rates against known labels: exact counts (add-one smoothed), Wilson intervals (``tgrs calibrate``)."""
    teachers = list(teachers)
    pats: dict[tuple[int, ...], tuple[int, float]] = {}
    for row, label in rows:
        key = (*(-1 if t not in row else int(bool(row[t])) for t in teachers), int(label))
        n, _ = pats.get(key, (0, 0.0))
        pats[key] = (n + 1, float(label))
    # the label rides along as a last column (so equal verdicts with other labels stay apart)
    rel, pi, n_items = _rates(pats, [*teachers, "\x00label"], set(), prior=(1.0, 1.0))
    rel.pop("\x00label", None)
    return Reliability(rel, prevalence=pi, items=int(n_items), source="labels")
