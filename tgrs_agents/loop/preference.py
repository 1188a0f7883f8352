"""DPO on the panel's preference pairs: the rejected candidates are data too.

The SFT step (:mod:`tgrs_agents.loop.distill`) learns only from what the panel accepted. For the same
task the panel has also said which answers are worse, and by how much; this step turns a round's
judged candidates into preference pairs (:func:`tgrs_agents.export.pairs.pair_candidates`, the very
pairs ``tgrs export DIR --to dpo`` writes) and trains on them with TRL's ``DPOTrainer``.

Reads top to bottom: settings -> pairs (:func:`make_pairs`, ``round-K/pairs.jsonl``) -> load the
model -> ``DPOTrainer`` as a black box -> save -> result (:func:`prefer`).

* ``[train] method``: ``"sft"`` (the default, this module unused), ``"dpo"`` (DPO on the round's pairs,
  starting from the previous round's student), ``"sft+dpo"`` (SFT on the pool, then DPO starting from
  the SFT result).
* The reference model is the model DPO starts from: the previous round's student for ``dpo``, the
  round's SFT result for ``sft+dpo``. DPO's loss measures how far the policy moved from its reference
  on chosen vs rejected; a reference other than the starting point makes the implicit rewards non-zero
  before the first step (the SFT shift, not the pairs, would set the first gradients). It is also
  TRL's own choice when no ``ref_model`` is given: with LoRA the adapters are switched off, without
  it the start is loaded a second time.
* LoRA exactly as for SFT: ``[sft] lora_r`` (alpha = 2 x rank), merged into the weights before saving,
  so ``round-K/model`` is a plain checkpoint the next round loads.
* What TRL scores: TRL 1.16 takes the log-probability of every completion token, and a conversational
  completion here holds the assistant's tool calls *and the tool results* (``role: tool``). Tool
  output is the same for the same call, so it cancels in chosen - rejected only where both sides made
  the same call; elsewhere it adds text the student never writes to the margin. SFT, by contrast,
  masks tool output. We accept this to keep the trainer a black box; see
  ``benchmarks/bench_train_method.py`` for what it does to the tiny student.
* Knobs that matter for the tiny student: ``beta`` (how far from the reference the policy may go per
  unit of preference), ``lr`` and ``steps``. Pairs: ``pairs`` (mode), ``pairs_per_task``, ``min_margin``.
* A round with no pair (every candidate accepted, or every one rejected) trains nothing: the model
  carries over and the round's entry says ``dpo_carried_over``.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from ..curation.store import atomic_write
from ..export.pairs import PairSettings, pair_candidates
from .distill import LoraSettings, SFTSettings, pick_threads, step_recorder


@dataclass(frozen=True)
class DPOSettings:
    steps: int = 10  # as [train] steps: ~two passes over a round's pairs (more moved pass@1 down; README)
    batch_size: int = 16
    lr: float = 5e-5
    beta: float = 0.1  # DPO's temperature: larger keeps the policy closer to the reference
    warmup_ratio: float = 0.05  # then cosine down to lr * min_lr_ratio, as the SFT step
    min_lr_ratio: float = 0.1
    max_length: int = 256  # prompt + completion tokens kept (the start); at most the model's positions
    seed: int = 0
    lora: LoraSettings | None = None
    threads: int | None = None  # as SFTSettings.threads
    bf16: bool | None = None  # None: on a GPU that has it


@dataclass
class PreferenceResult:
    out_dir: Path
    pairs: int  # pairs trained on
    losses: list[float]  # DPO loss per optimizer step
    reward_accuracy: float | None  # last step's share of pairs whose implicit reward ranks chosen first
    reward_margin: float | None  # last step's mean implicit reward margin (chosen - rejected)
    train_seconds: float  # DPOTrainer construction (tokenising, loading the reference) and training
    wall_seconds: float  # the whole call: load, train, save
    step_seconds: list[float] = field(default_factory=list)
    logs: list[dict[str, float]] = field(default_factory=list)  # TRL's log line per step (logps/chosen, ...)


# ----------------------------------------------------------------------------------------- pairs

def make_pairs(curate_dir: Path, out_file: Path, settings: PairSettings) -> dict[str, int]:
    """The preference pairs of one round's curate run, written to ``out_file`` (JSONL, as ``tgrs export
    --to dpo``); returns the counts: ``pairs``, ``pair_tasks`` (tasks with a pair) and the candidates or
    pairs left out, by reason (``pairs_skipped_tie``, ``pairs_skipped_margin``, ...)."""
    rows: list[dict[str, Any]] = []
    counts: Mapping[str, int] = {}
    if (curate_dir / "accepted.jsonl").exists():  # else the curate run accepted nothing: nothing to prefer
        ps = pair_candidates(curate_dir, settings)
        rows, counts = ps.rows, ps.counts
    atomic_write(out_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    skipped = {f"pairs_{k}": v for k, v in sorted(counts.items())
               if (k.startswith("skipped_") or k.startswith("dropped_")) and v}
    return {"pairs": len(rows), "pair_tasks": int(counts.get("tasks_paired", 0)), **skipped}


# ------------------------------------------------------------------------------------- training

def dpo_config(s: DPOSettings, output_dir: Path, *, use_cpu: bool, bf16: bool) -> Any:
    """The DPOConfig: the SFT step's schedule and optimizer (see distill.trl_config), DPO's beta."""
    from trl import DPOConfig

    return DPOConfig(
        output_dir=str(output_dir),
        max_steps=s.steps,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=s.lr,  # DPOConfig default: 1e-6
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": s.min_lr_ratio},
        warmup_steps=s.warmup_ratio,  # a float < 1 is a ratio of max_steps
        optim="adamw_torch",
        beta=s.beta,
        max_length=s.max_length,
        seed=s.seed,
        use_cpu=use_cpu,
        bf16=bf16,
        activation_checkpointing=False,  # default True; under warnings-as-errors it also warns on CPU
        logging_steps=1,
        logging_strategy="steps",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )


def prefer(model_path: str | Path, pairs_file: str | Path, out_dir: str | Path,
           settings: DPOSettings = DPOSettings()) -> PreferenceResult:
    """DPO on ``pairs_file`` (conversational preference JSONL) starting from ``model_path``, which is also
    the reference; saves model + tokenizer to ``out_dir``."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOTrainer

    t0 = time.perf_counter()
    s, out_dir = settings, Path(out_dir)
    torch.set_flush_denormal(True)  # as in the SFT step: Adam's state goes denormal on CPU
    torch.manual_seed(s.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = s.bf16 if s.bf16 is not None else device.type == "cuda" and torch.cuda.is_bf16_supported()

    # -- model and tokenizer; LoRA as for SFT (TRL wraps the model and disables the adapters for the reference)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    positions = getattr(model.config, "max_position_embeddings", None) or s.max_length
    s = replace(s, max_length=min(s.max_length, positions))  # the tiny student has 128: never index past them
    peft_config = None
    if s.lora:
        from peft import LoraConfig

        tm = s.lora.target_modules
        peft_config = LoraConfig(r=s.lora.r, lora_alpha=s.lora.alpha, lora_dropout=s.lora.dropout,
                                 task_type="CAUSAL_LM", target_modules=tm if isinstance(tm, str) else list(tm))

    record, records, ends = step_recorder()  # the SFT step's callback: losses and step times

    # -- train: the pairs file as datasets reads it (tool-call arguments stay objects), DPOTrainer as is
    threads = torch.get_num_threads()
    torch.set_num_threads(pick_threads(model, SFTSettings(threads=s.threads), device, threads))
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    t1 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="tgrs-dpo-") as cache, warnings.catch_warnings():
            # TRL 1.16 and peft 0.21 read transformers 5's deprecated `is_gradient_checkpointing`
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            data = datasets.load_dataset("json", data_files=str(pairs_file), split="train", cache_dir=cache)
            trainer = DPOTrainer(model=model, args=dpo_config(s, out_dir, use_cpu=device.type == "cpu", bf16=bf16),
                                 train_dataset=data, processing_class=tokenizer, peft_config=peft_config,
                                 callbacks=[record])
            trainer.remove_callback(PrinterCallback)
            trainer.train()
            model = trainer.model
    finally:
        torch.set_num_threads(threads)
        if bars:
            datasets.enable_progress_bars()
    train_seconds = time.perf_counter() - t1

    # -- save (LoRA merged: the next round loads a plain model)
    if s.lora:
        model = model.merge_and_unload()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    last = records[-1] if records else {}
    acc, margin = last.get("rewards/accuracies"), last.get("rewards/margins")
    result = PreferenceResult(
        out_dir=out_dir, pairs=len(data), losses=[float(r["loss"]) for r in records],
        reward_accuracy=None if acc is None or not math.isfinite(acc) else float(acc),
        reward_margin=None if margin is None or not math.isfinite(margin) else float(margin),
        train_seconds=train_seconds, wall_seconds=time.perf_counter() - t0,
        step_seconds=[b - a for a, b in pairwise(ends)], logs=records)
    (out_dir / "dpo.json").write_text(json.dumps(
        {"settings": asdict(s), **{k: str(v) if isinstance(v, Path) else v for k, v in asdict(result).items()}},
        indent=1))
    return result
