"""Agreement statistics for the report, against hand-computed values: Cohen's kappa, Krippendorff's
alpha (nominal), percentiles, pairwise kappa on shared items and the teacher table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tgrs_agents.report.agreement import (
    MISSING,
    cohen_kappa,
    krippendorff_alpha_nominal,
    pairwise,
    panel_alpha,
    percentiles,
    teacher_table,
)

N = None  # a missing value


def test_cohen_kappa_hand_computed() -> None:
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.
    # p_o = 35/50 = .7; p_e = .5 * .6 + .5 * .4 = .5; kappa = (.7 - .5) / (1 - .5) = .4
    a = [1] * 20 + [1] * 5 + [0] * 10 + [0] * 15
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    # p_o = 3/4; p_e = .5 * .25 + .5 * .75 = .5; kappa = .25 / .5 = .5
    assert cohen_kappa([1, 1, 0, 0], [1, 0, 0, 0]) == pytest.approx(0.5)
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)  # p_o = 0, p_e = .5
    assert cohen_kappa([True, False, True], [True, False, True]) == pytest.approx(1.0)
    # three categories: p_o = 4/6; pA = (2, 2, 2)/6, pB = (3, 1, 2)/6; p_e = (6 + 2 + 4)/36 = 1/3
    # kappa = (2/3 - 1/3) / (2/3) = .5
    assert cohen_kappa(["a", "a", "b", "b", "c", "c"], ["a", "a", "a", "b", "c", "b"]) == pytest.approx(0.5)
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1]))  # p_e = 1: undefined
    assert math.isnan(cohen_kappa([], []))


def test_cohen_kappa_is_symmetric_and_refuses_unequal_lengths() -> None:
    # a category only one rater used still counts: p_o = 2/4; pA = (2, 2, 0)/4, pB = (1, 2, 1)/4
    # p_e = (2 + 4 + 0)/16 = 3/8; kappa = (1/2 - 3/8) / (5/8) = .2
    a, b = [0, 0, 1, 1], [0, 1, 1, 2]
    assert cohen_kappa(a, b) == pytest.approx(0.2) == cohen_kappa(b, a)
    with pytest.raises(ValueError, match="different numbers of items"):
        cohen_kappa([1, 0, 1], [1, 0])


def test_krippendorff_alpha_hand_computed() -> None:
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 coders, 12 units, missing
    # values; nominal alpha = 0.743.
    data = [[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
            [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]
    assert krippendorff_alpha_nominal(data) == pytest.approx(0.743, abs=5e-4)
    # Two raters, units (1,1) (1,0) (0,0) (0,0): o00 = 4, o01 = o10 = 1, o11 = 2; n0 = 5, n1 = 3, n = 8
    # alpha = 1 - (n - 1) * (o01 + o10) / (2 * n0 * n1) = 1 - 7 * 2 / 30 = 16/30
    binary = [[1, 1, 0, 0], [1, 0, 0, 0]]
    assert krippendorff_alpha_nominal(binary) == pytest.approx(16 / 30)
    # a unit with one value is not pairable and changes nothing
    assert krippendorff_alpha_nominal([[1, 1, 0, 0, 1], [1, 0, 0, 0, N]]) == pytest.approx(16 / 30)
    assert krippendorff_alpha_nominal([[1, 0, 1], [1, 0, 1], [1, N, 1]]) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha_nominal([[1, 1], [1, 1]]))  # one category: undefined
    assert math.isnan(krippendorff_alpha_nominal([[1, N], [N, 0]]))  # nothing pairable


def test_krippendorff_alpha_three_raters_hand_computed() -> None:
    # units (1,1,1) (1,1,0) (0,0,0); each pair in a unit of 3 values weighs 1/(3-1):
    # o11 = 6/2 + 2/2 = 4, o10 = o01 = 2/2 = 1, o00 = 6/2 = 3; n1 = 5, n0 = 4, n = 9
    # alpha = 1 - (n - 1) * (o01 + o10) / (2 * n0 * n1) = 1 - 8 * 2 / 40 = .6
    three = [[1, 1, 0], [1, 1, 0], [1, 0, 0]]
    assert krippendorff_alpha_nominal(three) == pytest.approx(0.6)
    assert krippendorff_alpha_nominal(np.array(three, dtype=float)[::-1, ::-1]) == pytest.approx(0.6)
    nan_form = np.array([[1, 1, 0, np.nan], [1, 1, 0, 1], [1, 0, 0, np.nan]])
    assert krippendorff_alpha_nominal(nan_form) == pytest.approx(0.6)  # NaN is missing, as None is
    with pytest.raises(ValueError, match="2-d"):
        krippendorff_alpha_nominal([1, 0, 1])


def test_percentiles() -> None:
    assert percentiles(range(1, 101)) == pytest.approx([50.5, 90.1, 99.01])
    assert percentiles([]) == [None, None, None]


def test_pairwise_and_teacher_table_on_shared_items() -> None:
    m = -1
    labels = np.array([[1, 1, 0, 0, 1], [1, 0, 0, 0, m], [m, 1, m, m, 1]], dtype=np.int8)
    panel = np.array([1, 0, 0, 0, 1], dtype=np.int8)
    kappa, n = pairwise(labels, panel)
    assert n[0].tolist() == [5, 4, 2, 5]
    assert kappa[0, 1] == pytest.approx(0.5)  # the hand-computed pair above
    assert kappa[1, 3] == pytest.approx(1.0)  # teacher 1 agrees with the panel on its 4 items
    assert math.isnan(kappa[0, 2])  # both constant (1, 1) on their 2 shared items
    summaries = [{"teachers": {"format": {"calls": 5, "cache_hits": 1, "calls_saved": 0, "cost_usd": 0.5}}},
                 {"teachers": {"format": {"calls": 2, "cache_hits": 0, "calls_saved": 3, "cost_usd": 0.25}}}]
    t = teacher_table(["format", "answer", "consistent"], labels, panel, ["answer", "answer", "best_k"],
                      {"format": [0.1, 0.2, 0.3]}, summaries)
    fmt, ans = t["rows"][0], t["rows"][1]
    assert (fmt["calls"], fmt["cache_hits"], fmt["calls_saved"], fmt["cost_usd"]) == (7, 1, 3, 0.75)
    assert fmt["latency_s"] == pytest.approx([0.2, 0.28, 0.298])
    assert ans["veto_share"] == pytest.approx(2 / 3) and fmt["veto_share"] == 0
    assert t["other_vetoes"] == {"best_k": 1}
    assert fmt["pass_rate"] == pytest.approx(0.6)


def test_pairwise_with_no_shared_items_is_undefined_not_zero() -> None:
    m = MISSING
    labels = np.array([[1, 0, m, m], [m, m, 1, 0]], dtype=np.int8)
    kappa, n = pairwise(labels, np.full(4, m, dtype=np.int8))
    assert n.tolist() == [[2, 0, 0], [0, 2, 0]]
    assert kappa[0, 0] == pytest.approx(1.0) and kappa[1, 1] == pytest.approx(1.0)
    assert np.isnan(kappa[0, 1]) and np.isnan(kappa[1, 0]) and np.isnan(kappa[:, 2]).all()


def test_teacher_table_alpha_undecided_vetoes_and_unjudged_teachers() -> None:
    m = MISSING
    # the three-rater example above (alpha .6) plus a teacher that judged nothing
    labels = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0], [m, m, m]], dtype=np.int8)
    panel = np.array([1, 0, 0], dtype=np.int8)
    assert panel_alpha(labels) == pytest.approx(0.6)
    t = teacher_table(["a", "b", "c", "idle"], labels, panel, ["c", None], {}, [])
    assert t["alpha"] == 0.6 and t["candidates"] == 3 and t["rejections"] == 2
    assert t["other_vetoes"] == {"(none)": 1}  # a rejection no single teacher decided
    idle = t["rows"][3]
    assert idle["pass_rate"] is None and idle["latency_s"] == [None, None, None]
    assert idle["kappa"] == [None] * 5 and idle["kappa_n"] == [0] * 5
    assert t["rows"][2]["veto_share"] == pytest.approx(0.5) and t["rows"][2]["calls"] == 0
    assert t["rows"][0]["kappa"][1] == 1.0 and t["rows"][0]["kappa"][4] == pytest.approx(0.4)  # vs panel


def test_panel_alpha_a_chunk_at_a_time_equals_the_whole_array() -> None:
    rng = np.random.default_rng(11)
    truth = rng.random(5_000) < 0.6
    labels = np.stack([np.where(rng.random(5_000) < 0.85, truth, ~truth) for _ in range(3)]).astype(np.int8)
    labels[rng.random(labels.shape) < 0.3] = MISSING  # not asked, or an error
    whole = krippendorff_alpha_nominal(np.where(labels == MISSING, np.nan, labels.astype(float)))
    assert 0.3 < whole < 0.9
    for chunk in (1, 7, 1000, 1 << 16):
        assert panel_alpha(labels, chunk=chunk) == pytest.approx(whole, rel=1e-12)
    assert math.isnan(panel_alpha(np.full((2, 10), MISSING, np.int8)))
    assert math.isnan(panel_alpha(np.ones((2, 10), np.int8)))  # one category: undefined
