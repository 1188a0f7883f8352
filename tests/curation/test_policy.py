"""Acceptance policies, best-k selection, and the panel's exact short-circuit."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from panel_kit import FakeTeacher, Outcome, cand, judge_all, make_teacher, v

from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.policy import POLICY_NAMES, Policy, make_policy, select_best_k
from tgrs_agents.curation.reliability import Rate, Reliability, TeacherReliability
from tgrs_agents.errors import ConfigError, TeacherError
from tgrs_agents.types import Verdict

# --------------------------------------------------------------------------------------------
# helpers


def names(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]



def verdicts(passed: list[bool], scores: list[float] | None = None) -> dict[str, Verdict]:
    scores = scores if scores is not None else [1.0 if p else 0.0 for p in passed]
    return {f"t{i}": v(f"t{i}", p, s) for i, (p, s) in enumerate(zip(passed, scores, strict=True))}


def full(policy: Policy, passed: list[bool], scores: list[float] | None = None) -> bool:
    vs = verdicts(passed, scores)
    return policy.accepts({t: x.passed for t, x in vs.items()}, {t: x.score for t, x in vs.items()})



# --------------------------------------------------------------------------------------------
# one policy at a time


def test_unanimous() -> None:
    p = make_policy("unanimous", names(3))
    assert full(p, [True, True, True]) is True
    assert full(p, [True, False, True]) is False
    assert p.decide(verdicts([True, True, True])) is True
    # one failure decides a rejection even with the others unheard
    assert p.decide({"t1": v("t1", False)}) is False
    assert p.decide({"t1": v("t1", True)}) is None


@pytest.mark.parametrize(
    ("passed", "expected"),
    [
        ([True, True, False], True),
        ([True, False, False], False),
        ([True, True, False, False], False),  # even n: a tie is not a majority
        ([True, True, True, False], True),
        ([True, False], False),
        ([True, True], True),
        ([True], True),
        ([False], False),
    ],
)
def test_majority(passed: list[bool], expected: bool) -> None:
    p = make_policy("majority", names(len(passed)))
    assert full(p, passed) is expected
    assert p.decide(verdicts(passed)) is expected


def test_majority_even_tie_short_circuit() -> None:
    p = make_policy("majority", names(4))
    # two failures out of four: at most a tie, which rejects
    assert p.decide({"t0": v("t0", False), "t1": v("t1", False)}) is False
    # three passes out of four: a majority whatever the last says
    assert p.decide({"t0": v("t0", True), "t1": v("t1", True), "t2": v("t2", True)}) is True
    assert p.decide({"t0": v("t0", True), "t1": v("t1", True)}) is None


def test_majority_ignores_scores() -> None:
    p = make_policy("majority", names(3))
    assert full(p, [True, True, False], [0.0, 0.0, 1.0]) is True
    assert full(p, [False, False, True], [1.0, 1.0, 0.0]) is False


@pytest.mark.parametrize(
    ("k", "passed", "expected"),
    [
        (1, [False, False, True], True),
        (1, [False, False, False], False),
        (2, [True, False, True], True),
        (2, [True, False, False], False),
        (3, [True, True, True], True),
        (3, [True, True, False], False),
    ],
)
def test_k_of_n(k: int, passed: list[bool], expected: bool) -> None:
    p = make_policy("k_of_n", names(3), k=k)
    assert full(p, passed) is expected


def test_k_of_n_short_circuit() -> None:
    p = make_policy("k_of_n", names(4), k=2)
    assert p.decide({"t0": v("t0", True), "t3": v("t3", True)}) is True
    assert p.decide({"t0": v("t0", False), "t1": v("t1", False), "t2": v("t2", False)}) is False
    assert p.decide({"t0": v("t0", False), "t1": v("t1", False)}) is None


def test_mean_score() -> None:
    p = make_policy("mean_score", names(2), threshold=0.5)
    assert full(p, [False, True], [0.4, 0.6]) is True  # the threshold is inclusive
    assert full(p, [False, True], [0.4, 0.59]) is False
    # scores decide, not the passed flags
    assert full(p, [False, False], [0.9, 0.9]) is True
    assert full(p, [True, True], [0.1, 0.1]) is False


def test_mean_score_float_rounding_at_threshold() -> None:
    p = make_policy("mean_score", names(3), threshold=0.7)
    assert (0.7 + 0.7 + 0.7) / 3 < 0.7  # the sum rounds down ...
    assert full(p, [True] * 3, [0.7] * 3) is True  # ... yet a mean equal to the threshold passes


def test_mean_score_short_circuit() -> None:
    p = make_policy("mean_score", names(2), threshold=0.9)
    assert p.decide({"t0": v("t0", False, 0.0)}) is False  # best case mean 0.5
    p = make_policy("mean_score", names(2), threshold=0.4)
    assert p.decide({"t0": v("t0", True, 1.0)}) is True  # worst case mean 0.5
    assert p.decide({"t0": v("t0", True, 0.5)}) is None


def test_weighted_mean() -> None:
    p = make_policy("weighted_mean", ["a", "b"], threshold=0.7, weights={"a": 3.0, "b": 1.0})
    assert p.accepts({"a": True, "b": False}, {"a": 1.0, "b": 0.0}) is True  # 0.75
    assert p.accepts({"a": False, "b": True}, {"a": 0.0, "b": 1.0}) is False  # 0.25
    assert p.decide({"a": v("a", True, 1.0)}) is True
    assert p.decide({"a": v("a", False, 0.0)}) is False
    assert p.decide({"b": v("b", True, 1.0)}) is None
    assert p.rank_score({"a": v("a", True, 1.0), "b": v("b", False, 0.0)}) == pytest.approx(0.75)


def test_error_verdict_is_unheard() -> None:
    p = make_policy("unanimous", ["a", "b"])
    err = Verdict.failure("a", "timeout")
    assert p.decide({"a": err, "b": v("b", True)}) is None
    assert p.decide({"a": err, "b": v("b", False)}) is False
    assert p.rank_score({"a": err, "b": v("b", True, 0.8)}) == pytest.approx(0.8)
    assert "errors: a" in p.reason(None, {"a": err, "b": v("b", True)})


def test_best_k_tie_goes_to_earlier_line() -> None:
    rows = [("t", 5, 0.9), ("t", 2, 0.9), ("t", 9, 0.95), ("u", 4, 0.1), ("t", 7, 0.5)]
    keep, dropped = select_best_k(rows, 2)
    assert keep == {9, 2, 4}
    assert dropped == {5: (3, 4), 7: (4, 4)}
    for seed in range(5):  # the order rows arrive in does not matter
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        assert select_best_k(shuffled, 2) == (keep, dropped)


def test_best_k_keeps_all_when_fewer() -> None:
    keep, dropped = select_best_k([("t", 1, 0.2), ("t", 2, 0.1)], 3)
    assert keep == {1, 2}
    assert dropped == {}
    assert select_best_k([], 1) == (set(), {})


# --------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize("k", [None, 0, 4, -1])
def test_k_of_n_needs_k_in_range(k: int | None) -> None:
    with pytest.raises(ConfigError, match="between 1 and 3") as ei:
        make_policy("k_of_n", names(3), k=k)
    assert ei.value.field == "k"


@pytest.mark.parametrize("name", ["mean_score", "weighted_mean"])
@pytest.mark.parametrize("threshold", [None, -0.1, 1.5])
def test_threshold_required_in_range(name: str, threshold: float | None) -> None:
    with pytest.raises(ConfigError, match="threshold between 0 and 1") as ei:
        make_policy(name, ["a"], threshold=threshold, weights={"a": 1.0})
    assert ei.value.field == "threshold"


def test_weights_missing() -> None:
    with pytest.raises(ConfigError, match="missing: b") as ei:
        make_policy("weighted_mean", ["a", "b"], threshold=0.5, weights={"a": 1.0})
    assert ei.value.field == "weights"


def test_weights_extra() -> None:
    with pytest.raises(ConfigError, match="unknown teachers: c") as ei:
        make_policy("weighted_mean", ["a", "b"], threshold=0.5, weights={"a": 1.0, "b": 1.0, "c": 1.0})
    assert ei.value.field == "weights"


@pytest.mark.parametrize("w", [0.0, -1.0, float("nan")])
def test_weights_positive(w: float) -> None:
    with pytest.raises(ConfigError, match="positive") as ei:
        make_policy("weighted_mean", ["a", "b"], threshold=0.5, weights={"a": 1.0, "b": w})
    assert ei.value.field == "weights"


def test_other_validation() -> None:
    with pytest.raises(ConfigError, match="expected one of") as ei:
        make_policy("plurality", ["a"])
    assert ei.value.field == "policy"
    with pytest.raises(ConfigError, match="at least one teacher"):
        make_policy("unanimous", [])
    with pytest.raises(ConfigError, match="positive integer") as ei:
        make_policy("unanimous", ["a"], best_k=0)
    assert ei.value.field == "best_k"


# --------------------------------------------------------------------------------------------
# property: decide() on any subset is sound and exact


@st.composite
def policies(draw: st.DrawFn, max_n: int = 6) -> Policy:
    n = draw(st.integers(1, max_n))
    teachers = names(n)
    name = draw(st.sampled_from(POLICY_NAMES))
    k = draw(st.integers(1, n)) if name == "k_of_n" else None
    threshold = draw(st.floats(0.0, 1.0, allow_subnormal=False)) if name in ("mean_score", "weighted_mean") else None
    weights = (
        {t: draw(st.floats(0.01, 10.0, allow_subnormal=False)) for t in teachers} if name == "weighted_mean" else None
    )
    best_k = draw(st.none() | st.integers(1, 3))
    return make_policy(name, teachers, k=k, threshold=threshold, weights=weights, best_k=best_k)


@st.composite
def vectors(draw: st.DrawFn, n: int) -> tuple[list[bool], list[float]]:
    scores = draw(st.lists(st.floats(0.0, 1.0, allow_subnormal=False), min_size=n, max_size=n))
    if draw(st.booleans()):  # passed consistent with the score
        passed = [s >= 0.5 for s in scores]
    else:
        passed = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return passed, scores


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_decide_is_sound_and_exact(data: st.DataObject) -> None:
    policy = data.draw(policies())
    n = len(policy.teachers)
    passed, scores = data.draw(vectors(n))
    truth = full(policy, passed, scores)
    heard = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    errored = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    sub: dict[str, Verdict] = {}
    for i, t in enumerate(policy.teachers):
        if heard[i]:
            sub[t] = v(t, passed[i], scores[i])
        elif errored[i]:
            sub[t] = Verdict.failure(t, "boom")
    got = policy.decide(sub)
    if got is not None:
        assert got is truth  # soundness: no unheard teacher could have changed it
    else:
        # exactness: None only when the unheard teachers can still swing it either way
        unheard = [i for i, t in enumerate(policy.teachers) if not heard[i]]
        assert unheard
        best = [True if i in unheard else p for i, p in enumerate(passed)]
        best_s = [1.0 if i in unheard else s for i, s in enumerate(scores)]
        worst = [False if i in unheard else p for i, p in enumerate(passed)]
        worst_s = [0.0 if i in unheard else s for i, s in enumerate(scores)]
        assert full(policy, best, best_s) is True
        assert full(policy, worst, worst_s) is False
    if all(heard):
        assert got is truth


# --------------------------------------------------------------------------------------------
# the panel


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_panel_short_circuit_matches_full_consultation(data: st.DataObject) -> None:
    policy = data.draw(policies())
    teachers_ = policy.teachers
    n = len(teachers_)
    n_cands = data.draw(st.integers(1, 3))
    cands = [cand(i) for i in range(n_cands)]
    with_errors = data.draw(st.booleans())
    scripts: dict[str, dict[str, Outcome]] = {t: {} for t in teachers_}
    for c in cands:
        passed, scores = data.draw(vectors(n))
        errs = data.draw(st.lists(st.booleans(), min_size=n, max_size=n)) if with_errors else [False] * n
        for i, t in enumerate(teachers_):
            scripts[t][c.id] = None if errs[i] else (passed[i], scores[i])
    ranks = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    inline = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    fakes = [make_teacher(t, ranks[i], inline[i], scripts[t]) for i, t in enumerate(teachers_)]
    panel = Panel(fakes, policy)

    decisions = judge_all(panel, cands)

    for c, d in zip(cands, decisions, strict=True):
        script = {t: scripts[t][c.id] for t in teachers_}
        everything = {
            t: Verdict.failure(t, "boom") if o is None else v(t, o[0], o[1]) for t, o in script.items()
        }
        assert d.accepted == policy.decide(everything)

        called = {f.name for f in fakes if f.calls.get(c.id)}
        assert all(f.calls.get(c.id, 0) <= 1 for f in fakes)
        assert called.isdisjoint(d.saved)
        assert len(called) + len(d.saved) == n
        assert {x.teacher for x in d.verdicts} == called

        if policy.best_k is not None and d.accepted is True:
            assert d.saved == ()
            assert len(called) == n

        errored = [t for t in called if script[t] is None]
        if not errored:
            assert d.accepted is not None
        # with the errored teachers' true verdicts unknown, only the extremes matter (monotone)
        heard = {t: script[t] for t in called if script[t] is not None}
        ext = []
        for p, s in ((True, 1.0), (False, 0.0)):
            pv = {t: heard[t][0] if t in heard else p for t in teachers_}
            sv = {t: heard[t][1] if t in heard else s for t in teachers_}
            ext.append(policy.accepts(pv, sv))
        if d.accepted is None:
            assert errored and ext[0] != ext[1]
        else:
            assert ext == [d.accepted, d.accepted]

    stats = panel.stats
    assert sum(s.calls + s.saved for s in stats.values()) == n * n_cands


# --------------------------------------------------------------------------------------------
# the jury: ties, escalation, quorum, calibrated weights (issue 16)


def test_ties_rule_decides_an_even_split() -> None:
    vs = verdicts([True, True, False, False])
    assert make_policy("majority", names(4)).decide(vs) is False  # the default: a tie rejects
    assert make_policy("majority", names(4), ties="reject").decide(vs) is False
    assert make_policy("majority", names(4), ties="accept").decide(vs) is True
    # escalate: the escalate_only seats' majority breaks the tie
    esc = make_policy("majority", names(4), ties="escalate", escalate=["t3"])
    assert esc.decide(vs) is False
    assert esc.decide(verdicts([True, False, False, True])) is True
    # the short-circuit knows the rule: two passes of four with ties=accept already accept
    assert make_policy("majority", names(4), ties="accept").decide({"t0": v("t0", True), "t1": v("t1", True)}) is True
    with pytest.raises(ConfigError, match="escalate_only") as ei:
        make_policy("majority", names(4), ties="escalate")
    assert ei.value.field == "ties"
    with pytest.raises(ConfigError, match="expected one of") as ei:
        make_policy("majority", names(2), ties="coin")
    assert ei.value.field == "ties"


def test_escalation_is_skipped_when_the_base_seats_agree_firmly() -> None:
    p = make_policy("majority", ["a", "b", "strong"], escalate=["strong"], margin=0.2)
    both = {"a": v("a", True, 0.9), "b": v("b", True, 0.8)}
    assert p.decide(both) is True  # firm: mean 0.85 >= 0.5 + 0.2; strong is not needed
    assert p.decide({"a": v("a", False, 0.1), "b": v("b", False, 0.0)}) is False
    near = {"a": v("a", True, 0.7), "b": v("b", True, 0.6)}  # mean 0.65: within the margin ...
    assert p.decide(near) is True  # ... but two of three already make a majority: nothing to ask
    m = make_policy("mean_score", ["a", "b", "strong"], threshold=0.5, escalate=["strong"], margin=0.2)
    assert m.decide(both) is True
    assert m.decide(near) is None  # not firm: the mean over all three decides, strong is asked
    assert m.decide({**near, "strong": v("strong", False, 0.1)}) is False
    split = {"a": v("a", True, 0.9), "b": v("b", False, 0.1)}
    assert p.decide(split) is None
    assert p.decide({**split, "strong": v("strong", False)}) is False
    # with calibrated weights a strong judge outweighs two agreeing weak ones once escalated
    rel = Reliability({"a": tr(0.8, 0.7), "b": tr(0.8, 0.7), "strong": tr(0.97, 0.97)}, prevalence=0.5)
    w = make_policy("weighted_mean", ["a", "b", "strong"], threshold=0.5, escalate=["strong"], margin=0.2,
                    reliability=rel)
    assert w.decide({**near, "strong": v("strong", False)}) is False
    assert w.decide(both) is True and w.decide(near) is None


def tr(s: float, c: float) -> TeacherReliability:
    return TeacherReliability(Rate(s, 0, 1, 0), Rate(c, 0, 1, 0))


def test_calibrated_weights_decide_by_the_posterior() -> None:
    rel = Reliability({"best": tr(0.95, 0.95), "mid": tr(0.75, 0.75), "weak": tr(0.65, 0.65)}, prevalence=0.5)
    p = make_policy("weighted_mean", ["best", "mid", "weak"], threshold=0.5, reliability=rel)
    # log-odds weights: 2.94 > 1.10 + 0.62, so the best judge alone decides
    assert p.decide({"best": v("best", True)}) is True
    assert p.decide({"best": v("best", False)}) is False
    assert p.decide({"mid": v("mid", True), "weak": v("weak", True)}) is None
    assert p.accepts({"best": False, "mid": True, "weak": True}, {"best": 1.0, "mid": 0.0, "weak": 0.0}) is False
    strict = make_policy("weighted_mean", ["best", "mid", "weak"], threshold=0.99, reliability=rel)
    assert strict.accepts({"best": True, "mid": True, "weak": False}, dict.fromkeys(["best", "mid", "weak"], 1.0)) \
        is False  # P(good) = 0.995 * ... below 0.99 once weak fails
    assert p.rank_score({"best": v("best", True)}) == pytest.approx(0.95)
    with pytest.raises(ConfigError, match="no reliability estimate") as ei:
        make_policy("weighted_mean", ["best", "other"], threshold=0.5, reliability=rel)
    assert ei.value.field == "weights"


def test_min_successful_drops_failed_judges_but_needs_a_quorum() -> None:
    p = make_policy("majority", names(3), quorum=2)
    err = Verdict.failure("t0", "down")
    assert p.decide({"t0": err, "t1": v("t1", True), "t2": v("t2", True)}) is True  # t0 dropped
    assert p.decide({"t0": err, "t1": v("t1", True)}) is None  # one verdict: below the quorum
    assert p.decide({"t0": err, "t1": Verdict.failure("t1", "x"), "t2": v("t2", True)}) is None  # final
    # unanimous would reject on the first fail, but a quorum of 2 needs a second verdict first
    u = make_policy("unanimous", names(3), quorum=2)
    assert u.decide({"t0": v("t0", False)}) is None
    assert u.decide({"t0": v("t0", False), "t1": v("t1", True)}) is False
    assert "min_successful" in u.reason(None, {"t0": v("t0", False)})
    # without a quorum the failed judge stays unknown
    assert make_policy("majority", names(3)).decide({"t0": err, "t1": v("t1", True), "t2": v("t2", False)}) is None
    with pytest.raises(ConfigError, match="min_successful between 1 and 3") as ei:
        make_policy("majority", names(3), quorum=4)
    assert ei.value.field == "min_successful"


def test_jury_validation() -> None:
    with pytest.raises(ConfigError, match="every teacher is escalate_only"):
        make_policy("majority", ["a"], escalate=["a"])
    with pytest.raises(ConfigError, match="not a seat"):
        make_policy("majority", ["a", "b"], escalate=["c"])
    with pytest.raises(ConfigError, match=r"margin between 0 and 0\.5") as ei:
        make_policy("majority", ["a", "b"], escalate=["b"], margin=0.7)
    assert ei.value.field == "margin"
    assert make_policy("majority", ["a"]).uses_scores is False
    assert make_policy("majority", ["a", "b"], escalate=["b"]).uses_scores is True  # the margin reads scores
    assert make_policy("mean_score", ["a"], threshold=0.5).uses_scores is True


@st.composite
def jury_policies(draw: st.DrawFn, max_n: int = 6) -> Policy:
    """Any policy with any jury settings: escalation, margin, ties, quorum, calibrated weights."""
    n = draw(st.integers(1, max_n))
    teachers = names(n)
    name = draw(st.sampled_from(POLICY_NAMES))
    k = draw(st.integers(1, n)) if name == "k_of_n" else None
    threshold = draw(st.floats(0.0, 1.0)) if name in ("mean_score", "weighted_mean") else None
    rel = None
    if name == "weighted_mean" and draw(st.booleans()):
        rate = st.floats(0.0, 1.0)
        rel = Reliability({t: tr(draw(rate), draw(rate)) for t in teachers}, prevalence=draw(st.floats(0.01, 0.99)))
    weights = {t: draw(st.floats(0.01, 10.0)) for t in teachers} if name == "weighted_mean" and rel is None else None
    esc = [t for t in teachers[1:] if draw(st.booleans())] if n > 1 else []
    ties = draw(st.sampled_from(("reject", "accept", "escalate") if esc else ("reject", "accept")))
    return make_policy(name, teachers, k=k, threshold=threshold, weights=weights, reliability=rel,
                       best_k=draw(st.none() | st.integers(1, 3)), ties=ties, escalate=esc,
                       margin=draw(st.floats(0.0, 0.5)), quorum=draw(st.none() | st.integers(1, n)))


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_every_jury_rule_is_monotone_with_drop_between_fail_and_pass(data: st.DataObject) -> None:
    """The property the short-circuit rests on: per seat, fail(0) <= any verdict <= pass(1), and
    fail(0) <= dropped <= pass(1); raising a verdict never lowers the outcome."""
    policy = data.draw(jury_policies())
    n = len(policy.teachers)
    passed, scores = data.draw(vectors(n))
    present = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    base_p = {t: p for t, p, keep in zip(policy.teachers, passed, present, strict=True) if keep}
    base_s = {t: s for t, s, keep in zip(policy.teachers, scores, present, strict=True) if keep}
    j = policy.teachers[data.draw(st.integers(0, n - 1))]

    def f(state: tuple[bool, float] | None) -> bool:
        p, s = dict(base_p), dict(base_s)
        p.pop(j, None)
        s.pop(j, None)
        if state is not None:
            p[j], s[j] = state
        return policy.accepts(p, s)

    low, high = f((False, 0.0)), f((True, 1.0))
    mid = data.draw(st.tuples(st.booleans(), st.floats(0.0, 1.0)))
    if set(base_p) - {j}:  # with no seat left there is no outcome (min_successful >= 1 says so)
        assert low <= f(None) <= high
    assert low <= f(mid) <= high
    up = (True, data.draw(st.floats(mid[1], 1.0)))
    assert f(mid) <= f(up)


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_jury_decide_is_sound_and_exact(data: st.DataObject) -> None:
    """decide() on what was heard agrees with every full world that fits it; it says None only when
    some completion could still swing the outcome, or fewer than min_successful have answered."""
    policy = data.draw(jury_policies())
    n = len(policy.teachers)
    passed, scores = data.draw(vectors(n))
    failed = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    world = {t: Verdict.failure(t, "boom") if failed[i] else v(t, passed[i], scores[i])
             for i, t in enumerate(policy.teachers)}
    truth = policy.decide(world)
    heard = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    sub = {t: world[t] for i, t in enumerate(policy.teachers) if heard[i]}
    got = policy.decide(sub)
    if got is not None:
        assert got is truth
    else:
        ok = {t: x for t, x in sub.items() if x.error is None}
        unknown = [t for t in policy.teachers if t not in sub or (sub[t].error and policy.quorum is None)]
        ext = []
        for p, s in ((True, 1.0), (False, 0.0)):
            pv = {**{t: x.passed for t, x in ok.items()}, **dict.fromkeys(unknown, p)}
            sv = {**{t: x.score for t, x in ok.items()}, **dict.fromkeys(unknown, s)}
            ext.append(policy.accepts(pv, sv))
        assert ext[0] != ext[1] or (policy.quorum is not None and len(ok) < policy.quorum)


def full_consultation(panel: Panel, scripts: dict[str, dict[str, Outcome]], cid: str) -> bool | None:
    """What the panel decides when every seat is consulted, in the panel's call order: rank by rank
    (escalate_only seats last), inline seats then concurrent ones; a failed seat takes the next
    unused reserve, inline seats at once and concurrent ones after their rank, in seat order."""
    seats: dict[str, Verdict] = {}
    left = [r.name for r in panel.reserves]

    def fill(seat: str) -> None:
        while left:
            r = left.pop(0)
            o = scripts[r][cid]
            if o is not None:
                seats[seat] = v(r, o[0], o[1])
                return
        seats[seat] = Verdict.failure(seat, "boom")

    for group in panel._groups:
        for t in [t for t in group if t.inline] + [t for t in group if not t.inline]:
            o = scripts[t.name][cid]
            if o is None:
                fill(t.name)
            else:
                seats[t.name] = v(t.name, o[0], o[1])
    return panel.policy.decide(seats)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_jury_short_circuit_never_changes_a_decision(data: st.DataObject) -> None:
    """Escalation, ties, quorums, calibrated weights and reserves: the cascade decides what
    consulting every seat (and the reserves its failures need) would have decided."""
    policy = data.draw(jury_policies(max_n=5))
    seats = policy.teachers
    n = len(seats)
    reserves = [f"r{i}" for i in range(data.draw(st.integers(0, 2)))]
    n_cands = data.draw(st.integers(1, 3))
    cands = [cand(i) for i in range(n_cands)]
    scripts: dict[str, dict[str, Outcome]] = {t: {} for t in [*seats, *reserves]}
    for c in cands:
        for t in [*seats, *reserves]:
            o = data.draw(st.none() | st.tuples(st.booleans(), st.floats(0.0, 1.0)))
            scripts[t][c.id] = o
    ranks = data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))
    inline = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    fakes = [make_teacher(t, ranks[i], inline[i], scripts[t]) for i, t in enumerate(seats)]
    spares = [make_teacher(r, 9, data.draw(st.booleans()), scripts[r]) for r in reserves]
    panel = Panel(fakes, policy, reserves=spares)

    decisions = judge_all(panel, cands)

    for c, d in zip(cands, decisions, strict=True):
        assert d.accepted == full_consultation(panel, scripts, c.id)
        called = {f.name for f in fakes if f.calls.get(c.id)}
        assert all(f.calls.get(c.id, 0) <= 1 for f in [*fakes, *spares])
        assert called.isdisjoint(d.saved) and len(called) + len(d.saved) == n
        used = [r.name for r in spares if r.calls.get(c.id)]
        assert used == reserves[:len(used)]  # reserves in the order listed, each at most once
        failures = [t for t in called if scripts[t][c.id] is None]
        answered = [r for r in used if scripts[r][c.id] is not None]
        assert len(answered) <= len(failures) and (failures or not used)  # only failed seats take one
        assert {x.teacher for x in d.verdicts} == called | set(used)
        if policy.escalate and set(d.saved) & set(policy.escalate):
            # an escalate_only seat is only ever saved when the outcome did not need it
            assert d.accepted is not None
        if policy.best_k is not None and d.accepted is True:
            assert set(d.saved) <= set(policy.escalate)


@settings(max_examples=200, deadline=None)
@given(k=st.integers(1, 7), data=st.data())
def test_repeats_early_stop_never_changes_the_verdict(k: int, data: st.DataObject) -> None:
    """A seat judged k times: stopping once one side holds a strict majority of k gives the same
    passed flag as calling all k (and costs no more calls)."""
    from tgrs_agents.curation.repeats import Repeated

    outs = data.draw(st.lists(st.none() | st.tuples(st.booleans(), st.floats(0.0, 1.0)), min_size=k, max_size=k))
    c = cand(0)

    def copies() -> list[FakeTeacher]:
        return [FakeTeacher("seat", 0, {c.id: o}) for o in outs]

    async def go(early: bool) -> tuple[Verdict | None, int]:
        cs = copies()
        try:
            got = await Repeated(cs, early_stop=early).judge(c)
        except TeacherError:
            got = None
        return got, sum(x.calls.get(c.id, 0) for x in cs)

    fast, n_fast = asyncio.run(go(True))
    full, n_full = asyncio.run(go(False))
    assert n_full == k and n_fast <= k
    ok = [o for o in outs if o is not None]
    if not ok:
        assert full is None
        return
    assert full is not None and full.passed == (2 * sum(p for p, _ in ok) > len(ok))
    assert full.score == pytest.approx(sum(s for _, s in ok) / len(ok))
    if fast is None:  # the repeats it called all failed: only possible if the full run had a minority
        assert n_fast < k or not ok
    else:
        assert fast.passed == full.passed
