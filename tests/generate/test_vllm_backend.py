"""The vLLM backend: it imports without vllm, shares the tool-call parser, and drives vLLM's API.

The glue is checked against a stand-in ``vllm`` module that records what it is given (the
documented ``LLM.generate(prompts, sampling_params=[...], use_tqdm=, lora_request=)``,
``SamplingParams`` and ``LoRARequest(name, int_id, path)``). A real run needs vllm and a GPU and is
skipped without them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import types
from typing import Any, ClassVar

import pytest

from tgrs_agents.generate import (
    SamplingParams,
    ToolBox,
    VLLMBackend,
    base,
    calculator_tool,
    hf,
    rollout,
    vllm_backend,
)
from tgrs_agents.tasks.arithmetic import make_tasks
from tgrs_agents.tasks.arithmetic_data import CALCULATOR_TOOL

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def test_module_imports_without_vllm() -> None:
    code = ("import sys, tgrs_agents.generate.vllm_backend as m; "
            "print(m.VLLMBackend.__name__, 'vllm' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["VLLMBackend", "False", "False"]


def test_backends_share_one_parser() -> None:
    for name in ("decode_turn", "render_prompt", "fit_prompt", "stop_token_ids", "detect_tool_format"):
        assert getattr(vllm_backend, name) is getattr(base, name) is getattr(hf, name), name
    content, calls = base.parse_tool_calls("<|call|>calculator 1+2", [CALCULATOR_TOOL], "compact")
    assert content == "" and calls == [{"type": "function", "function": {
        "name": "calculator", "arguments": '{"expression": "1+2"}'}}]
    content, calls = base.parse_tool_calls(
        '<tool_call>{"name": "calculator", "arguments": {"expression": "1+2"}}</tool_call>', None, "hermes")
    assert content == "" and calls and calls[0]["function"]["arguments"] == '{"expression": "1+2"}'


# ----- against a stand-in vllm module -----------------------------------------------------------

class FakeSamplingParams:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class FakeLoRARequest:
    def __init__(self, lora_name: str, lora_int_id: int, lora_path: str) -> None:
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class FakeLLM:
    """Answers each prompt with a calculator call, or after a tool result with ``Answer: <result>``."""

    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, model: str, **kw: Any) -> None:
        from tgrs_agents.student import tiny

        self.kw = {"model": model, **kw}
        self.tokenizer = tiny.train_tokenizer(["What is 12 + 34 - 5? Answer: calculator"])
        self.calls: list[dict[str, Any]] = []
        FakeLLM.instances.append(self)

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def generate(self, prompts: list[dict[str, Any]], sampling_params: list[Any], *, use_tqdm: bool,
                 lora_request: Any) -> list[Any]:
        self.calls.append({"prompts": prompts, "params": sampling_params, "lora": lora_request})
        outs = []
        for p in prompts:
            text = self.tokenizer.decode(p["prompt_token_ids"], skip_special_tokens=False)
            if "<|tool|>" in text:
                reply = "Answer: " + text.rsplit("<|tool|>", 1)[1].split("<|end|>")[0] + "<|end|>"
            else:
                expr = text.split("What is ")[1].split("?")[0].replace(" ", "")
                reply = f"<|call|>calculator {expr}<|end|>"
            ids = self.tokenizer(reply, add_special_tokens=False)["input_ids"]
            done = types.SimpleNamespace(token_ids=ids, finish_reason="stop")
            outs.append(types.SimpleNamespace(outputs=[done]))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Any:
    vllm = types.ModuleType("vllm")
    vllm.LLM = FakeLLM  # type: ignore[attr-defined]
    vllm.SamplingParams = FakeSamplingParams  # type: ignore[attr-defined]
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", request)
    FakeLLM.instances.clear()
    return vllm


def test_rollout_through_the_vllm_glue(fake_vllm: Any) -> None:
    be = VLLMBackend("some/model", lora_path="/adapters/round-1", max_model_len=128, seed=3)
    (llm,) = FakeLLM.instances
    assert llm.kw["enable_lora"] is True and llm.kw["max_lora_rank"] == 64 and llm.kw["seed"] == 3
    assert llm.kw["max_model_len"] == 128 and be.tool_format == "compact"
    tasks = make_tasks(2, seed=4)
    params = SamplingParams(n=3, temperature=1.0, top_p=0.95, max_new_tokens=30, seed=11)
    recs = asyncio.run(rollout(be, tasks, toolbox=ToolBox([calculator_tool()]), params=params,
                               max_tokens=50))
    for r, task in zip(recs[::3], tasks, strict=True):
        assert r["metadata"]["stop"] == "final"
        assert r["messages"][2]["content"] == str(task.reference)
        assert r["messages"][3] == {"role": "assistant", "content": f"Answer: {task.reference}"}
    first, second = llm.calls
    assert len(first["prompts"]) == 6 and len(second["prompts"]) == 6
    sp = first["params"]
    assert {p.max_tokens for p in sp} == {30} and {p.temperature for p in sp} == {1.0}
    assert all(p.top_p == 0.95 and p.n == 1 and p.skip_special_tokens is False for p in sp)
    assert all(p.stop_token_ids == [llm.tokenizer.convert_tokens_to_ids("<|end|>")] for p in sp)
    assert len({p.seed for p in sp}) == 6  # identical prompts must not share a seed
    used = [len(llm.tokenizer(f"<|call|>calculator {t.metadata['expression'].replace(' ', '')}<|end|>",
                              add_special_tokens=False)["input_ids"]) for t in tasks for _ in range(3)]
    assert [p.max_tokens for p in second["params"]] == [min(30, 50 - u) for u in used]
    assert first["lora"].lora_path == "/adapters/round-1" and first["lora"].lora_int_id == 1


def test_set_adapter_swaps_lora_between_rounds(fake_vllm: Any) -> None:
    be = VLLMBackend("some/model", enable_lora=True)
    assert be.lora_request is None
    be.set_adapter("/a/round-1")
    be.set_adapter("/a/round-2")
    assert (be.lora_request.lora_name, be.lora_request.lora_int_id) == ("adapter-2", 2)
    conv = [[{"role": "user", "content": "What is 1 + 2?"}]]
    asyncio.run(be.complete(conv, [None], SamplingParams()))
    assert FakeLLM.instances[0].calls[-1]["lora"].lora_path == "/a/round-2"
    be.set_adapter(None)
    asyncio.run(be.complete(conv, [None], SamplingParams()))
    assert FakeLLM.instances[0].calls[-1]["lora"] is None


# ----- the real thing ---------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_VLLM or not has_cuda(),
                    reason="vllm is not installed (pip install 'tgrs-agents[gpu]')" if not HAS_VLLM
                    else "vLLM needs a CUDA GPU")
def test_vllm_samples_the_tiny_student(tmp_path: Any) -> None:  # pragma: no cover - GPU only
    from tgrs_agents.student import tiny

    tasks = make_tasks(4, seed=1)
    tok = tiny.train_tokenizer([t.messages[0].content for t in tasks])
    tiny.save(tiny.build_model(tok), tok, tmp_path / "student")
    be = VLLMBackend(str(tmp_path / "student"), max_model_len=128, gpu_memory_utilization=0.2)
    convs = [[t.messages[0].model_dump(exclude_none=True)] for t in tasks]
    turns = asyncio.run(be.complete(convs, [[CALCULATOR_TOOL]] * 4, SamplingParams(max_new_tokens=16)))
    assert len(turns) == 4 and all(0 < t.n_tokens <= 16 for t in turns)
