"""Sampling with vLLM's offline engine (GPU boxes), with LoRA adapters swapped between rounds.

Prompts are rendered with the model's own chat template and given to ``LLM.generate`` as token ids
(``{"prompt_token_ids": [...]}``), one ``SamplingParams`` per conversation so that each keeps its own
new-token cap (and its own seed). The new tokens are decoded and parsed by the same functions as the
transformers backend, so both read a model's tool calls identically. vLLM's prefix cache shares the
work of the n samples of one prompt.

``set_adapter(path)`` points later calls at a new LoRA adapter (a ``LoRARequest`` with a fresh
integer id, as vLLM caches adapters by id); ``set_adapter(None)`` goes back to the base model.
vllm is imported when the backend is built, never before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from .base import (
    SamplingParams,
    ToolFormat,
    Turn,
    decode_turn,
    detect_tool_format,
    fit_prompt,
    render_prompt,
    stop_token_ids,
    token_caps,
)


class VLLMBackend:
    """A :class:`~tgrs_agents.generate.base.ChatBackend` over ``vllm.LLM``.

    ``engine_args`` go to ``vllm.LLM`` as they are (e.g. ``tensor_parallel_size``, ``dtype``).
    ``llm`` injects a ready engine (tests, or sharing one engine between backends).
    """

    def __init__(self, model: str, *, lora_path: str | Path | None = None,
                 enable_lora: bool | None = None, max_lora_rank: int = 64,
                 max_model_len: int | None = None, gpu_memory_utilization: float = 0.9,
                 seed: int = 0, tool_format: Literal["auto", "compact", "hermes"] = "auto",
                 engine_args: Mapping[str, Any] | None = None, llm: Any = None) -> None:
        self.model = model
        if llm is None:
            from vllm import LLM

            lora = enable_lora if enable_lora is not None else lora_path is not None
            extra: dict[str, Any] = dict(engine_args or {})
            if lora:
                extra["max_lora_rank"] = max_lora_rank
            if max_model_len is not None:
                extra["max_model_len"] = max_model_len
            llm = LLM(model=model, enable_lora=lora, gpu_memory_utilization=gpu_memory_utilization,
                      seed=seed, **extra)
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self.tool_format: ToolFormat = (detect_tool_format(self.tokenizer.chat_template)
                                        if tool_format == "auto" else tool_format)
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.max_positions = max_model_len
        self.lora_request: Any = None
        self._adapters = 0
        self.calls = 0
        self._lock = asyncio.Lock()
        if lora_path is not None:
            self.set_adapter(lora_path)

    def set_adapter(self, path: str | Path | None) -> None:
        """Sample from the LoRA adapter saved at ``path`` from now on (None: the base model)."""
        if path is None:
            self.lora_request = None
            return
        from vllm.lora.request import LoRARequest

        self._adapters += 1
        self.lora_request = LoRARequest(f"adapter-{self._adapters}", self._adapters, str(path))

    async def complete(self, conversations: list[list[dict[str, Any]]],
                       tools: list[list[dict[str, Any]] | None], params: SamplingParams, *,
                       max_new_tokens: Sequence[int] | None = None) -> list[Turn]:
        caps = token_caps(len(conversations), params, max_new_tokens, tools)
        async with self._lock:
            self.calls += 1
            return await asyncio.to_thread(self._complete, conversations, tools, params, caps,
                                           self.calls)

    async def aclose(self) -> None:
        self.llm = None

    def _complete(self, conversations: list[list[dict[str, Any]]],
                  tools: list[list[dict[str, Any]] | None], params: SamplingParams,
                  caps: list[int], call: int) -> list[Turn]:
        from vllm import SamplingParams as VSamplingParams

        texts = [render_prompt(self.tokenizer, c, t) for c, t in zip(conversations, tools, strict=True)]
        encoded = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        rows = [fit_prompt(list(ids), cap, self.max_positions)
                for ids, cap in zip(encoded, caps, strict=True)]
        turns: list[Turn | None] = [None] * len(rows)
        todo = [i for i, (_, cap, _) in enumerate(rows) if cap > 0]
        for i, (_, cap, truncated) in enumerate(rows):
            if cap == 0:
                turns[i] = Turn("", None, "length" + ("+prompt_truncated" if truncated else ""), 0)
        base_seed = None if params.seed is None else params.seed + 1_000_003 * call
        sampling = [
            VSamplingParams(
                n=1, temperature=params.temperature, top_p=params.top_p,
                max_tokens=rows[i][1], stop_token_ids=self.stop_ids, skip_special_tokens=False,
                seed=None if base_seed is None else base_seed + i,
            )
            for i in todo
        ]
        if todo:
            outputs = self.llm.generate([{"prompt_token_ids": rows[i][0]} for i in todo],
                                        sampling_params=sampling, use_tqdm=False,
                                        lora_request=self.lora_request)
            for i, out in zip(todo, outputs, strict=True):
                _, cap, truncated = rows[i]
                turns[i] = decode_turn(self.tokenizer, list(out.outputs[0].token_ids), self.stop_ids,
                                       cap, tools[i], self.tool_format, truncated)
        done = [t for t in turns if t is not None]
        assert len(done) == len(turns)
        return done
