"""Expert iteration: pooling rules, pass@k, and a reduced demo run end to end on CPU."""

import json
import time

import pytest

from tgrs_agents.loop import ExpertIteration, dedupe_key, pass_at_k, pool_accepted
from tgrs_agents.runconfig import LoopConfig, load_run_config


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


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(8, 0, 1) == 0.0
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - 15 / 70)


def test_pool_dedupes_same_calls_and_answer_and_caps_per_task():
    a = rec(1, "t1", "1+2", 3)
    same = rec(2, "t1", "1+2", 3)  # same tool calls and same final answer: counts once
    other_call = rec(3, "t1", "2+1", 3)
    other_answer = rec(4, "t1", "1+2", 4)
    assert dedupe_key(a) == dedupe_key(same) != dedupe_key(other_call)
    pooled = pool_accepted([], [a, same, other_call, other_answer], cap=2)
    assert [r["id"] for r in pooled] == ["c1", "c3"]  # capped at 2 per task, first seen wins
    # newer rounds come first and win over older copies
    newer = rec(9, "t1", "5+5", 10)
    pooled2 = pool_accepted(pooled, [newer], cap=2)
    assert [r["id"] for r in pooled2] == ["c9", "c1"]
    assert set(pooled2[0]) == {"id", "task_id", "messages", "tools"}


def test_run_config_errors_name_file_and_field(tmp_path):
    from tgrs_agents.errors import ConfigError

    p = tmp_path / "run.toml"
    p.write_text("rounds = 2\n[generate]\nn = 0\n")
    with pytest.raises(ConfigError) as ei:
        load_run_config(p)
    assert str(p) in str(ei.value) and "generate.n" in str(ei.value)
    p.write_text("rounds = 2\n[sft]\nstepz = 3\n")
    with pytest.raises(ConfigError, match="sft.stepz"):
        load_run_config(p)


@pytest.mark.slow
def test_reduced_demo_improves_pass_at_1_and_resumes(tmp_path):
    cfg = LoopConfig(
        rounds=2, eval_k=8,
        tasks={"n_train": 64, "n_eval": 32},
        sft={"steps": 60},
        base_dir=str(tmp_path),
    )
    logs: list[str] = []
    out = tmp_path / "run"
    summary = ExpertIteration(cfg, out, log=logs.append).run()
    rounds = summary["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    before, after = rounds[0]["pass@1"], rounds[-1]["pass@1"]
    assert after > before, f"pass@1 did not rise: {before} -> {after}"
    assert 0 < rounds[1]["acceptance_rate"] < 1  # the panel really filtered
    assert (out / "round-2" / "model" / "config.json").exists()
    assert (out / "round-1" / "curate" / "accepted.jsonl").exists()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["rounds"][-1]["pass@1"] == after
    # a re-run on the same directory resumes at the last finished stage: nothing is redone
    t0 = time.perf_counter()
    again = ExpertIteration(cfg, out, log=logs.append).run()
    assert time.perf_counter() - t0 < 30
    assert [r["pass@1"] for r in again["rounds"]] == [r["pass@1"] for r in rounds]
