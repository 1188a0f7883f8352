"""``[train] method``: DPO on the panel's preference pairs in the loop (tgrs_agents.loop.preference).

The loop tests run real rounds on a small tiny student (real panel, real pairs, real ``DPOTrainer``);
only sampling is replaced by hand-made rollouts (half right, half with a wrong answer copied from the
calculator), so every training task yields one pair and a round takes seconds."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from tgrs_agents.errors import ConfigError, RunStoreError
from tgrs_agents.loop.config import LoopConfig, load_run_config
from tgrs_agents.loop.fingerprint import identity
from tgrs_agents.loop.rounds import ExpertIteration
from tgrs_agents.loop.stages import (
    Evaluated,
    Generated,
    Judged,
    Paired,
    Pooled,
    Preferred,
    Round,
    Trained,
    WarmStart,
)

# ----------------------------------------------------------------------------------------- config

def test_train_method_parses_and_defaults_to_sft(tmp_path: Path) -> None:
    assert LoopConfig().train.method == "sft"
    p = tmp_path / "run.toml"
    p.write_text('[train]\nmethod = "sft+dpo"\npairs = "best-worst"\npairs_per_task = 2\nmin_margin = 0.5\n'
                 'beta = 0.2\n[sft]\nlora_r = 4\n')
    cfg = load_run_config(p)
    assert cfg.train.method == "sft+dpo"
    ps = cfg.train.pair_settings()
    assert (ps.mode, ps.pairs_per_task, ps.min_margin) == ("best-worst", 2, 0.5)
    s = cfg.train.settings(seed=3, lora_r=cfg.sft.lora_r)
    assert (s.beta, s.seed, s.lora.r, s.lora.alpha) == (0.2, 3, 4, 8)


@pytest.mark.parametrize(("body", "field"), [
    ('method = "ppo"', "train.method"),
    ('method = "dpo"\npairs = "random"', "train.pairs"),
    ('method = "dpo"\nmin_margin = 2.0', "train.min_margin"),
    ('method = "dpo"\nbeta = 0', "train.beta"),
    ('methd = "dpo"', "train.methd"),
])
def test_a_bad_train_section_is_a_config_error_naming_the_field(tmp_path: Path, body: str, field: str) -> None:
    p = tmp_path / "run.toml"
    p.write_text(f"[train]\n{body}\n")
    with pytest.raises(ConfigError) as ei:
        load_run_config(p)
    assert ei.value.field == field and str(p) in str(ei.value)


def test_the_method_is_part_of_the_fingerprint_and_sft_keeps_the_old_one(tmp_path: Path) -> None:
    sft = identity(LoopConfig(base_dir=str(tmp_path)), "accept_all")
    assert "train" not in sft  # a run made before [train] existed resumes unchanged
    assert sft == identity(LoopConfig(base_dir=str(tmp_path), train={"beta": 0.5}), "accept_all")  # no DPO: inert
    assert identity(LoopConfig(base_dir=str(tmp_path), train={"method": "dpo"}), "accept_all")["train"]["method"] \
        == "dpo"
    out = tmp_path / "run"
    ExpertIteration(LoopConfig(base_dir=str(tmp_path)), out, log=lambda s: None).claim()
    with pytest.raises(RunStoreError, match=r'train\.method: \(unset\) -> "dpo"'):
        ExpertIteration(LoopConfig(base_dir=str(tmp_path), train={"method": "dpo"}), out, log=lambda s: None).claim()


def test_accept_all_has_no_pairs_to_prefer(tmp_path: Path) -> None:
    loop = ExpertIteration(LoopConfig(base_dir=str(tmp_path), train={"method": "dpo"}), tmp_path / "run",
                           accept_all=True, log=lambda s: None)
    with pytest.raises(ConfigError) as ei:
        loop.run()
    assert ei.value.field == "train.method" and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------------- stage records

def test_a_dpo_round_entry_records_pairs_and_dpo_time() -> None:
    ev = Evaluated(pass1=0.1, passk=0.4, k=8, eval_tasks=32, eval_tokens_per_s=900.0, wall_s=2.0)
    gen = Generated(samples=64, gen_tokens=4000, gen_tokens_per_s=1000.0, wall_s=4.0)
    judged = Judged(accepted=16, acceptance_rate=0.25, calls_saved=40, accepted_file="curate/accepted.jsonl",
                    wall_s=1.0)
    paired = Paired(counts={"pairs": 12, "pair_tasks": 12, "pairs_skipped_tie": 3}, wall_s=0.5)
    pref = Preferred(pairs=12, train_s=6.0, final_loss=0.4, reward_accuracy=0.9, reward_margin=1.5, wall_s=7.0)
    for rec in (paired, pref, Preferred(pairs=0, train_s=0.0, final_loss=None, carried_over=True)):
        assert type(rec).from_json(json.loads(json.dumps(rec.to_json()))) == rec
    entry = Round(1, ev, generated=gen, judged=judged, paired=paired, preferred=pref).to_json()
    assert entry["pairs"] == 12 and entry["pairs_skipped_tie"] == 3 and "pairs_file" not in entry
    assert (entry["dpo_pairs"], entry["dpo_wall_s"], entry["dpo_reward_accuracy"]) == (12, 7.0, 0.9)
    assert entry["stage_wall_s"] == {"generate": 4.0, "judge": 1.0, "pairs": 0.5, "dpo": 7.0, "eval": 2.0}
    assert entry["wall_s"] == 4.0 + 1.0 + 0.5 + 7.0 + 2.0
    trained = Trained(sft_tokens_per_s=1.0, sft_backend="torch", sft_rows=3, sft_train_s=1.0, final_loss=1.0,
                      wall_s=3.0)
    pooled = Pooled(pooled=3, new_accepted=3, set_aside_by_filters=0)
    both = Round(1, ev, generated=gen, judged=judged, pooled=pooled, trained=trained, paired=paired,
                 preferred=pref).to_json()
    assert list(both["stage_wall_s"]) == ["generate", "judge", "sft", "pairs", "dpo", "eval"]


# ------------------------------------------------------------------------------------- loop rounds

def _rollouts(model, tasks, n, temperature, prefix):
    """Sample j of a task: right when j is even, else a wrong copy of the calculator's result."""
    from tgrs_agents.tasks.arithmetic_data import trajectory

    recs = []
    for t in tasks:
        expr = t.messages[0].text.removeprefix("What is ").removesuffix("?")
        for j in range(n):
            rec = trajectory(j, random.Random(f"{t.id}-{j}"), task_id=t.id, expr=expr, value=t.reference,
                             flavour="good" if j % 2 == 0 else "wrong_copy")
            recs.append({**rec, "id": f"{prefix}{t.id}-s{j}"})
    return recs, SimpleNamespace(tokens_per_s=1.0, generated_tokens=10 * len(recs))


def _loop(tmp_path: Path, method: str, rollouts=_rollouts, **train) -> ExpertIteration:
    """A loop whose round 0 is a small, untrained tiny student (written here, with its done marker)."""
    from tgrs_agents.student.tiny import build_model, save, train_tokenizer

    cfg = LoopConfig(rounds=1, eval_k=2, tasks={"n_train": 8, "n_eval": 4}, generate={"n": 2},
                     sft={"steps": 3, "batch_size": 4}, train={"method": method, "steps": 4, "batch_size": 4,
                                                              "lr": 1e-3, **train},
                     base_dir=str(tmp_path))
    loop = ExpertIteration(cfg, tmp_path / "run", log=lambda s: None, live=False)
    loop._rollouts = rollouts
    if not (tmp_path / "run" / "round-0").exists():
        loop.claim()
        train_tasks, held = loop.tasks()
        recs, _ = _rollouts(None, train_tasks + held, 2, 1.0, "corpus-")
        tok = train_tokenizer([m["content"] or "" for r in recs for m in r["messages"]] + ["calculator 0123456789"])
        save(build_model(tok, seed=0), tok, loop.model_dir(0))
        marker = WarmStart(seed_examples=0, sft_tokens_per_s=0.0, sft_backend="none", sft_train_s=0.0,
                           final_loss=None)
        (tmp_path / "run" / "round-0" / "warm_start.done.json").write_text(json.dumps(marker.to_json()))
    return loop


def _weights(path: Path) -> dict:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def _differ(a: Path, b: Path) -> bool:
    import torch

    wa, wb = _weights(a), _weights(b)
    return any(not torch.equal(wa[k], wb[k]) for k in wa)


def test_a_dpo_round_trains_on_the_rounds_pairs(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    loop = _loop(tmp_path, "dpo")
    summary = loop.run()
    rd = tmp_path / "run" / "round-1"
    pairs = [json.loads(x) for x in (rd / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 8 and {p["task_id"] for p in pairs} == {f"train-{i}" for i in range(8)}  # one a task
    assert all(p["metadata"]["chosen_accepted"] and not p["metadata"]["rejected_accepted"] for p in pairs)
    assert summary["method"] == "dpo"
    r1 = summary["rounds"][1]
    assert (r1["pairs"], r1["pair_tasks"], r1["dpo_pairs"]) == (8, 8, 8) and r1["dpo_wall_s"] > 0
    assert r1["stage_wall_s"]["dpo"] == r1["dpo_wall_s"] and "dpo_carried_over" not in r1
    assert not (rd / "pool.jsonl").exists() and not (rd / "sft.done.json").exists()  # dpo alone: no SFT
    assert loop.model_dir(1) == rd / "model" and _differ(rd / "model", tmp_path / "run" / "round-0" / "model")
    dpo = json.loads((rd / "model" / "dpo.json").read_text())
    assert dpo["pairs"] == 8 and len(dpo["losses"]) == 4 and dpo["settings"]["max_length"] == 128  # the positions


def test_a_dpo_round_resumes_after_a_kill_between_stages(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    calls: list[str] = []

    def killed(self, rnd, paired):  # the process dies as the DPO stage begins
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ExpertIteration, "dpo", killed)
        with pytest.raises(KeyboardInterrupt):
            _loop(tmp_path, "dpo").run()
    rd = tmp_path / "run" / "round-1"
    assert (rd / "pairs.done.json").exists() and not (rd / "dpo.done.json").exists()
    pairs_before = (rd / "pairs.jsonl").read_text()

    loop = _loop(tmp_path, "dpo")
    for name in ("generate", "judge", "pairs", "dpo"):
        real = getattr(loop, name)
        setattr(loop, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    summary = loop.run()
    assert calls == ["dpo"]  # generate, judge and pairs are read back, not redone
    assert (rd / "pairs.jsonl").read_text() == pairs_before
    assert summary["rounds"][1]["dpo_pairs"] == 8 and (rd / "model" / "dpo.json").exists()


def test_sft_then_dpo_starts_dpo_from_the_sft_result_and_resumes_after_sft(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from tgrs_agents.loop import preference

    starts: list[Path] = []
    real_prefer = preference.prefer

    def prefer(model_path, pairs_file, out_dir, settings):
        starts.append(Path(model_path))
        return real_prefer(model_path, pairs_file, out_dir, settings)

    order: list[str] = []
    with pytest.MonkeyPatch.context() as mp:  # killed after SFT finished, before pairs were made
        mp.setattr(ExpertIteration, "pairs", lambda self, rnd: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            _loop(tmp_path, "sft+dpo").run()
    rd = tmp_path / "run" / "round-1"
    assert (rd / "sft.done.json").exists() and (rd / "sft-model" / "config.json").exists()
    assert not (rd / "model").exists()  # the round's student is DPO's output, not SFT's
    loop = _loop(tmp_path, "sft+dpo")
    for name in ("sft", "pairs", "dpo", "evaluate"):
        real = getattr(loop, name)
        setattr(loop, name, lambda *a, _real=real, _name=name: order.append(_name) or _real(*a))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(preference, "prefer", prefer)
        summary = loop.run()
    assert order == ["pairs", "dpo", "evaluate"]  # SFT is not redone; round 0's eval was read back
    assert starts == [rd / "sft-model"]  # DPO starts from (and is referenced to) the SFT result
    assert _differ(rd / "model", rd / "sft-model") and _differ(rd / "sft-model", tmp_path / "run" / "round-0" / "model")
    r1 = summary["rounds"][1]
    assert summary["method"] == "sft+dpo" and r1["sft_rows"] > 0 and r1["dpo_pairs"] == 8
    assert list(r1["stage_wall_s"]) == ["generate", "judge", "sft", "pairs", "dpo", "eval"]


def test_a_round_without_pairs_carries_the_model_over_and_the_table_says_so(tmp_path: Path, capsys) -> None:
    from tgrs_agents.cli.loop import _print_rounds

    def all_right(model, tasks, n, temperature, prefix):  # every candidate accepted: nothing to prefer against
        recs, stats = _rollouts(model, tasks, n, temperature, prefix)
        return [r for r in recs if r["id"].endswith("-s0")], stats

    loop = _loop(tmp_path, "dpo", rollouts=all_right)
    summary = loop.run()
    r1 = summary["rounds"][1]
    assert r1["pairs"] == 0 and r1["dpo_carried_over"] is True and r1["accepted"] == r1["samples"]
    assert loop.model_dir(1) == tmp_path / "run" / "round-0" / "model"  # round 2 would sample the last student
    _print_rounds(summary)
    assert "round 1: no preference pairs (the panel accepted all or none), so DPO carried over" in \
        capsys.readouterr().out
