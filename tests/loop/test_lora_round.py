"""``[sft] lora_r``: a round's SFT through the loop trains LoRA adapters (peft) and nothing else; the
adapters are merged (W + B @ A * alpha / r, every other weight untouched) into the round's model, and
the next round samples from, and trains on top of, that merged model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.loop.config import LoopConfig
from tgrs_agents.loop.rounds import ExpertIteration

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from peft.tuners.lora import LoraLayer  # noqa: E402
from peft.tuners.tuners_utils import BaseTuner  # noqa: E402

RANK = 4


def weights(path: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture
def merges(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each LoRA model looked like just before its adapters were merged: parameters (names as in
    the base model, adapters apart), which ones trained, and each adapter's scale."""
    seen: list[dict[str, Any]] = []
    real = BaseTuner.merge_and_unload

    def spy(self: Any, *a: Any, **kw: Any) -> Any:
        params = dict(self.model.named_parameters())
        seen.append({
            "trainable": {n for n, p in params.items() if p.requires_grad},
            "base": {n.replace(".base_layer", ""): p.detach().clone() for n, p in params.items() if "lora_" not in n},
            "adapters": {name: (m.lora_A["default"].weight.detach().clone(),
                                m.lora_B["default"].weight.detach().clone(), m.scaling["default"])
                         for name, m in self.model.named_modules() if isinstance(m, LoraLayer)},
        })
        return real(self, *a, **kw)

    monkeypatch.setattr(BaseTuner, "merge_and_unload", spy)
    return seen


def test_a_lora_round_trains_only_adapters_and_the_next_round_uses_the_merged_model(
        tmp_path: Path, merges: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    from tgrs_agents.generate import hf
    from tgrs_agents.student.tiny import build_model, save, train_tokenizer
    from tgrs_agents.tasks.arithmetic import make_tasks, seed_demonstrations

    demos = seed_demonstrations(make_tasks(16, seed=0), noise=0.0, seed=0)
    run = tmp_path / "run"
    tok = train_tokenizer([m.get("content") or "" for d in demos for m in d["messages"]]
                          + [f"What is {i}?" for i in range(10)])
    save(build_model(tok, seed=0), tok, run / "round-0" / "model")
    for rnd in (1, 2):
        (run / f"round-{rnd}").mkdir(parents=True)
        (run / f"round-{rnd}" / "pool.jsonl").write_text("".join(json.dumps(d) + "\n" for d in demos))
    cfg = LoopConfig(base_dir=str(tmp_path), tasks={"n_train": 3, "n_eval": 2}, generate={"n": 1, "max_turns": 1},
                     sft={"steps": 4, "batch_size": 4, "lr": 1e-2, "backend": "torch", "lora_r": RANK})
    loop = ExpertIteration(cfg, run, log=lambda s: None)
    base = weights(run / "round-0" / "model")

    assert loop.sft(1).sft_rows == len(demos)
    (before,) = merges
    # only the adapters trained: every other weight is the round-0 student's, bit for bit
    assert before["trainable"] and all(".lora_A." in n or ".lora_B." in n for n in before["trainable"])
    assert before["base"].keys() == base.keys()
    assert all(torch.equal(before["base"][n], base[n]) for n in base)
    assert before["adapters"] and any(b.abs().sum() > 0 for _, b, _ in before["adapters"].values())  # B starts at 0
    assert {s for _, _, s in before["adapters"].values()} == {2.0}  # alpha = 2 r

    # the round's model is the merge: W + B @ A * scale on adapted layers, the rest untouched
    merged = weights(run / "round-1" / "model")
    assert merged.keys() == base.keys()
    adapted = {f"{name}.weight": (a, b, s) for name, (a, b, s) in before["adapters"].items()}
    for n, w in merged.items():
        if n in adapted:
            a, b, s = adapted[n]
            torch.testing.assert_close(w, base[n] + (b @ a) * s, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(w, base[n]), n
    assert any(not torch.equal(merged[n], base[n]) for n in adapted)

    # the next round samples from the merged model ...
    made: list[Any] = []
    real_init = hf.TransformersBackend.__init__

    def spy_init(self: Any, model_or_path: Any, *a: Any, **kw: Any) -> None:
        real_init(self, model_or_path, *a, **kw)
        made.append((Path(model_or_path), {n: p.detach().clone() for n, p in self.model.named_parameters()}))

    monkeypatch.setattr(hf.TransformersBackend, "__init__", spy_init)
    train, _ = loop.tasks()
    assert loop.generate(2, train).samples == 3
    ((path, sampled),) = made
    assert path == run / "round-1" / "model"
    assert all(torch.equal(sampled[n].cpu(), merged[n]) for n in merged)

    # ... and trains new adapters on top of it (its frozen base is round 1's merged model)
    loop.sft(2)
    assert len(merges) == 2
    assert all(torch.equal(merges[1]["base"][n], merged[n]) for n in merged)


def test_rows_cut_before_their_first_assistant_token_name_sft_max_length(tmp_path: Path) -> None:
    from tgrs_agents.errors import ConfigError
    from tgrs_agents.loop.config import SFTSection
    from tgrs_agents.loop.distill import distill
    from tgrs_agents.student.tiny import build_model, save, train_tokenizer
    from tgrs_agents.tasks.arithmetic import make_tasks, seed_demonstrations

    demos = seed_demonstrations(make_tasks(4, seed=0), noise=0.0, seed=0)
    tok = train_tokenizer([m.get("content") or "" for d in demos for m in d["messages"]])
    save(build_model(tok, seed=0), tok, tmp_path / "m")
    sft = SFTSection(steps=1, batch_size=2, backend="torch", lora_r=RANK, max_length=8)
    assert sft.settings(seed=0).max_length == 8
    with pytest.raises(ConfigError, match=r"in its first 8 tokens \(raise max_length: \[sft\] max_length\)"):
        distill(tmp_path / "m", demos, tmp_path / "out", sft.settings(seed=0))
    res = distill(tmp_path / "m", demos, tmp_path / "out", sft.model_copy(update={"max_length": 512}).settings(seed=0))
    assert res.rows == len(demos)

    from tgrs_agents.loop.fingerprint import identity  # the default stays out: earlier runs keep their fingerprint

    assert "max_length" not in identity(LoopConfig(), "filtered")["sft"]
    assert identity(LoopConfig(sft={"max_length": 1024}), "filtered")["sft"]["max_length"] == 1024
