"""The pool stage: deduplication and the per-task cap, the filter wiring, and the files it writes."""

from __future__ import annotations

import json

import pytest

from tgrs_agents.curation.layout import LoopDir
from tgrs_agents.loop.config import FiltersConfig
from tgrs_agents.loop.pool import apply_filters, dedupe_key, pool_accepted, pool_round


def rec(i, task, expr, answer):
    return {
        "id": f"c{i}", "task_id": task, "tools": [],
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "tool_calls": [{"id": "x", "type": "function", "function": {
                "name": "calculator", "arguments": json.dumps({"expression": expr})}}]},
            {"role": "tool", "tool_call_id": "x", "content": "1"},
            {"role": "assistant", "content": f"Answer: {answer}"},
        ],
    }


def _write(path, recs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def _read(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_distinct_mode_dedupes_same_calls_and_answer_and_caps_per_task():
    # pool_mode = "distinct": the rule before the agreement pool (the default until it undid noisy panels)
    a = rec(1, "t1", "1+2", 3)
    same = rec(2, "t1", "1+2", 3)  # same tool calls and same final answer: counts once
    other_call = rec(3, "t1", "2+1", 3)
    other_answer = rec(4, "t1", "1+2", 4)
    assert dedupe_key(a) == dedupe_key(same) != dedupe_key(other_call)
    pooled = pool_accepted([], [a, same, other_call, other_answer], cap=2, mode="distinct")
    assert [r["id"] for r in pooled] == ["c1", "c3"]  # capped at 2 per task, first seen wins
    # newer rounds come first and win over older copies
    newer = rec(9, "t1", "5+5", 10)
    pooled2 = pool_accepted(pooled, [newer], cap=2, mode="distinct")
    assert [r["id"] for r in pooled2] == ["c9", "c1"]
    assert set(pooled2[0]) == {"id", "task_id", "messages", "tools"}


def test_dedupe_key_reads_calls_and_final_answer_text():
    a = rec(1, "t1", "1+2", 3)
    assert dedupe_key(a) == ("t1", 'calculator:{"expression": "1+2"}', "Answer: 3")
    parts = {**a, "messages": [*a["messages"][:-1], {"role": "assistant", "content": [
        {"type": "text", "text": "Answer: 3 "}]}]}
    assert dedupe_key(parts) == dedupe_key(a)  # content parts read as text, not as a list's repr


def test_apply_filters_without_any_configured_keeps_everything():
    recs = [rec(i, "t1", "1+2", 3) for i in range(3)]
    kept, aside = apply_filters(recs, FiltersConfig())
    assert kept == recs and aside == []


def test_length_bounds_load_the_tokenizer_only_when_configured():
    class Chars:  # no chat template: one token per character of the assistant's texts and calls (41 and 49)
        chat_template = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(text)}

    loads = []

    def tokenizer():
        loads.append(1)
        return Chars()

    recs = [rec(1, "t1", "1+2", 3), rec(2, "t2", "1+2", 123456789)]
    apply_filters(recs, FiltersConfig(near_dup_threshold=0.99), tokenizer=tokenizer)
    assert loads == []
    kept, aside = apply_filters(recs, FiltersConfig(max_response_tokens=45), tokenizer=tokenizer)
    assert loads == [1]
    assert [r["id"] for r in kept] == ["c1"]
    assert aside == [{"id": "c2", "task_id": "t2", "filter": "length", "reason": "49 tokens > max_tokens 45"}]


def test_pool_round_filters_then_pools_with_the_previous_round(tmp_path):
    run = LoopDir(tmp_path / "run")
    # round 1: task t1 solved 2 of 4 (kept by the band), t2 solved 4 of 4 (always solved: set aside)
    acc = [rec(1, "t1", "1+2", 3), rec(2, "t1", "1+2", 3), rec(3, "t2", "5+5", 10), rec(4, "t2", "5+5", 10),
           rec(5, "t2", "5+5", 10), rec(6, "t2", "5+5", 10)]
    rej = [rec(7, "t1", "1+3", 4), rec(8, "t1", "1+3", 5)]
    _write(run.round(1).curate.jsonl("accepted"), acc)
    _write(run.round(1).curate.jsonl("rejected"), rej)
    f = FiltersConfig(difficulty_lo=0.0, near_dup_threshold=0.9)
    out = pool_round(run, 1, "curate/accepted.jsonl", f, cap=4)
    assert (out.pooled, out.new_accepted, out.set_aside_by_filters) == (1, 6, 5)
    aside = _read(run.round(1).set_aside)
    assert sorted(a["id"] for a in aside if a["filter"] == "difficulty") == ["c3", "c4", "c5", "c6"]
    assert [a["id"] for a in aside if a["filter"] == "near_duplicate"] == ["c2"]
    # round 2 pools its new data first, then round 1's pool
    _write(run.round(2).file("accepted.jsonl"), [rec(9, "t1", "9+9", 18)])
    out2 = pool_round(run, 2, "accepted.jsonl", FiltersConfig(), cap=4)
    assert [r["id"] for r in _read(run.round(2).pool)] == ["c9", "c1"]
    assert out2.to_json() == {"pooled": 2, "new_accepted": 1, "set_aside_by_filters": 0, "wall_s": 0.0}


# ----- the agreement pool: it never lowers the panel's precision ---------------------------------------

def scored(i, task, answer, score=1.0):
    return {**rec(i, task, "1+2", answer), "score": score}


def test_agree_mode_keeps_the_agreed_answer_whole_and_cuts_the_scattered_ones():
    t1 = [scored(1, "t1", 3), scored(2, "t1", 3), scored(3, "t1", 4), scored(4, "t1", 3), scored(5, "t1", 3),
          scored(6, "t1", 3), scored(7, "t1", 7)]  # five agree on 3: all kept (above the cap of 4), 4 and 7 cut
    t2 = [scored(10, "t2", 9, 0.5), scored(11, "t2", 10), scored(12, "t2", 8, 0.6), scored(13, "t2", 10),
          scored(14, "t2", 7, 0.9)]  # two agree on 10; then the best-scored of the rest up to the cap
    pooled = pool_accepted([], t1 + t2, cap=4)
    assert [r["id"] for r in pooled] == ["c1", "c2", "c4", "c5", "c6", "c11", "c13", "c14", "c12"]
    assert pooled[0]["score"] == 1.0
    # duplicates are kept: identical right answers are what the student and the panel agree on
    assert len({json.dumps(r["messages"]) for r in pooled[:5]}) == 1
    # under the cap nothing is cut; a later round's rows come first, the agreed group sizes the task
    small = pool_accepted([], [scored(20, "t3", 1), scored(21, "t3", 2)], cap=4)
    assert [r["id"] for r in small] == ["c20", "c21"]
    later = pool_accepted(pooled, [scored(30, "t1", 3), scored(31, "t1", 3)], cap=4)
    assert [r["id"] for r in later if r["task_id"] == "t1"] == ["c30", "c31", "c1", "c2"]  # max(4, 2) rows


def test_pool_rows_carry_tool_call_arguments_as_objects():
    # the form TRL's SFTTrainer and chat templates render (tests/loop/test_rendering.py)
    for mode in ("agree", "distinct"):
        (row,) = pool_accepted([], [rec(1, "t1", "1+2", 3)], cap=4, mode=mode)
        call = row["messages"][1]["tool_calls"][0]["function"]
        assert call["arguments"] == {"expression": "1+2"}
        assert row["messages"][1]["content"] == ""  # None dropped; a call's empty text is ""


def noisy_candidates(n_tasks=160, n=8, seed=0):
    """Calculator trajectories whose per-task accuracy varies as a weak student's does (Beta(0.6, 1.4))."""
    import random

    from tgrs_agents.tasks.arithmetic_data import make_problem, trajectory

    rng, out = random.Random(seed), []
    for t in range(n_tasks):
        expr, value = make_problem(rng)
        acc = rng.betavariate(0.6, 1.4)
        for k in range(n):
            flavour = "good" if rng.random() < acc else rng.choice(("wrong_tool", "wrong_copy"))
            rec_ = trajectory(t * n + k, rng, task_id=f"task-{t}", flavour=flavour, expr=expr, value=value)
            out.append(rec_)
    return out


def precision(rows, truth):
    return sum(truth[r["id"]] for r in rows) / len(rows)


@pytest.mark.parametrize("judges,policy", [(1, "unanimous"), (3, "majority"), (3, "unanimous")])
def test_noisy_panel_pool_is_no_less_precise_than_what_the_panel_accepted(tmp_path, judges, policy):
    import asyncio

    from tgrs_agents.curation.panel_file import load_panel
    from tgrs_agents.curation.run import CurateOptions, curate
    from tgrs_agents.tasks.noisy import answer_correct, write_noisy_panel
    from tgrs_agents.types import Candidate

    cands = noisy_candidates()
    truth = {c["id"]: answer_correct(Candidate.model_validate(c)) for c in cands}
    data = tmp_path / "candidates.jsonl"
    _write(data, cands)
    panel = load_panel(write_noisy_panel(tmp_path / "panel", judges=judges, flip=0.25, policy=policy))
    run = LoopDir(tmp_path / "run")
    asyncio.run(curate(data, panel, run.round(1).curate.dir, options=CurateOptions(cache=False)))
    accepted = _read(run.round(1).curate.jsonl("accepted"))
    pool_round(run, 1, "curate/accepted.jsonl", FiltersConfig(), cap=4)
    pooled = _read(run.round(1).pool)
    assert 0.45 < precision(accepted, truth) < 0.97  # the panel is really noisy (one judge ~0.56, 3/3 ~0.92)
    assert precision(pooled, truth) >= precision(accepted, truth) - 0.01
    if policy != "unanimous":  # the rule it replaces lost a fifth of the precision or more
        old = pool_accepted([], accepted, 4, mode="distinct")
        assert precision(old, truth) < precision(accepted, truth) - 0.1


def test_the_control_pools_every_row_blind_to_content():
    rows = [scored(1, "t1", 3), scored(2, "t1", 3), scored(3, "t1", 4), scored(4, "t1", 5), scored(5, "t1", 6),
            scored(6, "t1", 7, 0.0)]
    assert [r["id"] for r in pool_accepted([], rows, cap=4, mode="all")] == ["c1", "c2", "c3", "c4", "c5", "c6"]
    later = pool_accepted(rows, [scored(9, "t1", 1), scored(8, "t1", 2)], cap=4, mode="all")
    assert [r["id"] for r in later] == ["c9", "c8", "c1", "c2"]  # newest first, then input order, up to the cap


def test_the_accept_all_arm_pools_with_the_blind_rule(tmp_path):
    from tgrs_agents.loop.config import LoopConfig
    from tgrs_agents.loop.rounds import ExpertIteration

    run = tmp_path / "run"
    recs = [rec(i, "t1", "1+2", 3 if i < 6 else i) for i in range(8)]  # six agree on 3
    _write(run / "round-1" / "accepted.jsonl", recs)
    loop = ExpertIteration(LoopConfig(base_dir=str(tmp_path)), run, accept_all=True, log=lambda s: None)
    assert loop.pool(1, "accepted.jsonl").pooled == 8  # "agree" would keep the six
    filtered = ExpertIteration(LoopConfig(base_dir=str(tmp_path)), tmp_path / "f", log=lambda s: None)
    _write(tmp_path / "f" / "round-1" / "curate" / "accepted.jsonl", recs)
    assert filtered.pool(1, "curate/accepted.jsonl").pooled == 6
