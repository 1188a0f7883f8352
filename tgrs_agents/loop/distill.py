"""SFT on accepted trajectories: the step that folds the teachers' picks back into the student.

Reads top to bottom: settings -> load the model -> encode the rows -> train (TRL or a plain torch
loop, same data, same masks, same schedule) -> save -> result.

* Data: ``accepted.jsonl`` rows (or dicts) with ``messages`` in OpenAI format, tool calls and tool
  results included, and ``tools``. Each row goes through the model's own chat template with its
  ``tools`` schema and ``return_assistant_tokens_mask=True``: loss is taken on assistant turns only
  (the ``{% generation %}`` spans), never on user text or tool output.
* We encode the rows ourselves and hand TRL ``input_ids`` + ``assistant_masks`` columns (TRL folds
  the mask into ``labels``, exactly as it does with ``assistant_only_loss=True``). Why not give TRL a
  ``messages`` column? Arrow unifies the tool-call ``arguments`` dicts across rows, so a
  ``calculator(expression)`` call comes back as ``{"expression": ..., "query": None, ...}`` when
  another row called a different tool, and the template renders the phantom ``None``s. Encoding
  here also guarantees both backends train on the very same tokens.
* Backends: ``"trl"`` runs TRL's ``SFTTrainer`` with an ``SFTConfig`` as a black box (never
  subclassed); ``"torch"`` is a plain loop. Configured as in :func:`trl_config`, TRL trains exactly
  like the plain loop (same batches in the same order, same masks, same schedule: the same loss
  curve), but on the tiny student it costs ~1.15-1.2x the CPU time per step plus 0.4-0.8 s per call,
  and no SFTConfig field removes that: SFTTrainer always installs its fused LM head, which also
  computes per-token entropy and top-1 accuracy for its metrics, and Trainer runs ``gc.collect()``
  before training. So ``"auto"`` (default) picks the plain loop for small models (< 50 M
  parameters) on CPU and TRL otherwise, where its fused head (no full logits), FlashAttention
  paths and the accelerate stack pay off. Evidence: ``benchmarks/bench_sft.py``.
* Precision: fp32 on CPU, bf16 autocast on GPU (``bf16`` overrides). Threads: models < 5 M params
  train on one CPU thread unless ``threads`` or ``OMP_NUM_THREADS`` says otherwise. On 2 idle cores
  two threads ran the tiny student 1.7x faster than one, but with any other process busy they ran
  5-13x slower (OpenMP threads spin while a core is taken): one thread is the low-regret default.
* LoRA (peft): adapters are merged into the weights before saving by default
  (``LoraSettings.merge=True``), so ``out_dir`` is a plain model that ``from_pretrained`` loads and the
  next round can train again; with ``merge=False`` only the adapter is saved (load it with
  ``peft.AutoPeftModelForCausalLM``).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from itertools import count, pairwise
from pathlib import Path
from typing import Any, Literal

from ..chat import has_generation_markers, template_messages
from ..errors import ConfigError

SMALL_MODEL_PARAMS = 50_000_000  # backend "auto": below this, on CPU, the plain loop (bench_sft.py)
ONE_THREAD_PARAMS = 5_000_000  # threads None: below this, on CPU, one torch thread (see the module docstring)


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"
    merge: bool = True  # merge adapters into the weights before saving (else save the adapter only)


@dataclass(frozen=True)
class SFTSettings:
    steps: int = 100
    batch_size: int = 32
    lr: float = 5e-4
    warmup_ratio: float = 0.05  # linear warm-up over ceil(ratio * steps) steps
    min_lr_ratio: float = 0.1  # then cosine down to lr * min_lr_ratio
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0  # on matrices only (biases and norms excluded, as in transformers.Trainer)
    grad_clip: float = 1.0
    max_length: int = 128  # tokens kept per row (the start of the row)
    seed: int = 0
    lora: LoraSettings | None = None
    backend: Literal["auto", "trl", "torch"] = "auto"
    threads: int | None = None  # torch threads while training, then restored; None: 1 for tiny models on CPU
    bf16: bool | None = None  # bf16 autocast; None: on a GPU that has it. On a CPU with native bf16 (avx512_bf16,
    # AMX) it cut the tiny student's step to 0.64-0.76x, loss within ~4% after 200 steps (bench_sft.py)


@dataclass
class DistillResult:
    out_dir: Path
    backend: str  # the one that ran ("auto" resolved)
    losses: list[float]  # mean loss over assistant tokens, one per optimizer step (TRL logs 4 decimals)
    tokens: int  # tokens fed through the model: prompt and tool tokens included, padding excluded
    tokens_per_s: float  # tokens / train_seconds
    train_seconds: float  # encoded rows -> trained model (TRL: SFTTrainer construction included)
    train_cpu_seconds: float  # CPU time of the training loop (all threads): a yardstick a busy machine barely moves
    wall_seconds: float  # the whole call: load, encode, train, save
    rows: int  # rows trained on (after dropping rows with no assistant token)
    step_seconds: list[float] = field(default_factory=list)  # wall time of each step (median: robust to load)


# ----------------------------------------------------------------------------------------- data

def load_rows(data: str | Path | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``accepted.jsonl`` (a path) or rows already in memory."""
    if isinstance(data, str | Path):
        with open(data, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    return list(data)


def training_template(tokenizer: Any) -> str | None:
    """None when the tokenizer's chat template marks assistant text with ``{% generation %}`` (the tiny student's
    does); else TRL's patched training copy of a known template (Qwen, Llama, Gemma, ...), as SFTTrainer does."""
    if not tokenizer.chat_template:
        raise ConfigError("the tokenizer has no chat template to render the conversations with")
    if has_generation_markers(tokenizer.chat_template):
        return None
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tokenizer)
    except ValueError as e:  # a template TRL has no training copy of: the loss mask cannot be built
        raise ConfigError(f"the chat template has no {{% generation %}} markers: {e}") from None


def encode(tokenizer: Any, row: dict[str, Any], max_length: int, template: str | None = None) -> dict[str, list[int]]:
    """One row -> ``input_ids`` and ``assistant_masks`` (1 where the loss is taken), via the chat template."""
    tools = row.get("tools")
    tools = json.loads(tools) if isinstance(tools, str) else tools
    enc = tokenizer.apply_chat_template(
        template_messages(row["messages"]),  # tool-call arguments: JSON string -> dict
        tools=tools or None,
        chat_template=template,  # None: the tokenizer's own
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
    )
    return {"input_ids": list(enc["input_ids"][:max_length]),
            "assistant_masks": list(enc["assistant_masks"][:max_length])}


def collate(examples: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a batch; ``labels`` are -100 outside assistant tokens and on padding (TRL does the same)."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        row = torch.tensor(e["input_ids"])
        ids[i, :n], attn[i, :n] = row, 1
        labels[i, :n] = torch.where(torch.tensor(e["assistant_masks"]) == 1, row, -100)
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless shuffled epochs, epoch ``e`` shuffled with seed ``seed + e``; the last batch of an epoch may be
    short. This is the order Trainer's (accelerate's) sampler draws, so both backends see the same batches."""
    import torch

    for epoch in count():
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for i in range(0, n, batch_size):
            yield order[i:i + batch_size]


# --------------------------------------------------------------------------------- the loops

def train_torch(model: Any, examples: list[dict[str, list[int]]], s: SFTSettings, pad_id: int,
                device: Any, bf16: bool) -> tuple[list[float], int, list[float]]:
    """The plain loop: AdamW, warm-up then cosine to ``min_lr_ratio``, grad clipping.

    Returns (losses, tokens, step_seconds)."""
    import torch
    from transformers import get_scheduler

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": s.weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=s.lr, betas=s.betas)
    sched = get_scheduler("cosine_with_min_lr", opt, num_warmup_steps=math.ceil(s.warmup_ratio * s.steps),
                          num_training_steps=s.steps, scheduler_specific_kwargs={"min_lr_rate": s.min_lr_ratio})
    model.train()
    losses, tokens, step_seconds = [], 0, []
    order = batches(len(examples), s.batch_size, s.seed)
    for _ in range(s.steps):
        t = time.perf_counter()
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in next(order)], pad_id).items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch, use_cache=False).loss  # mean over tokens whose label is not -100
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += int(batch["attention_mask"].sum())
        step_seconds.append(time.perf_counter() - t)
    return losses, tokens, step_seconds


def trl_config(s: SFTSettings, output_dir: str | Path, *, use_cpu: bool, bf16: bool) -> Any:
    """The SFTConfig that makes TRL train like the plain loop (every deviation from TRL's defaults is deliberate)."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir),
        max_steps=s.steps,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=s.lr,
        lr_scheduler_type="cosine_with_min_lr",  # TRL/Trainer default: linear to zero
        lr_scheduler_kwargs={"min_lr_rate": s.min_lr_ratio},
        warmup_steps=s.warmup_ratio,  # a float < 1 is a ratio of max_steps (rounded up)
        optim="adamw_torch",
        adam_beta1=s.betas[0],
        adam_beta2=s.betas[1],
        weight_decay=s.weight_decay,
        max_grad_norm=s.grad_clip,
        max_length=s.max_length,
        seed=s.seed,
        use_cpu=use_cpu,
        bf16=bf16,  # TRL default: bf16 autocast even on CPU (numbers unlike the fp32 plain loop)
        activation_checkpointing=False,  # TRL default True (as gradient_checkpointing): recomputes activations
        logging_steps=1,  # one loss per step, as the plain loop
        logging_strategy="steps",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,  # nothing to pin on CPU
    )


def step_recorder() -> tuple[Any, list[dict[str, float]], list[float]]:
    """A Trainer callback keeping each logged loss record and each step's end time (for tokens/s),
    with the two lists it fills: (callback, records, ends). SFT and DPO use the same one."""
    from transformers import TrainerCallback

    records: list[dict[str, float]] = []
    ends: list[float] = []

    class Record(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ends.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ends.append(time.perf_counter())

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                records.append(dict(logs))

    return Record(), records, ends

def train_trl(model: Any, tokenizer: Any, examples: list[dict[str, list[int]]], s: SFTSettings,
              output_dir: Path, use_cpu: bool, bf16: bool) -> tuple[list[float], int, list[float]]:
    """TRL's SFTTrainer as a black box; a callback records loss and time per step.

    Returns (losses, tokens, step_seconds)."""
    import datasets
    from transformers import PrinterCallback
    from trl import SFTTrainer

    record, records, ends = step_recorder()

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        trainer = SFTTrainer(model=model, args=trl_config(s, output_dir, use_cpu=use_cpu, bf16=bf16),
                             train_dataset=datasets.Dataset.from_list(examples), processing_class=tokenizer,
                             callbacks=[record])
    finally:
        if bars:
            datasets.enable_progress_bars()
    trainer.remove_callback(PrinterCallback)  # it prints every log line
    trainer.train()
    losses = [float(r["loss"]) for r in records]
    tokens = int(float(records[-1].get("num_tokens", 0))) if records else 0
    return losses, tokens, [b - a for a, b in pairwise(ends)]


# ---------------------------------------------------------------------------------- the step

def pick_backend(model: Any, s: SFTSettings, device: Any) -> str:
    if s.backend != "auto":
        return s.backend
    small = sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS
    return "torch" if small and device.type == "cpu" else "trl"


def pick_threads(model: Any, s: SFTSettings, device: Any, current: int) -> int:
    if s.threads:
        return s.threads
    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return current  # the caller's choice
    return 1 if sum(p.numel() for p in model.parameters()) < ONE_THREAD_PARAMS else current


def distill(model_path: str | Path, data: str | Path | Sequence[dict[str, Any]], out_dir: str | Path,
            settings: SFTSettings = SFTSettings()) -> DistillResult:
    """Fine-tune ``model_path`` (a local dir or a hub name) on ``data`` (``accepted.jsonl`` or its rows), loss on
    assistant turns only, and save model + tokenizer with ``save_pretrained`` to ``out_dir``."""
    import torch

    from ..teachers.loading import load_model, load_tokenizer  # also .gguf files and gguf:PACKAGE

    t0 = time.perf_counter()
    s, out_dir = settings, Path(out_dir)
    torch.set_flush_denormal(True)  # Adam's state goes denormal on CPU: ~6x slower steps without this
    torch.manual_seed(s.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = s.bf16 if s.bf16 is not None else device.type == "cuda" and torch.cuda.is_bf16_supported()

    # -- model and tokenizer (a local tiny student dir or a hub name)
    tokenizer = load_tokenizer(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # fp32 master weights; a frozen LoRA base may stay in its checkpoint dtype on GPU
    dtype = "auto" if s.lora and device.type == "cuda" else torch.float32
    model: Any = load_model(model_path, dtype=dtype, tokenizer=False)[0]
    model.to(device)
    if s.lora:
        from peft import LoraConfig, get_peft_model

        tm = s.lora.target_modules
        with warnings.catch_warnings():  # peft 0.21 reads transformers 5's deprecated `is_gradient_checkpointing`
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            model = get_peft_model(model, LoraConfig(
                r=s.lora.r, lora_alpha=s.lora.alpha, lora_dropout=s.lora.dropout, task_type="CAUSAL_LM",
                target_modules=tm if isinstance(tm, str) else list(tm)))

    # -- data: chat template with tools, assistant mask; rows with nothing to learn are dropped
    rows, template = load_rows(data), training_template(tokenizer)
    examples = [e for e in (encode(tokenizer, r, s.max_length, template) for r in rows) if any(e["assistant_masks"])]
    if not examples:  # say so when the rows have assistant turns, all past the cut
        cut = any(any(encode(tokenizer, r, 1 << 30, template)["assistant_masks"]) for r in rows)
        why = f" in its first {s.max_length} tokens (raise max_length: [sft] max_length)" if cut else ""
        raise ConfigError(f"no row has an assistant token{why} to train on",
                          file=data if isinstance(data, str | Path) else None)

    # -- train (the caller's thread count is restored afterwards)
    backend = pick_backend(model, s, device)
    if backend not in ("torch", "trl"):
        raise ValueError(f"unknown backend {backend!r}: use 'auto', 'trl' or 'torch'")
    threads = torch.get_num_threads()
    torch.set_num_threads(pick_threads(model, s, device, threads))
    t1, c1 = time.perf_counter(), time.process_time()
    try:
        if backend == "torch":
            losses, tokens, step_seconds = train_torch(model, examples, s, tokenizer.pad_token_id, device, bf16)
        else:
            losses, tokens, step_seconds = train_trl(model, tokenizer, examples, s, out_dir,
                                                     device.type == "cpu", bf16)
    finally:
        torch.set_num_threads(threads)
    train_seconds, train_cpu_seconds = time.perf_counter() - t1, time.process_time() - c1

    # -- save
    if s.lora and s.lora.merge:
        model = model.merge_and_unload()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    result = DistillResult(out_dir=out_dir, backend=backend, losses=losses, tokens=tokens,
                           tokens_per_s=tokens / max(train_seconds, 1e-9), train_seconds=train_seconds,
                           train_cpu_seconds=train_cpu_seconds,
                           wall_seconds=time.perf_counter() - t0, rows=len(examples), step_seconds=step_seconds)
    (out_dir / "distill.json").write_text(json.dumps(
        {"settings": asdict(s), **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}},
        indent=1))
    return result
