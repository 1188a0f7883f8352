"""distill.py: a tiny student trained on a few rows, both backends, masks, save/reload, LoRA, JSONL input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tgrs_agents.errors import ConfigError  # noqa: E402
from tgrs_agents.loop.distill import LoraSettings, SFTSettings, collate, distill, encode  # noqa: E402
from tgrs_agents.student import tiny  # noqa: E402
from tgrs_agents.tasks import arithmetic  # noqa: E402

FAST = SFTSettings(steps=30, batch_size=8, lr=3e-3, warmup_ratio=0.1, seed=0)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    train, _ = arithmetic.splits(16, 4, seed=1)
    return arithmetic.seed_demonstrations(train, noise=0.0, seed=1)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, rows: list[dict[str, Any]]) -> Path:
    tokenizer = tiny.train_tokenizer([json.dumps(r) for r in rows])
    return tiny.save(tiny.build_model(tokenizer, seed=0), tokenizer, tmp_path_factory.mktemp("base"))


def params(path: Path) -> dict[str, Any]:
    return {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def changed(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_labels_cover_assistant_turns_only(base: Path, rows: list[dict[str, Any]]) -> None:
    tok = AutoTokenizer.from_pretrained(base)
    row = rows[0]
    expr = json.loads(row["messages"][1]["tool_calls"][0]["function"]["arguments"])["expression"]
    answer = row["messages"][3]["content"]
    short = encode(tok, rows[1], 128)
    batch = collate([encode(tok, row, 128), short], tok.pad_token_id)
    ids, labels, attn = batch["input_ids"][0], batch["labels"][0], batch["attention_mask"][0]
    trained = tok.decode(ids[labels != -100])
    # the tool call (compact syntax, from a JSON-string arguments) and the answer, each with its end token
    assert trained == f"<|call|>calculator {expr}<|end|>{answer}<|end|>"
    untrained = tok.decode(ids[(labels == -100) & (attn == 1)])
    assert row["messages"][0]["content"] in untrained  # user text
    assert f"<|tool|>{row['messages'][2]['content']}<|end|>" in untrained  # tool output
    # right padding, never trained on
    second = batch["labels"][1]
    assert (second[len(short["input_ids"]):] == -100).all()
    assert (batch["input_ids"][1][len(short["input_ids"]):] == tok.pad_token_id).all()


@pytest.mark.parametrize("backend", ["torch", "trl"])
def test_sft_lowers_loss_changes_params_and_reloads(base: Path, rows: list[dict[str, Any]], tmp_path: Path,
                                                    backend: str) -> None:
    r = distill(base, rows, tmp_path / "out", SFTSettings(**{**FAST.__dict__, "backend": backend}))
    assert r.backend == backend and len(r.losses) == FAST.steps and r.rows == len(rows)
    assert sum(r.losses[-5:]) / 5 < 0.7 * sum(r.losses[:5]) / 5
    assert r.tokens > 0 and r.tokens_per_s > 0 and r.wall_seconds >= r.train_seconds > 0
    assert changed(params(base), params(r.out_dir))
    tok = AutoTokenizer.from_pretrained(r.out_dir)
    assert tok.chat_template == tiny.CHAT_TEMPLATE and tok.padding_side == "left"
    assert json.loads((r.out_dir / "distill.json").read_text())["backend"] == backend


def test_backends_train_the_same_way(base: Path, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    """Same batches in the same order, same masks, same schedule: the same loss curve (TRL logs 4 decimals)."""
    s = {**FAST.__dict__, "steps": 12}
    a = distill(base, rows, tmp_path / "torch", SFTSettings(**{**s, "backend": "torch"}))
    b = distill(base, rows, tmp_path / "trl", SFTSettings(**{**s, "backend": "trl"}))
    assert a.losses == pytest.approx(b.losses, rel=1e-3, abs=1e-4)
    assert a.tokens == b.tokens


def test_auto_picks_the_plain_loop_for_a_tiny_model_on_cpu(base: Path, rows: list[dict[str, Any]],
                                                           tmp_path: Path) -> None:
    before = torch.get_num_threads()
    r = distill(base, rows[:4], tmp_path / "out", SFTSettings(steps=2, batch_size=4))
    assert r.backend == ("trl" if torch.cuda.is_available() else "torch")
    assert torch.get_num_threads() == before  # the caller's thread count is restored


def test_jsonl_path_with_tools_and_json_string_arguments(base: Path, rows: list[dict[str, Any]],
                                                         tmp_path: Path) -> None:
    path = tmp_path / "accepted.jsonl"
    with path.open("w") as f:
        for r in rows:  # as the pipeline writes them: extra fields, arguments as JSON strings
            assert isinstance(r["messages"][1]["tool_calls"][0]["function"]["arguments"], str)
            f.write(json.dumps({**r, "score": 1.0, "decided_by": "verifier"}) + "\n")
        f.write("\n")
    r = distill(base, path, tmp_path / "out", SFTSettings(steps=3, batch_size=4, backend="torch"))
    assert r.rows == len(rows) and len(r.losses) == 3


@pytest.mark.parametrize("backend", ["torch", "trl"])
def test_bf16_autocast_on_request(base: Path, rows: list[dict[str, Any]], tmp_path: Path, backend: str) -> None:
    r = distill(base, rows, tmp_path / "out", SFTSettings(steps=6, batch_size=8, lr=3e-3, bf16=True, backend=backend))
    assert r.losses[-1] < r.losses[0]
    assert AutoModelForCausalLM.from_pretrained(r.out_dir).dtype == torch.float32  # fp32 weights either way


def test_a_template_without_generation_markers_is_refused(base: Path, rows: list[dict[str, Any]],
                                                          tmp_path: Path) -> None:
    """No {% generation %}: TRL's patched training templates cover known hub templates; others are refused."""
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = tiny.CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    plain = tmp_path / "plain"
    tok.save_pretrained(plain)
    AutoModelForCausalLM.from_pretrained(base).save_pretrained(plain)
    with pytest.raises(ConfigError, match="generation"):
        distill(plain, rows, tmp_path / "out", SFTSettings(steps=1, backend="torch"))


def test_rows_without_assistant_tokens_are_rejected(base: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="assistant"):
        distill(base, [{"messages": [{"role": "user", "content": "hi"}]}], tmp_path / "out",
                SFTSettings(steps=1, backend="torch"))
    pool = tmp_path / "pool.jsonl"  # a file names itself in the error
    pool.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ConfigError, match="assistant") as ei:
        distill(base, pool, tmp_path / "out", SFTSettings(steps=1, backend="torch"))
    assert ei.value.file == str(pool)


@pytest.mark.parametrize("merge", [True, False])
def test_lora_runs_and_saves(base: Path, rows: list[dict[str, Any]], tmp_path: Path, merge: bool) -> None:
    s = SFTSettings(steps=8, batch_size=8, lr=5e-3, backend="torch",
                    lora=LoraSettings(r=2, alpha=4, target_modules=("q_proj", "v_proj"), merge=merge))
    r = distill(base, rows, tmp_path / "out", s)
    assert r.losses[-1] < r.losses[0]
    if merge:  # a plain model dir: the adapters are folded into q_proj / v_proj
        assert not (r.out_dir / "adapter_config.json").exists()
        before, after = params(base), params(r.out_dir)
        assert changed(before, after) and set(before) == set(after)
        assert torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    else:  # the adapter alone, next to the tokenizer
        from peft import AutoPeftModelForCausalLM

        assert json.loads((r.out_dir / "adapter_config.json").read_text())["r"] == 2
        with warnings.catch_warnings():  # peft 0.21 reads transformers 5's deprecated is_gradient_checkpointing
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            assert AutoPeftModelForCausalLM.from_pretrained(r.out_dir) is not None
    assert AutoTokenizer.from_pretrained(r.out_dir).padding_side == "left"


def test_lora_with_trl(base: Path, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    s = SFTSettings(steps=8, batch_size=8, lr=5e-3, backend="trl", lora=LoraSettings(r=2, alpha=4))
    r = distill(base, rows, tmp_path / "out", s)
    assert r.losses[-1] < r.losses[0] and changed(params(base), params(r.out_dir))
