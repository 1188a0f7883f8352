"""Expert iteration: pooling rules, pass@k, and a reduced demo run end to end on CPU."""

import json
import time

import pytest

from tgrs_agents.loop.config import LoopConfig, load_run_config
from tgrs_agents.loop.rounds import ExpertIteration, dedupe_key, pass_at_k, pool_accepted


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
    with pytest.raises(ConfigError, match=r"sft\.stepz"):
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


def _write(path, recs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_pool_applies_configured_filters_and_records_what_it_set_aside(tmp_path):
    # round 1: task t1 solved 2 of 4 (kept by the band), t2 solved 4 of 4 (always solved: set aside)
    acc = [rec(1, "t1", "1+2", 3), rec(2, "t1", "1+2", 3), rec(3, "t2", "5+5", 10), rec(4, "t2", "5+5", 10),
           rec(5, "t2", "5+5", 10), rec(6, "t2", "5+5", 10)]
    rej = [rec(7, "t1", "1+3", 4), rec(8, "t1", "1+3", 5)]
    _write(tmp_path / "run" / "round-1" / "curate" / "accepted.jsonl", acc)
    _write(tmp_path / "run" / "round-1" / "curate" / "rejected.jsonl", rej)
    cfg = LoopConfig(base_dir=str(tmp_path), filters={"difficulty_lo": 0.0, "near_dup_threshold": 0.9})
    loop = ExpertIteration(cfg, tmp_path / "run", log=lambda s: None)
    out = loop.pool(1, {"accepted_file": "curate/accepted.jsonl"})
    pooled = [json.loads(x) for x in (tmp_path / "run" / "round-1" / "pool.jsonl").read_text().splitlines()]
    aside = [json.loads(x) for x in (tmp_path / "run" / "round-1" / "set_aside.jsonl").read_text().splitlines()]
    assert {r["task_id"] for r in pooled} == {"t1"}
    assert {a["filter"] for a in aside} == {"difficulty", "near_duplicate"}
    assert sorted(a["id"] for a in aside if a["filter"] == "difficulty") == ["c3", "c4", "c5", "c6"]
    assert [a["id"] for a in aside if a["filter"] == "near_duplicate"] == ["c2"]  # identical to c1
    assert out["set_aside_by_filters"] == 5 and out["pooled"] == 1


def test_student_placeholder_points_at_the_rounds_checkpoint(tmp_path):
    from tgrs_agents.curate.panel_file import panel_from_dict

    panel = panel_from_dict({"teacher": [
        {"name": "a", "kind": "final_answer"},
        {"name": "fit", "kind": "student_compat", "model": "{student}"},
    ]}, base_dir=tmp_path)
    swapped = ExpertIteration.student_panel(panel, tmp_path / "round-2" / "model")
    fit = next(t for t in swapped.teachers if t.name == "fit")
    assert fit.model == str(tmp_path / "round-2" / "model")
    assert next(t for t in panel.teachers if t.name == "fit").model == "{student}"


def test_refine_stage_records_choices_and_feeds_the_pool(tmp_path):
    pytest.importorskip("torch")
    import random as _random

    from tgrs_agents.loop.refine import PromptRefiner
    from tgrs_agents.student.tiny import build_model, save, train_tokenizer
    from tgrs_agents.tasks.arithmetic_data import trajectory

    class Checked(PromptRefiner):  # appends a word to the final answer, so the test knows the rewrite
        def __init__(self):
            super().__init__(name="checked", target="response")

        async def ask(self, prompt: str) -> str:
            final = prompt.split("<final>\n", 1)[1].split("\n</final>", 1)[0]
            return final + " checked"

    run = tmp_path / "run"
    recs = [trajectory(i, _random.Random(i)) for i in range(6)]
    _write(run / "round-1" / "curate" / "accepted.jsonl", recs)
    tok = train_tokenizer([m["content"] or "" for r in recs for m in r["messages"]])
    save(build_model(tok, seed=0), tok, run / "round-0" / "model")
    cfg = LoopConfig(base_dir=str(tmp_path), refine={"model": "unused-in-this-test"})
    loop = ExpertIteration(cfg, run, log=lambda s: None)
    out = loop.refine(1, {"accepted_file": "curate/accepted.jsonl"}, refiner=Checked())
    rows = [json.loads(x) for x in (run / "round-1" / "refine" / "refine.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["choice"] in ("original", "refined", "dropped") for r in rows)
    assert all(r["refined"]["messages"][-1]["content"].endswith(" checked") for r in rows)
    assert sum(v for k, v in out.items() if k.startswith("refine_")) == 6
    assert out["accepted_file"] == "refine/refined.jsonl"
    pooled = loop.pool(1, out)
    kept = [json.loads(x) for x in (run / "round-1" / "refine" / "refined.jsonl").read_text().splitlines()]
    assert pooled["new_accepted"] == len(kept) == sum(r["choice"] != "dropped" for r in rows)
