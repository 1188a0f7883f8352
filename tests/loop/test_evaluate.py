"""Held-out evaluation: the pass@k estimator, the plain answer check, and the stage's record."""

from __future__ import annotations

import pytest

from tgrs_agents.loop.evaluate import evaluate, final_answer_correct, pass_at_k
from tgrs_agents.loop.stages import Evaluated
from tgrs_agents.types import Candidate, Task


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(8, 0, 1) == 0.0
    assert pass_at_k(8, 8, 1) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(8, 2, 4) == pytest.approx(1 - 15 / 70)


def sample(task: str, i: int, answer: str, reference: object = 5) -> dict:
    return {"id": f"{task}-{i}", "task_id": task, "reference": reference,
            "messages": [{"role": "user", "content": "2 + 3?"}, {"role": "assistant", "content": answer}]}


def task(tid: str) -> Task:
    return Task(id=tid, messages=[{"role": "user", "content": "2 + 3?"}], reference=5)


def test_final_answer_correct_is_a_plain_function():
    assert final_answer_correct(Candidate.model_validate(sample("t", 0, "so... Answer: 5")))
    assert final_answer_correct(Candidate.model_validate(sample("t", 0, "Answer: 5.0000000001")))
    assert final_answer_correct(Candidate.model_validate(sample("t", 0, "Answer: 1,000", reference="1000")))
    assert not final_answer_correct(Candidate.model_validate(sample("t", 0, "Answer: 6")))
    assert not final_answer_correct(Candidate.model_validate(sample("t", 0, "5")))  # no marker
    with pytest.raises(ValueError, match="no reference"):
        final_answer_correct(Candidate.model_validate(sample("t", 0, "Answer: 5", reference=None)))


def test_evaluate_counts_per_task_and_averages():
    tasks = [task("a"), task("b")]
    samples = [sample("a", 0, "Answer: 5"), sample("a", 1, "Answer: 4"),  # a: 1 of 2
               sample("b", 0, "Answer: 4"), sample("b", 1, "Answer: 3")]  # b: 0 of 2
    ev = evaluate(samples, tasks, 2, tokens_per_s=123.456)
    # per task pass@1 (0.5, 0) and pass@2 (1, 0): standard errors sd / sqrt(2) = 0.25 and 0.5
    assert ev == Evaluated(pass1=0.25, passk=0.5, k=2, eval_tasks=2, eval_tokens_per_s=123.5,
                           pass1_se=0.25, passk_se=0.5)


def test_evaluate_takes_any_check_and_candidates():
    seen = []

    def check(c: Candidate) -> bool:
        seen.append(c.id)
        return c.id.endswith("-0")

    samples = [Candidate.model_validate(sample("a", i, "x")) for i in range(4)]
    ev = evaluate(samples, [task("a")], 4, check=check)
    assert seen == ["a-0", "a-1", "a-2", "a-3"]
    assert (ev.pass1, ev.passk) == (0.25, 1.0)
    with pytest.raises(ValueError, match="no held-out tasks"):
        evaluate([], [], 4)


def test_the_record_keeps_the_marker_and_summary_keys():
    ev = Evaluated(pass1=0.25, passk=0.5, k=8, eval_tasks=2, eval_tokens_per_s=10.0, wall_s=1.5)
    assert ev.to_json() == {"pass@1": 0.25, "pass@8": 0.5, "eval_tasks": 2, "eval_tokens_per_s": 10.0,
                            "wall_s": 1.5}
    assert Evaluated.from_json(ev.to_json()) == ev
    one = Evaluated(pass1=0.5, passk=0.5, k=1, eval_tasks=2, eval_tokens_per_s=0.0)
    assert Evaluated.from_json(one.to_json()) == one


# ----- the eval panel decides ---------------------------------------------------------------------

EVAL_PANEL = '''
policy = "unanimous"
[[teacher]]
name = "says_yes"
kind = "python"
function = "checks.py:says_yes"
'''
CHECKS = '''
from pathlib import Path
def says_yes(candidate):
    with (Path(__file__).parent / "calls.log").open("a") as f:
        f.write(candidate.id + "\\n")
    return "yes" in candidate.final_text
'''


def panel_dir(tmp_path):
    (tmp_path / "eval-panel.toml").write_text(EVAL_PANEL)
    (tmp_path / "checks.py").write_text(CHECKS)
    return tmp_path


def test_the_eval_panel_decides_pass_at_1(tmp_path):
    """Answers right by final_answer but refused by the panel count as wrong, and the other way round."""
    from types import SimpleNamespace

    from tgrs_agents.loop.config import EvalSection, LoopConfig
    from tgrs_agents.loop.rounds import ExpertIteration

    panel_dir(tmp_path)
    cfg = LoopConfig(base_dir=str(tmp_path), eval_k=4, eval=EvalSection(panel="eval-panel.toml"))
    loop = ExpertIteration(cfg, tmp_path / "run", log=lambda s: None)
    _, held = loop.tasks()
    held = held[:6]

    def rollouts(model, tasks, n, temperature, prefix):  # always the right number; "yes" in 1 of 4 samples
        recs = [{"id": f"{prefix}{t.id}-{i}", "task_id": t.id, "reference": t.reference, "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": ("yes. " if i == 0 else "") + f"Answer: {t.reference}"}]}
            for t in tasks for i in range(n)]
        return recs, SimpleNamespace(tokens_per_s=1.0)

    loop._rollouts = rollouts
    ev = loop.evaluate(1, held)
    assert ev.pass1 == pytest.approx(0.25) and ev.passk == 1.0  # final_answer alone would say 1.0 and 1.0
    plain = ExpertIteration(LoopConfig(base_dir=str(tmp_path), eval_k=4), tmp_path / "plain", log=lambda s: None)
    plain._rollouts = rollouts
    assert plain.evaluate(1, held).pass1 == 1.0


def test_eval_counts_judges_each_distinct_trajectory_once(tmp_path):
    from tgrs_agents.curation.panel_file import load_panel
    from tgrs_agents.loop.evaluate import panel_counts

    panel_dir(tmp_path)
    cfg = load_panel(tmp_path / "eval-panel.toml")
    tasks = [task("a"), task("b")]
    samples = [sample("a", i, "yes") for i in range(5)] + [sample("b", i, f"no {i % 2}") for i in range(4)]
    assert panel_counts(samples, tasks, cfg) == {"a": 5, "b": 0}
    calls = (tmp_path / "calls.log").read_text().split()
    assert len(calls) == 3  # a's five copies once, b's two distinct answers once each


def test_eval_panel_path_defaults_and_errors(tmp_path):
    from tgrs_agents.errors import ConfigError
    from tgrs_agents.loop.config import EvalSection, LoopConfig, TasksConfig
    from tgrs_agents.loop.evaluate import eval_panel_path

    assert eval_panel_path(LoopConfig(base_dir=str(tmp_path))) is None  # arithmetic: the final_answer check
    code = eval_panel_path(LoopConfig(base_dir=str(tmp_path), tasks=TasksConfig(source="code")))
    assert code is not None and code.name == "panel-code.toml"
    cfg = LoopConfig(base_dir=str(tmp_path), eval=EvalSection(panel="nope.toml"), source="run.toml")
    with pytest.raises(ConfigError, match="eval panel file not found") as e:
        eval_panel_path(cfg)
    assert e.value.file == "run.toml" and e.value.field == "eval.panel"


def test_the_eval_panel_file_is_part_of_the_fingerprint(tmp_path):
    from tgrs_agents.loop.config import EvalSection, LoopConfig
    from tgrs_agents.loop.fingerprint import fingerprint, identity

    panel_dir(tmp_path)
    plain = LoopConfig(base_dir=str(tmp_path))
    assert "eval" not in identity(plain, "filtered")  # unset: a run made before [eval] keeps its fingerprint
    cfg = LoopConfig(base_dir=str(tmp_path), eval=EvalSection(panel="eval-panel.toml"))
    before = fingerprint(identity(cfg, "filtered"))
    assert identity(cfg, "filtered")["eval"]["panel"].startswith("eval-panel.toml (sha256 ")
    (tmp_path / "eval-panel.toml").write_text(EVAL_PANEL.replace("unanimous", "majority"))
    assert fingerprint(identity(cfg, "filtered")) != before  # same name, other content
