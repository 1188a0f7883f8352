"""Expert iteration: the stages' records, the summary's keys, and a reduced demo run end to end on CPU.

(pass@k is tested in test_evaluate.py, pooling in test_pool.py, the run config in test_config.py.)"""

import json
import time

import pytest

from tgrs_agents.loop.config import LoopConfig
from tgrs_agents.loop.rounds import ExpertIteration


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
    out = loop.refine(1, "curate/accepted.jsonl", refiner=Checked())
    rows = [json.loads(x) for x in (run / "round-1" / "refine" / "refine.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["choice"] in ("original", "refined", "dropped") for r in rows)
    assert all(r["refined"]["messages"][-1]["content"].endswith(" checked") for r in rows)
    assert sum(v for k, v in out.to_json().items() if k.startswith("refine_")) == 6
    assert out.accepted_file == "refine/refined.jsonl"
    pooled = loop.pool(1, out.accepted_file)
    kept = [json.loads(x) for x in (run / "round-1" / "refine" / "refined.jsonl").read_text().splitlines()]
    assert pooled.new_accepted == len(kept) == sum(r["choice"] != "dropped" for r in rows)
