"""Acceptance policies, best-k selection, and the panel's exact short-circuit."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tgrs_agents.curate.panel import Panel
from tgrs_agents.curate.policy import POLICY_NAMES, Policy, make_policy, select_best_k
from tgrs_agents.errors import ConfigError, TeacherError
from tgrs_agents.teachers.base import Teacher, TeacherConfig
from tgrs_agents.types import Candidate, Verdict

# --------------------------------------------------------------------------------------------
# helpers


def names(n: int) -> list[str]:
    return [f"t{i}" for i in range(n)]


def v(teacher: str, passed: bool, score: float | None = None) -> Verdict:
    return Verdict(teacher=teacher, passed=passed, score=(1.0 if passed else 0.0) if score is None else score)


def verdicts(passed: list[bool], scores: list[float] | None = None) -> dict[str, Verdict]:
    scores = scores if scores is not None else [1.0 if p else 0.0 for p in passed]
    return {f"t{i}": v(f"t{i}", p, s) for i, (p, s) in enumerate(zip(passed, scores, strict=True))}


def full(policy: Policy, passed: list[bool], scores: list[float] | None = None) -> bool:
    vs = verdicts(passed, scores)
    return policy.accepts({t: x.passed for t, x in vs.items()}, {t: x.score for t, x in vs.items()})


def cand(i: int = 0, task: str = "task") -> Candidate:
    return Candidate(id=f"c{i}", task_id=task, messages=[{"role": "user", "content": "q"}])


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


Outcome = tuple[bool, float] | None  # None: the teacher raises TeacherError


class FakeTeacher(Teacher):
    """Returns a scripted verdict per candidate id and counts its calls."""

    inline = False

    def __init__(self, name: str, rank: int, script: dict[str, Outcome]) -> None:
        super().__init__(TeacherConfig(name=name, kind="fake", cost_rank=rank))
        self.script = script
        self.calls: dict[str, int] = {}

    async def judge(self, candidate: Candidate) -> Verdict:
        self.calls[candidate.id] = self.calls.get(candidate.id, 0) + 1
        if not self.inline:
            await asyncio.sleep(0)
        out = self.script[candidate.id]
        if out is None:
            raise TeacherError("scripted failure", teacher=self.name)
        return Verdict(teacher=self.name, passed=out[0], score=out[1])


class InlineFake(FakeTeacher):
    inline = True


def make_teacher(name: str, rank: int, inline: bool, script: dict[str, Outcome]) -> FakeTeacher:
    return (InlineFake if inline else FakeTeacher)(name, rank, script)


def judge_all(panel: Panel, cands: list[Candidate]) -> list:
    async def go() -> list:
        return [(await panel.judge(c))[0] for c in cands]

    return asyncio.run(go())


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
