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


@pytest.mark.slow
def test_a_round_judged_by_a_noisy_majority_ends_above_its_start(tmp_path):
    """Three judges that each flip 25% of verdicts: the pool keeps the panel's precision, the student improves.

    (With the pool rule before, pool_mode = "distinct", the same round fell from 0.40 to 0.25.)"""
    from tgrs_agents.curation.store import iter_jsonl
    from tgrs_agents.tasks.noisy import answer_correct, write_noisy_panel
    from tgrs_agents.types import Candidate

    panel = write_noisy_panel(tmp_path / "panel", judges=3, flip=0.25, policy="majority")
    cfg = LoopConfig(rounds=1, eval_k=8, tasks={"n_train": 96, "n_eval": 48}, sft={"steps": 60},
                     panel={"file": str(panel)}, base_dir=str(tmp_path))
    summary = ExpertIteration(cfg, tmp_path / "run", log=lambda s: None).run()
    before, after = summary["rounds"][0]["pass@1"], summary["rounds"][1]["pass@1"]
    assert after > before, (before, after)
    rd = tmp_path / "run" / "round-1"
    truth = {c["id"]: answer_correct(Candidate.model_validate(c)) for c in iter_jsonl(rd / "candidates.jsonl")}

    def precision(name: str) -> float:
        ids = [r["id"] for r in iter_jsonl(rd / name)]
        return sum(truth[i] for i in ids) / len(ids)

    assert precision("curate/accepted.jsonl") < 0.95  # the panel really is noisy
    assert precision("pool.jsonl") >= precision("curate/accepted.jsonl") - 0.01


def _write(path, recs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_student_placeholder_points_at_the_rounds_checkpoint(tmp_path):
    from tgrs_agents.curation.panel_file import panel_from_dict

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


# ----- error bars, per-task results, an empty pool, an unloadable student ------------------------------

def test_evaluation_has_standard_errors_and_per_task_results(tmp_path):
    import statistics
    from types import SimpleNamespace

    loop = ExpertIteration(LoopConfig(base_dir=str(tmp_path), eval_k=2), tmp_path / "run", log=lambda s: None)
    _, held = loop.tasks()
    held = held[:12]

    def rollouts(model, tasks, n, temperature, prefix):  # right on tasks whose answer is even, once of twice
        recs = [{"id": f"{prefix}{t.id}-{i}", "task_id": t.id, "reference": t.reference, "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": f"Answer: {t.reference + (i if t.reference % 2 == 0 else 1)}"}]}
            for t in tasks for i in range(n)]
        return recs, SimpleNamespace(tokens_per_s=5.0)

    loop._rollouts = rollouts
    ev = loop.evaluate(1, held)
    rows = [json.loads(x) for x in (tmp_path / "run" / "round-1" / "eval.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and set(rows[0]) == {"task_id", "samples", "correct", "pass@1", "pass@2"}
    assert [r["task_id"] for r in rows] == [t.id for t in held]
    p1 = [r["pass@1"] for r in rows]
    assert {r["correct"] for r in rows} == {0, 1} and ev.pass1 == pytest.approx(sum(p1) / 12, abs=1e-4)
    assert ev.pass1_se == pytest.approx(statistics.stdev(p1) / 12 ** 0.5, abs=1e-4) and ev.pass1_se > 0
    assert ev.passk_se is not None and set(ev.to_json()) >= {"pass@1_se", "pass@2_se"}


def test_an_empty_pool_carries_the_student_over_and_the_table_says_so(tmp_path, capsys):
    from tgrs_agents.cli.loop import _print_rounds
    from tgrs_agents.loop.stages import Evaluated, Generated, Judged, Pooled, Round, Trained

    run = tmp_path / "run"
    (run / "round-0" / "model").mkdir(parents=True)
    (run / "round-1").mkdir()
    (run / "round-1" / "pool.jsonl").write_text("")  # the panel accepted nothing
    loop = ExpertIteration(LoopConfig(base_dir=str(tmp_path)), run, log=lambda s: None, live=False)
    trained = loop._stage(1, "sft", Trained, lambda: loop.sft(1))
    assert trained.carried_over and trained.sft_rows == 0
    assert loop.model_dir(1) == run / "round-0" / "model"  # the next round samples from the last student
    assert loop.model_dir(2) == run / "round-2" / "model"
    ev = Evaluated(pass1=0.3, passk=0.6, k=8, eval_tasks=4, eval_tokens_per_s=1.0, pass1_se=0.1, passk_se=0.2)
    entry = Round(1, ev, generated=Generated(samples=8, gen_tokens=1, gen_tokens_per_s=1.0),
                  judged=Judged(accepted=0, acceptance_rate=0.0, accepted_file="curate/accepted.jsonl"),
                  pooled=Pooled(pooled=0, new_accepted=0, set_aside_by_filters=0), trained=trained).to_json()
    assert entry["sft_carried_over"] is True and entry["pass@1_se"] == 0.1
    _print_rounds({"arm": "filtered", "eval_k": 8, "wall_s": 1.0, "rounds": [
        {"round": 0, "pass@1": 0.3, "pass@8": 0.6, "warm_start": {}}, entry]})
    out = capsys.readouterr().out
    assert "0.300 ± 0.100" in out and "0.600 ± 0.200" in out
    assert "round 1: the pool was empty (the panel accepted nothing), so the student carried over" in out


def test_an_unloadable_student_fails_at_once_in_one_line(tmp_path, capsys, monkeypatch):
    from tgrs_agents.cli import main
    from tgrs_agents.errors import ConfigError
    from tgrs_agents.loop import sampling

    p = tmp_path / "run.toml"
    p.write_text('rounds = 1\n[student]\nmodel = "nobdy/no-such-model"\n')
    t0 = time.perf_counter()
    assert main(["run", str(p), "--out", str(tmp_path / "run")]) == 2  # HF_HUB_OFFLINE=1 in the suite
    err = capsys.readouterr().err
    assert time.perf_counter() - t0 < 10 and err.count("\n") == 1
    assert "cannot load student 'nobdy/no-such-model': not a local path and the hub is unreachable" in err
    assert "student.model" in err and not (tmp_path / "run" / "round-0").exists()  # nothing ran
    # the hub is asked (cheaply) only when offline mode is off; a path-like typo never asks it
    monkeypatch.delenv("HF_HUB_OFFLINE")
    asked: list[int] = []
    cfg = LoopConfig(student={"model": "nobdy/no-such-model"})
    with pytest.raises(ConfigError, match="the hub is unreachable"):
        sampling.check_student(cfg, reachable=lambda: asked.append(1) or False)
    sampling.check_student(cfg, reachable=lambda: True)  # reachable: from_pretrained says the rest
    with pytest.raises(ConfigError, match="'runs/demo/round-0/modl': no such directory"):
        sampling.check_student(LoopConfig(student={"model": "runs/demo/round-0/modl"}),
                               reachable=lambda: asked.append(2) or True)
    assert asked == [1]
    sampling.check_student(LoopConfig(student={"model": str(tmp_path)}))  # a local directory
    # a GGUF reference is checked for its file, never sent to the hub
    with pytest.raises(ConfigError, match=r"GGUF file not found: models/smol\.gguf") as e:
        sampling.check_student(LoopConfig(student={"model": "models/smol.gguf"}, base_dir=str(tmp_path)),
                               reachable=lambda: asked.append(3) or True)
    assert e.value.field == "student.model"
    with pytest.raises(ConfigError, match="no installed package 'no_such_pkg'"):
        sampling.check_student(LoopConfig(student={"model": "gguf:no-such-pkg"}), reachable=lambda: True)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    sampling.check_student(LoopConfig(student={"model": "m.gguf"}, base_dir=str(tmp_path)),
                           reachable=lambda: asked.append(4) or False)
    assert asked == [1]
