"""Sampling with ``transformers``: any causal LM with a chat template, from the tiny student to Qwen.

Each conversation is rendered with the tokenizer's own chat template, prompts are sorted by length
and cut into batches of ``batch_size``, left padded by hand (whatever the tokenizer's
``padding_side``), and sampled with the KV cache (``model.generate`` or the compact loop below,
``decode``). Every row stops at a turn
end (the eos, ``<|end|>``, ``<|im_end|>``) or at its own new-token cap; only the new tokens are
decoded and their tool calls parsed. The sampling distribution is exactly ``temperature`` and
``top_p``: defaults a checkpoint's ``generation_config`` may carry (``top_k``, repetition penalty)
are switched off.

Generation runs in the backend's own worker thread so the event loop stays free, one call at a
time. Per-thread settings are made there and stay there: flush-denormal (x86 MXCSR is per thread;
set in the main thread it leaks into unrelated code, e.g. it makes hypothesis refuse to draw floats)
and the intra-op thread count. A ``seed`` reseeds torch's global generator before each call.

``threads`` sets torch's intra-op threads while generating. ``"auto"`` (the default) uses one
thread for a small model (under 20 M parameters) on CPU: a tiny model's steps are too small to
split, and with two threads on two busy cores OpenMP's spin-waiting made a round of the tiny
student 5-15x slower than with one (measured while other processes competed for the cores; one
thread degrades gracefully). For a larger model on CPU it uses the cores that are idle when a call
starts (the core count minus the one-minute load average, rounded, at least one; never more than
torch's own setting, e.g. ``OMP_NUM_THREADS``), so a busy machine gets one thread instead of a
spinning pair; on a GPU it leaves torch's setting.

``decode`` picks the decoding loop. ``"generate"`` is ``model.generate`` over each batch: every row is
computed until the batch's longest row ends. ``"compact"`` is this module's own loop over the same
model with the same KV cache (:func:`_compact_decode`): a row that has ended leaves the batch at
once (its cache rows are dropped), so a batch costs the sum of its rows' lengths rather than batch
size x longest row; a prompt sampled n times (a task's n samples) is prefilled once and its cache
copied to its n rows; logits are computed for the last position only. Greedy decoding gives the
same tokens either way (tested); sampling draws from the same distribution (``temperature``, then
``top_p``), with other random draws. ``"auto"`` (the default) uses ``compact`` for models of 20 M
parameters or more and ``generate`` for smaller ones, whose steps cost nearly the same at any batch
size. The loop runs under ``torch.inference_mode``. ``benchmarks/bench_smollm2_loop.py --gen-only``
(SmolLM2-135M-Instruct, 16 prompts x 4 samples, 48 tokens, CPU): 118 tokens per CPU-second against
``generate``'s 70 (1.7x); with bf16 weights (``dtype=torch.bfloat16``, on a CPU with avx512_bf16) 180.

``num_return_sequences`` is not used: the n samples of a prompt are n rows of a plain batch (later
turns' prompts all differ anyway); ``generate`` expanded its inputs before the first forward pass, so
it cost nearly what n rows cost (the tiny student's first turn, 192 prompts x 8: 3.2 s vs 3.4 s of
CPU), and the compact loop prefills a repeated prompt once.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from ..teachers.loading import load_model
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

SMALL_MODEL_PARAMS = 20_000_000


def resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_student(path_or_name: str | Path, *, device: str | None = None,
                 dtype: Any = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a local directory, a Hub name (e.g. ``Qwen/Qwen2.5-0.5B-Instruct``),
    a ``.gguf`` file or ``gguf:PACKAGE`` (see :mod:`tgrs_agents.teachers.loading`).

    ``dtype`` None: float32 on CPU (and for GGUF), the checkpoint's own dtype on GPU. Flush-denormal is
    not set here but in the thread that runs the model (see the module docstring).
    """
    return load_model(path_or_name, device=resolve_device(device), dtype=dtype,
                      tokenizer_kwargs={"padding_side": "left"})


class TransformersBackend:
    """A :class:`~tgrs_agents.generate.base.ChatBackend` over a local ``transformers`` model."""

    def __init__(self, model_or_path: Any, tokenizer: Any = None, *, device: str | None = None,
                 dtype: Any = None, batch_size: int = 512,
                 tool_format: Literal["auto", "compact", "hermes"] = "auto",
                 threads: int | Literal["auto"] | None = "auto",
                 decode: Literal["auto", "generate", "compact"] = "auto") -> None:
        self.device = resolve_device(device)
        if isinstance(model_or_path, str | Path):
            model, loaded_tok = load_student(model_or_path, device=self.device, dtype=dtype)
            tokenizer = tokenizer if tokenizer is not None else loaded_tok
        else:
            model = model_or_path
            if tokenizer is None:
                raise ValueError("pass the tokenizer with a model object")
            model = model.to(self.device, dtype=dtype) if dtype is not None else model.to(self.device)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
        self.auto_threads = threads == "auto" and self.device == "cpu" and not small  # idle cores, per call
        if threads == "auto":  # see the module docstring
            threads = 1 if self.device == "cpu" and small else None
        self.threads: int | None = threads
        self.decode: Literal["generate", "compact"] = (("generate" if small else "compact")
                                                       if decode == "auto" else decode)
        self.tool_format: ToolFormat = (detect_tool_format(tokenizer.chat_template)
                                        if tool_format == "auto" else tool_format)
        self.stop_ids = stop_token_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None))
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.stop_ids[0])
        self.max_positions: int | None = getattr(model.config, "max_position_embeddings", None)
        self.calls = 0
        self._lock = asyncio.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tgrs-generate")

    async def complete(self, conversations: list[list[dict[str, Any]]],
                       tools: list[list[dict[str, Any]] | None], params: SamplingParams, *,
                       max_new_tokens: Sequence[int] | None = None) -> list[Turn]:
        caps = token_caps(len(conversations), params, max_new_tokens, tools)
        async with self._lock:
            self.calls += 1
            job = functools.partial(self._complete, conversations, tools, params, caps, self.calls)
            return await asyncio.get_running_loop().run_in_executor(self._worker, job)

    async def aclose(self) -> None:
        self._worker.shutdown(wait=True)

    # ----- the worker thread -----------------------------------------------------------------------
    def _complete(self, conversations: list[list[dict[str, Any]]],
                  tools: list[list[dict[str, Any]] | None], params: SamplingParams,
                  caps: list[int], call: int) -> list[Turn]:
        import torch

        if self.device == "cpu":
            torch.set_flush_denormal(True)  # this thread only: the backend's own worker
        texts = [render_prompt(self.tokenizer, c, t) for c, t in zip(conversations, tools, strict=True)]
        encoded = self.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        rows = [fit_prompt(list(ids), cap, self.max_positions)
                for ids, cap in zip(encoded, caps, strict=True)]
        if params.seed is not None:
            torch.manual_seed(params.seed + 1_000_003 * call)
        threads = torch.get_num_threads()
        if self.auto_threads:  # never more than torch's own setting (OMP_NUM_THREADS, else the cores)
            torch.set_num_threads(min(threads, idle_cores()))
        elif self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            return self._sample(rows, tools, params)
        finally:
            torch.set_num_threads(threads)

    def _sample(self, rows: list[tuple[list[int], int, bool]], tools: list[list[dict[str, Any]] | None],
                params: SamplingParams) -> list[Turn]:
        turns: list[Turn | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        todo = [i for i in order if rows[i][1] > 0]
        for i in order:
            if rows[i][1] == 0:  # no room to generate anything
                turns[i] = Turn("", None, "length" + ("+prompt_truncated" if rows[i][2] else ""), 0)
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            gen = self._generate if self.decode == "generate" else self._compact
            new = gen([rows[i][0] for i in batch], [rows[i][1] for i in batch], params)
            for i, ids in zip(batch, new, strict=True):
                _, cap, truncated = rows[i]
                turns[i] = decode_turn(self.tokenizer, ids, self.stop_ids, cap, tools[i],
                                       self.tool_format, truncated)
        done = [t for t in turns if t is not None]
        assert len(done) == len(turns)
        return done

    def _generate(self, prompts: list[list[int]], caps: list[int], params: SamplingParams) -> list[list[int]]:
        """Left-pad, sample, and return each row's new token ids."""
        import torch
        from transformers import GenerationConfig, StoppingCriteriaList

        input_ids, mask = self._left_pad(prompts)
        width = input_ids.shape[1]
        sample = params.temperature > 0
        config = GenerationConfig(
            max_new_tokens=max(caps), do_sample=sample, num_beams=1, use_cache=True,
            eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
            # set every knob, so that a checkpoint's own defaults (Qwen: top_k=20, repetition
            # penalty) neither change the distribution nor draw warnings; greedy gets neutral ones
            temperature=params.temperature if sample else 1.0,
            top_p=params.top_p if sample else 1.0, top_k=0 if sample else 50,
            repetition_penalty=1.0,
        )
        cap_t = torch.tensor(caps, device=self.device)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([_row_caps(width, cap_t)]),
            )
        return [row.tolist() for row in out[:, width:].cpu()]


    def _left_pad(self, prompts: Sequence[Sequence[int]]) -> tuple[Any, Any]:
        """(input ids, attention mask), prompts aligned at the right edge."""
        from ..teachers.loading import left_pad

        return left_pad(prompts, self.pad_id)

    def _compact(self, prompts: list[list[int]], caps: list[int], params: SamplingParams) -> list[list[int]]:
        import torch

        unique: dict[tuple[int, ...], int] = {}  # the n samples of a task share one prompt: one prefill
        rows = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
        input_ids, mask = self._left_pad(list(unique))
        with torch.inference_mode():
            return _compact_decode(self.model, input_ids.to(self.device), mask.to(self.device), caps,
                                   self.stop_ids, params, rows=rows if len(unique) < len(rows) else None)


def idle_cores() -> int:
    """Cores not taken by other work when a call starts: the core count minus the one-minute load
    average (rounded), at least one (see the module docstring)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:
        return cores
    return max(1, min(cores, cores - round(load)))


def _next_tokens(logits: Any, params: SamplingParams) -> Any:
    """One token per row from last-position logits: argmax at temperature 0, else a draw at
    ``temperature`` from the smallest set of tokens whose probability reaches ``top_p``."""
    import torch

    if params.temperature <= 0:
        return logits.argmax(-1)
    scores = logits.float() / params.temperature
    if params.top_p < 1.0:  # as transformers' TopPLogitsWarper: drop the tail below 1 - top_p, keep the top token
        sorted_scores, order = scores.sort(dim=-1)
        drop = sorted_scores.softmax(-1).cumsum(-1) <= 1 - params.top_p
        drop[:, -1] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    return torch.multinomial(scores.softmax(-1), 1).squeeze(1)


def _compact_decode(model: Any, input_ids: Any, mask: Any, caps: list[int], stop_ids: Sequence[int],
                    params: SamplingParams, rows: list[int] | None = None) -> list[list[int]]:
    """Decode left-padded prompts with the KV cache; a row leaves the batch when it emits a stop token
    (kept, as ``generate`` keeps it) or reaches its cap. ``rows``: the prompt of each output row (a
    prompt sampled n times is prefilled once, then its cache is copied); None: one row per prompt.
    Returns each row's new token ids."""
    import torch

    # transformers >= 5.2x names it ``cache`` (``past_key_values`` is deprecated), earlier ones the other way
    key = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    res = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **{key: None})
    cache, logits = getattr(res, key), res.logits[:, -1, :]
    if rows is not None:  # copy each prompt's cache to its rows
        expand = torch.tensor(rows, device=input_ids.device)
        cache.batch_select_indices(expand)
        mask, positions, logits = mask[expand], positions[expand], logits[expand]
    n = mask.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    live = torch.arange(n)  # the original row of each row still in the batch
    left = torch.tensor(caps)  # tokens each live row may still take
    stops = torch.tensor(sorted(set(stop_ids)), device=input_ids.device)
    step_pos = positions
    while True:
        tok = _next_tokens(logits, params)
        done = torch.isin(tok, stops).cpu()
        left -= 1
        done |= left <= 0
        for row, t in zip(live.tolist(), tok.tolist(), strict=True):
            out[row].append(t)
        if bool(done.all()):
            return out
        if bool(done.any()):  # the rows that ended leave the batch, their cache rows too
            keep = (~done).nonzero().squeeze(1)
            live, left, tok = live[keep], left[keep], tok[keep.to(tok.device)]
            kd = keep.to(mask.device)
            mask, step_pos = mask[kd], step_pos[kd]
            cache.batch_select_indices(kd)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        step_pos = step_pos[:, -1:] + 1
        res = model(input_ids=tok.unsqueeze(1), attention_mask=mask, position_ids=step_pos, use_cache=True,
                    logits_to_keep=1, **{key: cache})
        cache, logits = getattr(res, key), res.logits[:, -1, :]


def _row_caps(start: int, caps: Any) -> Any:
    """A stopping criterion that ends each row at its own number of new tokens."""
    from transformers import StoppingCriteria

    class RowCaps(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return caps <= (input_ids.shape[1] - start)

    return RowCaps()
