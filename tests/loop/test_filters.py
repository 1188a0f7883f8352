"""Data filters: each boundary inclusive or exclusive exactly as documented, nothing dropped silently."""

from __future__ import annotations

import json

import pytest

from tgrs_agents.loop.filters import (
    FilterResult,
    cap_per_task,
    count_chars,
    difficulty_band,
    jaccard,
    length_bounds,
    lsh_shape,
    near_duplicates,
    pass_rates,
    pass_rates_from_run,
    response_tokens,
    shingles,
    trajectory_text,
)


def rec(i: int, task: str = "t", answer: str = "Answer: 65", expr: str = "59-7+13", score: float | None = None):
    r = {
        "id": f"c{i}",
        "task_id": task,
        "messages": [
            {"role": "user", "content": "What is 59 - 7 + 13?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "k", "type": "function", "function": {
                "name": "calculator", "arguments": json.dumps({"expression": expr})}}]},
            {"role": "tool", "tool_call_id": "k", "content": "65"},
            {"role": "assistant", "content": answer},
        ],
    }
    if score is not None:
        r["score"] = score
    return r


def ids(rows):
    return [r["id"] for r in rows]


def assert_partition(res: FilterResult, rows):
    """Every input record is either kept or set aside, once, with a reason."""
    assert sorted(ids(res.kept) + [s["record"]["id"] for s in res.set_aside]) == sorted(ids(rows))
    assert all(s["reason"] and s["filter"] for s in res.set_aside)


# ----- difficulty band ----------------------------------------------------------------------------

def test_pass_rates_from_pairs_and_records():
    rates = pass_rates([("a", True), ("a", False), ("a", False), ("a", True), ("b", False)])
    assert rates == {"a": 0.5, "b": 0.0}
    assert pass_rates([{"task_id": "x", "label": 1}, {"task_id": "x", "accepted": False}]) == {"x": 0.5}


def test_difficulty_band_drops_never_and_always_solved_by_default():
    rows = [rec(i, task=t) for i, t in enumerate(["zero", "low", "mid", "high", "one", "unknown"])]
    rates = {"zero": 0.0, "low": 1 / 8, "mid": 0.5, "high": 7 / 8, "one": 1.0}
    res = difficulty_band(rows, rates)
    assert ids(res.kept) == ["c1", "c2", "c3"]
    why = {s["record"]["task_id"]: s["reason"] for s in res.set_aside}
    assert "never solved" in why["zero"] and "always solved" in why["one"] and "no pass rate" in why["unknown"]
    assert_partition(res, rows)


def test_difficulty_band_bounds_are_inclusive():
    rows = [rec(i, task=f"t{i}") for i in range(5)]
    rates = {"t0": 0.24, "t1": 0.25, "t2": 0.5, "t3": 0.75, "t4": 0.76}
    res = difficulty_band(rows, rates, lo=0.25, hi=0.75)
    assert ids(res.kept) == ["c1", "c2", "c3"]  # 0.25 and 0.75 themselves are inside
    assert all("outside [0.25, 0.75]" in s["reason"] for s in res.set_aside)


def test_difficulty_band_keep_extremes():
    rows = [rec(0, task="zero"), rec(1, task="one")]
    res = difficulty_band(rows, {"zero": 0.0, "one": 1.0}, keep_extremes=True)
    assert ids(res.kept) == ["c0", "c1"]
    res = difficulty_band(rows, {"zero": 0.0, "one": 1.0}, lo=0.0, hi=0.9, keep_extremes=True)
    assert ids(res.kept) == ["c0"]
    with pytest.raises(ValueError):
        difficulty_band(rows, {}, lo=0.6, hi=0.5)


def test_pass_rates_from_a_curate_run(tmp_path):
    (tmp_path / "accepted.jsonl").write_text("".join(json.dumps(rec(i, task="a")) + "\n" for i in range(3)))
    (tmp_path / "rejected.jsonl").write_text(json.dumps(rec(9, task="a")) + "\n" + json.dumps(rec(8, task="b")) + "\n")
    assert pass_rates_from_run(tmp_path) == {"a": 0.75, "b": 0.0}


# ----- length bounds ------------------------------------------------------------------------------

def test_length_bounds_are_inclusive_at_both_ends():
    rows = [rec(i, answer="Answer: " + "9" * i) for i in range(6)]
    n = {r["id"]: count_chars(r) for r in rows}
    lo, hi = n["c1"], n["c4"]
    res = length_bounds(rows, min_tokens=lo, max_tokens=hi, count=count_chars)
    assert ids(res.kept) == ["c1", "c2", "c3", "c4"]
    reasons = {s["record"]["id"]: s["reason"] for s in res.set_aside}
    assert f"< min_tokens {lo}" in reasons["c0"] and f"> max_tokens {hi}" in reasons["c5"]
    assert ids(length_bounds(rows, max_tokens=hi, count=count_chars).kept) == ["c0", "c1", "c2", "c3", "c4"]
    assert ids(length_bounds(rows, min_tokens=lo, count=count_chars).kept) == ["c1", "c2", "c3", "c4", "c5"]
    with pytest.raises(ValueError):
        length_bounds(rows, min_tokens=5, max_tokens=4, count=count_chars)
    with pytest.raises(ValueError):
        length_bounds(rows, max_tokens=4)  # neither tokenizer nor count


def test_response_tokens_with_the_tiny_template():
    from tgrs_agents.student.tiny import train_tokenizer

    tok = train_tokenizer(["What is 59 - 7 + 13?"])
    r = rec(0)
    # assistant tokens: "<|assistant|>" is outside the generation span; "<|call|>calculator 59-7+13<|end|>"
    # and "Answer: 65<|end|>" are inside (one token per character, special tokens one each)
    expected = (1 + len("calculator 59-7+13") + 1) + (len("Answer: 65") + 1)
    assert response_tokens(r, tok) == expected
    res = length_bounds([r], max_tokens=expected, tokenizer=tok)
    assert ids(res.kept) == ["c0"]
    assert ids(length_bounds([r], max_tokens=expected - 1, tokenizer=tok).kept) == []


# ----- near duplicates ----------------------------------------------------------------------------

def test_jaccard_threshold_is_inclusive():
    a, b = rec(0, answer="Answer: 65"), rec(1, answer="Answer:  65 ")  # same after normalisation
    c = rec(2, answer="Answer: 65 (by the calculator)")
    sim = jaccard(shingles(trajectory_text(a), 5), shingles(trajectory_text(c), 5))
    assert 0 < sim < 1
    assert trajectory_text(a) == trajectory_text(b)
    res = near_duplicates([a, b, c], threshold=sim)  # exactly at the threshold: a duplicate
    assert ids(res.kept) == ["c0"]
    assert "with c0" in res.set_aside[0]["reason"]
    res = near_duplicates([a, b, c], threshold=min(1.0, sim + 1e-9))  # just above: c is kept
    assert ids(res.kept) == ["c0", "c2"]
    assert_partition(res, [a, b, c])


def test_near_duplicates_scope_task_compares_within_a_task_only():
    a, b = rec(0, task="x"), rec(1, task="y")
    assert ids(near_duplicates([a, b], threshold=0.9).kept) == ["c0", "c1"]
    assert ids(near_duplicates([a, b], threshold=0.9, scope="all").kept) == ["c0"]


def test_near_duplicates_keep_the_first_of_a_group_and_distinct_ones():
    rows = [rec(0), rec(1, expr="12+30-5", answer="Answer: 37"), rec(2), rec(3, answer="answer: 65")]
    res = near_duplicates(rows, threshold=0.95)
    assert ids(res.kept) == ["c0", "c1"]  # c2 equals c0; c3 differs only in case


def test_minhash_lsh_finds_what_exact_comparison_finds():
    import random

    rng = random.Random(0)
    rows = []
    for i in range(60):
        base = rng.randint(10, 99)
        text = f"Answer: {base} " + " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(12))
        rows.append(rec(i, task=f"t{i}", answer=text))
        if i % 3 == 0:  # a light edit of it elsewhere
            rows.append(rec(100 + i, task=f"u{i}", answer=text + "!"))
    exact = set()
    sets = [shingles(trajectory_text(r), 5) for r in rows]
    kept: list[int] = []
    for i in range(len(rows)):
        if any(jaccard(sets[i], sets[j]) >= 0.8 for j in kept):
            exact.add(rows[i]["id"])
        else:
            kept.append(i)
    res = near_duplicates(rows, threshold=0.8, scope="all")
    assert {s["record"]["id"] for s in res.set_aside} == exact
    assert len(exact) >= 15
    bands, r = lsh_shape(0.8, 128)
    assert bands * r == 128 and 1 - (1 - 0.8 ** r) ** bands >= 0.99


# ----- cap per task -------------------------------------------------------------------------------

def test_cap_per_task_keeps_the_first_cap_records():
    rows = [rec(i, task="a" if i % 3 else "b") for i in range(9)]  # a: 1 2 4 5 7 8, b: 0 3 6
    res = cap_per_task(rows, cap=2)
    assert ids(res.kept) == ["c0", "c1", "c2", "c3"]
    assert len(res.set_aside) == 5 and all("already has 2" in s["reason"] for s in res.set_aside)
    assert ids(cap_per_task(rows, cap=0).kept) == []
    assert len(cap_per_task(rows, cap=6).kept) == 9


def test_cap_per_task_by_score_keeps_the_best_ties_in_input_order():
    rows = [rec(0, score=0.5), rec(1, score=0.9), rec(2, score=0.5), rec(3, score=0.9), rec(4)]
    assert ids(cap_per_task(rows, cap=3, by="score").kept) == ["c0", "c1", "c3"]  # output in input order


def test_filters_chain_and_count_reasons():
    rows = [rec(i, task=f"t{i % 3}") for i in range(9)]
    rates = {"t0": 0.5, "t1": 1.0, "t2": 0.25}
    res = difficulty_band(rows, rates).then(near_duplicates, threshold=0.9).then(cap_per_task, cap=1)
    assert ids(res.kept) == ["c0", "c2"]
    assert res.reasons() == {"difficulty": 3, "near_duplicate": 4}
    assert_partition(res, rows)
