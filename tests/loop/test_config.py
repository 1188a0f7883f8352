"""The run config: errors that name file and field, and fields that do what they say.

Wired fields: ``student.backend = "openai"`` (+ ``base_url``, ``api_key_env``, prices) samples from
a served model through the run's services; ``sft.lora_r`` reaches peft.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.errors import ConfigError, InputError
from tgrs_agents.loop.config import LoopConfig, SFTSection, load_run_config
from tgrs_agents.loop.distill import LoraSettings
from tgrs_agents.loop.rounds import ExpertIteration


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "run.toml"
    p.write_text(text)
    return p


def test_run_config_errors_name_file_and_field(tmp_path):
    p = tmp_path / "run.toml"
    p.write_text("rounds = 2\n[generate]\nn = 0\n")
    with pytest.raises(ConfigError) as ei:
        load_run_config(p)
    assert str(p) in str(ei.value) and "generate.n" in str(ei.value)
    p.write_text("rounds = 2\n[sft]\nstepz = 3\n")
    with pytest.raises(ConfigError, match=r"sft\.stepz"):
        load_run_config(p)


def test_one_toml_reader_for_run_and_panel_files(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as run_err:
        load_run_config(missing)
    with pytest.raises(ConfigError) as panel_err:
        load_panel(missing)
    assert str(run_err.value) == f"{missing}: run config file not found"
    assert str(panel_err.value) == f"{missing}: panel file not found"
    bad = write(tmp_path, "rounds = = 2\n")
    with pytest.raises(ConfigError, match="expected valid TOML") as ei:
        load_run_config(bad)
    assert ei.value.file == str(bad)


def test_one_pydantic_translation_for_run_and_panel_files(tmp_path):
    with pytest.raises(ConfigError) as ei:
        load_run_config(write(tmp_path, '[student]\nbackend = "tensorflow"\n'))
    assert ei.value.field == "student.backend"
    assert ei.value.detail == "expected one of 'transformers', 'vllm' or 'openai'; got 'tensorflow'"
    with pytest.raises(ConfigError) as ei:
        load_run_config(write(tmp_path, "student = 3\n"))
    assert ei.value.field == "student" and ei.value.detail == "expected a table; got int"


def test_rounds_zero_evaluates_only_and_an_openai_student_needs_it(tmp_path):
    assert load_run_config(write(tmp_path, "rounds = 0\n")).rounds == 0
    served = '[student]\nbackend = "openai"\nmodel = "m"\n'
    p = write(tmp_path, "rounds = 2\n" + served)
    with pytest.raises(ConfigError) as ei:
        load_run_config(p)
    assert ei.value.file == str(p) and ei.value.field == "student.backend"
    assert "cannot be fine-tuned" in ei.value.detail and "rounds = 0" in ei.value.detail
    with pytest.raises(ConfigError, match=r"student\.backend"):
        LoopConfig(student={"backend": "openai", "model": "m"})  # in code too
    cfg = load_run_config(write(tmp_path, "rounds = 0\n" + served + 'api_key_env = ""\nbase_url = "http://x/v1"\n'))
    assert cfg.student.api_key_env == "" and cfg.student.base_url == "http://x/v1"


def test_sft_section_builds_the_distill_settings():
    assert SFTSection().settings(seed=3).lora is None
    s = SFTSection(steps=7, batch_size=4, lr=1e-3, backend="torch", lora_r=4).settings(seed=3)
    assert (s.steps, s.batch_size, s.lr, s.backend, s.seed) == (7, 4, 1e-3, "torch", 3)
    assert s.lora == LoraSettings(r=4, alpha=8)


def test_lora_rank_reaches_peft(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from tgrs_agents.student.tiny import build_model, save, train_tokenizer
    from tgrs_agents.tasks.arithmetic import make_tasks, seed_demonstrations

    demos = seed_demonstrations(make_tasks(16, seed=0), noise=0.0, seed=0)
    run = tmp_path / "run"
    tok = train_tokenizer([m.get("content") or "" for d in demos for m in d["messages"]])
    save(build_model(tok, seed=0), tok, run / "round-0" / "model")
    (run / "round-1").mkdir(parents=True)
    (run / "round-1" / "pool.jsonl").write_text("".join(json.dumps(d) + "\n" for d in demos))
    seen = []
    real = peft.get_peft_model

    def spy(model, config, *a, **kw):
        seen.append(config)
        return real(model, config, *a, **kw)

    monkeypatch.setattr(peft, "get_peft_model", spy)
    cfg = LoopConfig(base_dir=str(tmp_path), sft={"steps": 2, "batch_size": 4, "backend": "torch", "lora_r": 3})
    out = ExpertIteration(cfg, run, log=lambda s: None).sft(1)
    assert [(c.r, c.lora_alpha) for c in seen] == [(3, 6)]
    assert out.sft_rows == len(demos)
    saved = json.loads((run / "round-1" / "model" / "distill.json").read_text())
    assert saved["settings"]["lora"]["r"] == 3  # merged into the weights: the next round loads a plain model


def test_a_served_student_is_evaluated_through_the_runs_services(tmp_path, monkeypatch):
    pytest.importorskip("openai")
    from tgrs_agents.paid.services import Services
    from tgrs_agents.testing.standin import StandIn

    monkeypatch.setenv("TGRS_TEST_KEY", "sk-test")
    with StandIn(brain=lambda prompt: {"text": "Answer: 0"}) as srv:
        p = write(tmp_path, f'rounds = 0\neval_k = 2\n[tasks]\nn_train = 2\nn_eval = 3\n[student]\n'
                            f'backend = "openai"\nmodel = "served"\nbase_url = "{srv.url_openai}"\n'
                            f'api_key_env = "TGRS_TEST_KEY"\nprice_input_per_mtok = 1.0\n'
                            f'price_output_per_mtok = 2.0\n')
        services = Services()
        summary = ExpertIteration(load_run_config(p), tmp_path / "run", log=lambda s: None,
                                  services=services).run()
        bodies = [r["body"] for r in srv.requests]
    assert len(bodies) == 3 * 2 and {b["model"] for b in bodies} == {"served"}
    assert all(b["messages"][0]["role"] in ("system", "user") for b in bodies)
    assert services.budget.spent_usd > 0  # priced and settled by the run's budget
    assert len(services.limiters.all()) == 1  # the endpoint's limiter lives in the run's registry
    r0 = summary["rounds"][0]
    assert r0["warm_start"] == {"base_model": "served", "wall_s": r0["warm_start"]["wall_s"]}
    assert r0["eval_tasks"] == 3 and "pass@2" in r0


def test_a_served_student_without_its_key_is_a_config_error(tmp_path, monkeypatch):
    pytest.importorskip("openai")
    monkeypatch.delenv("TGRS_TEST_NO_KEY", raising=False)
    p = write(tmp_path, 'rounds = 0\n[tasks]\nn_train = 2\nn_eval = 2\n[student]\nbackend = "openai"\n'
                        'model = "gpt-4o-mini"\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "TGRS_TEST_NO_KEY"\n')
    with pytest.raises(ConfigError) as ei:
        ExpertIteration(load_run_config(p), tmp_path / "run", log=lambda s: None).run()
    assert ei.value.file == str(p) and ei.value.field == "student" and "TGRS_TEST_NO_KEY" in str(ei.value)
    p = write(tmp_path, p.read_text().replace("gpt-4o-mini", "my-own-model").replace("TGRS_TEST_NO_KEY", ""))
    with pytest.raises(ConfigError, match="price_input_per_mtok") as ei:
        ExpertIteration(load_run_config(p), tmp_path / "run2", log=lambda s: None).run()
    assert ei.value.field == "student"


# ----- task files: user mistakes are ConfigError / InputError, never a traceback ---------------------

def task_line(i: int, reference: object = 5) -> str:  # a different question per i: no train/eval overlap
    return json.dumps({"id": f"t{i}", "messages": [{"role": "user", "content": f"2 + {i}?"}], "reference": reference})


def loop_for(tmp_path: Path, tasks: str) -> ExpertIteration:
    p = write(tmp_path, f"[tasks]\n{tasks}\n")
    return ExpertIteration(load_run_config(p), tmp_path / "run", log=lambda s: None)


def test_task_file_mistakes_name_the_file_and_field(tmp_path):
    (tmp_path / "train.jsonl").write_text(task_line(0) + "\n\n" + task_line(1) + "\n")
    (tmp_path / "held.jsonl").write_text(task_line(2) + "\n")
    train, held = loop_for(tmp_path, 'source = "train.jsonl"\neval_source = "held.jsonl"').tasks()
    assert [t.id for t in train] == ["t0", "t1"] and [t.id for t in held] == ["t2"]

    with pytest.raises(ConfigError) as ei:
        loop_for(tmp_path, 'source = "train.jsonl"').tasks()
    assert ei.value.field == "tasks.eval_source" and ei.value.file == str(tmp_path / "run.toml")
    with pytest.raises(ConfigError, match="task file not found") as ei:
        loop_for(tmp_path, 'source = "nope.jsonl"\neval_source = "held.jsonl"').tasks()
    assert ei.value.field == "tasks.source"

    (tmp_path / "bad.jsonl").write_text(task_line(0) + "\n" + json.dumps({"id": "x", "messages": []}) + "\n")
    with pytest.raises(InputError) as ie:
        loop_for(tmp_path, 'source = "bad.jsonl"\neval_source = "held.jsonl"').tasks()
    assert (ie.value.file, ie.value.line, ie.value.field) == (str(tmp_path / "bad.jsonl"), 2, "messages")

    (tmp_path / "unchecked.jsonl").write_text(task_line(3, reference=None) + "\n")
    with pytest.raises(ConfigError, match="no reference") as ei:
        loop_for(tmp_path, 'source = "train.jsonl"\neval_source = "unchecked.jsonl"').tasks()
    assert ei.value.field == "tasks.eval_source"


def test_a_missing_panel_file_is_a_config_error(tmp_path):
    p = write(tmp_path, '[panel]\nfile = "no-such-panel.toml"\n')
    loop = ExpertIteration(load_run_config(p), tmp_path / "run", log=lambda s: None)
    rd = loop.layout.round(1)
    rd.dir.mkdir(parents=True)
    rd.candidates.write_text("")
    with pytest.raises(ConfigError, match="panel file not found") as ei:
        loop.judge(1)
    assert ei.value.field == "panel.file" and ei.value.file == str(p)
