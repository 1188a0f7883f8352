"""Judge reliability (``tgrs_agents.curation.reliability``): Dawid-Skene EM recovers known rates from
unlabelled verdicts, gold verifiers anchor it, intervals are Wilson's, and the posterior log-odds
that a calibrated policy decides by is monotone in every vote."""

from __future__ import annotations

import math
import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tgrs_agents.curation.reliability import (
    Rate,
    Reliability,
    TeacherReliability,
    dawid_skene,
    from_labels,
    prior_reliability,
    wilson,
)

TRUE = {"careful": (0.90, 0.95), "lenient": (0.95, 0.60), "noisy": (0.75, 0.70)}


def simulate(n: int, prevalence: float = 0.4, seed: int = 0, missing: float = 0.1,
             rates: dict[str, tuple[float, float]] = TRUE) -> tuple[list[dict[str, bool]], list[bool]]:
    rng = random.Random(seed)
    rows, labels = [], []
    for _ in range(n):
        y = rng.random() < prevalence
        row = {}
        for t, (s, c) in rates.items():
            if rng.random() < missing:
                continue  # this teacher was not consulted (short-circuit) or failed
            row[t] = (rng.random() < s) if y else (rng.random() >= c)
        rows.append(row)
        labels.append(y)
    return rows, labels


def test_wilson_matches_the_textbook_values() -> None:
    low, high = wilson(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson(0, 0) == (0.0, 1.0)
    low, high = wilson(0, 20)
    assert low == 0.0 and 0.15 < high < 0.17


def test_em_recovers_the_rates_of_three_unlabelled_judges() -> None:
    rows, labels = simulate(6000, seed=1)
    rel = dawid_skene(rows, list(TRUE))
    truth = from_labels(zip(rows, labels, strict=True), list(TRUE))
    assert rel.converged and abs(rel.prevalence - sum(labels) / len(labels)) < 0.03
    for t, (s, c) in TRUE.items():
        got = rel.of(t)
        assert abs(got.sensitivity.value - s) < 0.06, (t, got)
        assert abs(got.specificity.value - c) < 0.06, (t, got)
        # the labelled estimate's interval holds the true rate
        assert truth.of(t).sensitivity.low <= s <= truth.of(t).sensitivity.high
        assert truth.of(t).specificity.low <= c <= truth.of(t).specificity.high
    # the most reliable judge gets the largest weight, the least reliable the smallest
    w = rel.weights()
    assert w["careful"] > w["lenient"] > w["noisy"] > 0


def test_gold_anchors_the_labels_and_reports_itself_as_exact() -> None:
    rows, labels = simulate(3000, seed=2)
    anchored = [dict(r, exact=y) for r, y in zip(rows, labels, strict=True)]
    rel = dawid_skene(anchored, [*TRUE, "exact"], gold=["exact"])
    truth = from_labels(zip(rows, labels, strict=True), list(TRUE))
    assert rel.of("exact").gold and rel.of("exact").sensitivity.value == 1.0
    for t in TRUE:  # with every label known, EM counts what the labels count (its prior aside)
        for rate in ("sensitivity", "specificity"):
            got, want = getattr(rel.of(t), rate), getattr(truth.of(t), rate)
            assert (got.n, got.low, got.high) == pytest.approx((want.n, want.low, want.high), abs=1e-9)
            assert got.value == pytest.approx(want.value, abs=0.003)
    assert rel.log_odds({"exact": True}) > 10 and rel.log_odds({"exact": False}) < -10


def test_gold_on_a_few_candidates_keeps_em_on_the_right_side() -> None:
    """Two judges that are mostly wrong look, without labels, like two good judges of flipped
    labels; a gold verifier on 10% of the candidates settles which is which."""
    bad = {"a": (0.2, 0.25), "b": (0.3, 0.2)}
    rows, labels = simulate(4000, seed=3, rates=bad, missing=0.0)
    rng = random.Random(0)
    for r, y in zip(rows, labels, strict=True):
        if rng.random() < 0.1:
            r["gold"] = y
    rel = dawid_skene(rows, ["a", "b", "gold"], gold=["gold"])
    assert rel.of("a").sensitivity.value < 0.4 and rel.of("b").specificity.value < 0.4
    # a judge worse than chance is given (almost) no say in a decision, never an inverted one
    up, down = rel.of("a").terms()
    assert 0 < up < 0.01 and -0.01 < down < 0


def test_rows_with_the_same_verdicts_are_compressed_so_size_does_not_matter() -> None:
    rows, _ = simulate(2000, seed=4)
    one = dawid_skene(rows, list(TRUE))
    t0 = time.perf_counter()
    ten = dawid_skene(rows * 10, list(TRUE))
    assert time.perf_counter() - t0 < 1.0  # 20,000 rows, at most 3^3 patterns
    for t in TRUE:  # the same estimate, up to the prior (worth 10 candidates: less against 10x the data)
        assert ten.of(t).sensitivity.value == pytest.approx(one.of(t).sensitivity.value, abs=0.03)
        assert ten.of(t).sensitivity.n == pytest.approx(10 * one.of(t).sensitivity.n, rel=0.05)
        width = lambda r: r.sensitivity.high - r.sensitivity.low  # noqa: E731
        assert width(ten.of(t)) < width(one.of(t)) / 2.5  # ten times the data, ~sqrt(10) narrower


def test_prior_is_a_majority_vote_and_the_json_round_trip_keeps_the_rule() -> None:
    prior = prior_reliability(["a", "b", "c"])
    assert prior.log_odds({"a": True, "b": True, "c": False}) > 0
    assert prior.log_odds({"a": True, "b": False, "c": False}) < 0
    rows, _ = simulate(800, seed=5)
    rel = dawid_skene(rows, list(TRUE))
    again = Reliability.from_json(rel.to_json())
    for votes in ({"careful": True}, {"lenient": True, "noisy": False}, {}):
        assert again.log_odds(votes) == pytest.approx(rel.log_odds(votes), abs=1e-3)


@settings(max_examples=200, deadline=None)
@given(s=st.floats(0.0, 1.0), c=st.floats(0.0, 1.0), pi=st.floats(0.0, 1.0),
       others=st.dictionaries(st.sampled_from(["b", "c"]), st.booleans()))
def test_a_pass_never_lowers_the_posterior(s: float, c: float, pi: float, others: dict[str, bool]) -> None:
    r = lambda v: TeacherReliability(Rate(v, 0, 1, 0), Rate(v, 0, 1, 0))  # noqa: E731
    rel = Reliability({"a": TeacherReliability(Rate(s, 0, 1, 0), Rate(c, 0, 1, 0)), "b": r(0.7), "c": r(0.9)},
                      prevalence=pi)
    fail = rel.log_odds({**others, "a": False})
    unheard = rel.log_odds(others)
    ok = rel.log_odds({**others, "a": True})
    assert fail <= unheard <= ok  # monotone, and an unheard (or dropped) judge sits in between
    assert math.isfinite(fail) and math.isfinite(ok)
