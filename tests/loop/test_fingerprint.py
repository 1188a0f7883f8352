"""A loop run directory belongs to one config and one arm: another is refused, naming what changed; --force archives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tgrs_agents.cli import main
from tgrs_agents.curation.layout import LoopDir
from tgrs_agents.errors import RunStoreError
from tgrs_agents.loop.config import LoopConfig, load_run_config
from tgrs_agents.loop.fingerprint import claim, differences, identity
from tgrs_agents.loop.rounds import ExpertIteration


def loop(tmp_path: Path, out: Path, accept_all: bool = False, force: bool = False, **cfg) -> ExpertIteration:
    return ExpertIteration(LoopConfig(base_dir=str(tmp_path), **cfg), out, accept_all=accept_all, force=force,
                           log=lambda s: None)


def test_a_changed_config_is_refused_naming_the_keys(tmp_path):
    out = tmp_path / "run"
    loop(tmp_path, out).claim()
    meta = json.loads((out / "run.json").read_text())
    assert meta["arm"] == "filtered" and len(meta["fingerprint"]) == 16
    assert meta["identity"]["panel"]["policy"] == "unanimous"  # the shipped panel, resolved
    loop(tmp_path, out).claim()  # the same config: fine
    with pytest.raises(RunStoreError) as ei:
        loop(tmp_path, out, generate={"n": 4}, sft={"steps": 60}).claim()
    msg = str(ei.value)
    assert "generate.n: 8 -> 4" in msg and "sft.steps: 100 -> 60" in msg and "--force" in msg
    assert "rounds" not in msg


def test_operational_knobs_resume(tmp_path):
    out = tmp_path / "run"
    loop(tmp_path, out).claim()
    loop(tmp_path, out, rounds=7, generate={"batch_size": 3}, student={"device": "cpu"}).claim()


def test_one_directory_holds_one_arm(tmp_path):
    out = tmp_path / "run"
    loop(tmp_path, out).claim()
    with pytest.raises(RunStoreError, match="holds the filtered arm and this is the accept_all arm"):
        loop(tmp_path, out, accept_all=True).claim()


def test_force_archives_the_old_run(tmp_path):
    out = tmp_path / "run"
    loop(tmp_path, out).claim()
    (out / "round-1").mkdir()
    (out / "round-1" / "generate.done.json").write_text("{}")
    (out / "summary.json").write_text("{}")
    loop(tmp_path, out, accept_all=True, force=True).claim()
    (archive,) = [p for p in out.iterdir() if p.name.startswith("archive-")]
    assert (archive / "round-1" / "generate.done.json").exists() and (archive / "summary.json").exists()
    assert json.loads((archive / "run.json").read_text())["arm"] == "filtered"
    assert json.loads((out / "run.json").read_text())["arm"] == "accept_all"
    assert not (out / "round-1").exists() and not (out / "summary.json").exists()


def test_rounds_without_a_fingerprint_are_refused(tmp_path):
    out = tmp_path / "run"
    (out / "round-0").mkdir(parents=True)
    with pytest.raises(RunStoreError, match=r"no run\.json"):
        loop(tmp_path, out).claim()


def test_task_files_and_panel_count_by_content(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "1?"}]}))
    (tmp_path / "held.jsonl").write_text(json.dumps({"id": "b", "messages": [{"role": "user", "content": "2?"}],
                                                     "reference": 2}))
    panel = tmp_path / "panel.toml"
    panel.write_text('policy = "unanimous"\n[[teacher]]\nname = "a"\nkind = "final_answer"\n')
    cfg = {"tasks": {"source": "train.jsonl", "eval_source": "held.jsonl"}, "panel": {"file": "panel.toml"}}
    out = tmp_path / "run"
    loop(tmp_path, out, **cfg).claim()
    (tmp_path / "train.jsonl").write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "3?"}]}))
    with pytest.raises(RunStoreError, match=r"tasks\.source: \"train\.jsonl \(sha256 [0-9a-f]+\)\" -> "):
        loop(tmp_path, out, **cfg).claim()
    loop(tmp_path, out, force=True, **cfg).claim()
    panel.write_text('policy = "majority"\n[[teacher]]\nname = "a"\nkind = "final_answer"\nrel_tol = 0.1\n')
    with pytest.raises(RunStoreError) as ei:
        loop(tmp_path, out, **cfg).claim()
    assert 'panel.policy: "unanimous" -> "majority"' in str(ei.value)
    assert "panel.teacher.a.rel_tol: 1e-06 -> 0.1" in str(ei.value)
    loop(tmp_path, out / "control", accept_all=True, **cfg).claim()  # accept-all never asks the panel
    assert "panel" not in json.loads((out / "control" / "run.json").read_text())["identity"]


def test_differences_name_added_and_removed_keys():
    assert differences({"a": {"b": 1}, "c": 2}, {"a": {"b": 1}, "d": 3}) == ["c: 2 -> (unset)", "d: (unset) -> 3"]
    ident = identity(LoopConfig(), "filtered")
    assert "rounds" not in ident and "batch_size" not in ident["generate"] and "base_dir" not in ident
    assert ident["tasks"]["builtin_splits_version"] >= 2 and ident["sft"]["batch_size"] == 32


def test_run_refuses_before_any_stage_and_the_cli_says_it_in_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = tmp_path / "run.toml"
    cfg.write_text("rounds = 1\n[tasks]\nn_train = 8\nn_eval = 4\n[sft]\nsteps = 5\n")
    claim(LoopDir(out), identity(load_run_config(cfg), "filtered", None))
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tgrs: error: refusing to continue the run in") and "\n" not in err
    assert not (out / "round-0").exists()  # nothing ran


def test_run_and_demo_take_force_and_demo_takes_a_seed():
    from tgrs_agents.cli import build_parser

    d = build_parser().parse_args(["demo", "--seed", "2", "--force"])
    assert (d.seed, d.force) == (2, True)
    r = build_parser().parse_args(["run", "x.toml", "--out", "o", "--force"])
    assert r.force and not build_parser().parse_args(["run", "x.toml", "--out", "o"]).force
