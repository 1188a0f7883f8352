"""SFT on the tiny student: a plain torch loop vs TRL's SFTTrainer, default-ish and configured.

FINDINGS
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM

from tgrs_agents.distill import SFTSettings, collate, distill, encode
from tgrs_agents.student import tiny
from tgrs_agents.student.chat import template_messages
from tgrs_agents.tasks import arithmetic

SETTINGS = SFTSettings(steps=200, batch_size=32, lr=1e-3, warmup_ratio=0.05, min_lr_ratio=0.1,
                       betas=(0.9, 0.98), grad_clip=1.0, max_length=128, seed=0)


@dataclass
class Arm:
    name: str
    train_seconds: float  # from encoded rows to trained model (TRL: SFTTrainer construction included)
    cpu_seconds: float  # CPU time over the same window
    step_seconds: list[float]  # wall time of each step
    logged: list[tuple[int, float]]  # (step, mean loss since the previous log)
    tokens: int  # non-pad tokens through the model, prompt and tool tokens included

    @property
    def steps(self) -> int:
        return len(self.step_seconds)

    def loss_last(self, n: int = 20) -> float:
        """Mean loss over the last ``n`` steps, from logs that may cover several steps each."""
        end = self.logged[-1][0]
        total = weight = 0.0
        prev = 0
        for step, loss in self.logged:
            lo = max(prev, end - n)
            if step > lo:
                total += loss * (step - lo)
                weight += step - lo
            prev = step
        return total / weight


# ------------------------------------------------------------------------------------ set-up

def setup(workdir: Path) -> tuple[Path, list[dict[str, Any]]]:
    """The tiny student (tokenizer trained on the task corpus) and ~300 seed demonstrations, noise 0.3."""
    train, _ = arithmetic.splits(300, 128, seed=0)
    demos = arithmetic.seed_demonstrations(train, noise=0.3, seed=0)
    tokenizer = tiny.train_tokenizer([json.dumps(d) for d in demos])
    base = tiny.save(tiny.build_model(tokenizer, seed=0), tokenizer, workdir / "base")
    return base, demos


def from_distill(name: str, base: Path, demos: list[dict[str, Any]], out: Path, s: SFTSettings) -> Arm:
    r = distill(base, demos, out, s)
    return Arm(name, r.train_seconds, r.train_cpu_seconds, r.step_seconds, list(enumerate(r.losses, 1)), r.tokens)


def default_trl_config(s: SFTSettings, output_dir: Path, **overrides: Any) -> Any:
    """What a user writes first: the shared hyperparameters, everything else left at TRL's defaults
    (bf16 autocast, gradient checkpointing, cosine to zero, fused AdamW, logging every 10 steps)."""
    from trl import SFTConfig

    kw: dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=s.steps, per_device_train_batch_size=s.batch_size,
        learning_rate=s.lr, adam_beta1=s.betas[0], adam_beta2=s.betas[1], warmup_steps=s.warmup_ratio,
        lr_scheduler_type="cosine", max_grad_norm=s.grad_clip, max_length=s.max_length, seed=s.seed,
        use_cpu=True, assistant_only_loss=True,
        report_to="none", save_strategy="no", disable_tqdm=True)  # quiet output only
    kw.update(overrides)
    return SFTConfig(**kw)


def trl_native(name: str, base: Path, demos: list[dict[str, Any]], config: Any,
               check_labels: bool = False) -> Arm:
    """SFTTrainer fed the conversational rows itself (messages + tools; assistant_only_loss=True)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
    from trl import SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    rows = [{"messages": template_messages(d["messages"]), "tools": json.dumps(d["tools"])} for d in demos]
    ends: list[float] = []
    logged: list[tuple[int, float]] = []
    tokens = [0]

    class Record(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ends.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ends.append(time.perf_counter())

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                logged.append((state.global_step, float(logs["loss"])))
                tokens[0] = int(float(logs.get("num_tokens", 0)))

    datasets.disable_progress_bars()
    t0, c0 = time.perf_counter(), time.process_time()
    trainer = SFTTrainer(model=model, args=config, train_dataset=datasets.Dataset.from_list(rows),
                         processing_class=tokenizer, callbacks=[Record()])
    trainer.remove_callback(PrinterCallback)
    check_t0, check_c0 = time.perf_counter(), time.process_time()  # the label check is not timed
    if check_labels:  # TRL's own tokenization and masks == distill.encode + collate, row by row
        for row, prepared in zip(demos, trainer.train_dataset, strict=True):
            ours = collate([encode(tokenizer, row, config.max_length)], tokenizer.pad_token_id)
            assert prepared["input_ids"] == ours["input_ids"][0].tolist()
            assert prepared["labels"] == ours["labels"][0].tolist()
        print(f"  check: TRL's native tokenization and labels == distill.encode/collate on all {len(demos)} rows")
    t1, c1 = time.perf_counter(), time.process_time()
    trainer.train()
    elapsed, cpu = time.perf_counter() - t1 + (check_t0 - t0), time.process_time() - c1 + (check_c0 - c0)
    return Arm(name, elapsed, cpu, [b - a for a, b in pairwise(ends)], logged, tokens[0])


# ---------------------------------------------------------------------------------- reporting

def table(arms: list[Arm], ref: Arm) -> None:
    """s/step: wall / steps (set-up included); median: the median step; cpu/step: CPU s / steps;
    tok/s: tokens / wall s; x: ratios to the reference arm (time ratios > 1 are slower)."""
    print(f"\n{'arm':47s} {'s/step':>6s} {'median':>6s} {'cpu/st':>6s} {'tok/s':>6s} {'loss@20':>7s}"
          f" {'x s/st':>6s} {'x cpu':>6s} {'x tok/s':>7s} {'x loss':>6s}")
    for a in arms:
        print(f"{a.name:47s} {a.train_seconds / a.steps:6.3f} {statistics.median(a.step_seconds):6.3f}"
              f" {a.cpu_seconds / a.steps:6.3f} {a.tokens / a.train_seconds:6.0f} {a.loss_last():7.3f}"
              f" {a.train_seconds / a.steps / (ref.train_seconds / ref.steps):6.2f}"
              f" {a.cpu_seconds / a.steps / (ref.cpu_seconds / ref.steps):6.2f}"
              f" {a.tokens / a.train_seconds / (ref.tokens / ref.train_seconds):7.2f}"
              f" {a.loss_last() / ref.loss_last():6.2f}")


def cprofile_top(fn: Any, n: int) -> None:
    prof = cProfile.Profile()
    prof.runcall(fn)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(n)
    lines = buf.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    print("\n".join(line[:150] for line in lines[start - 2:start + n + 1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--ablate-steps", type=int, default=200, help="0: skip the one-factor ablations")
    ap.add_argument("--profile-steps", type=int, default=30, help="0: skip the profiles")
    args = ap.parse_args()
    s = replace(SETTINGS, steps=args.steps)
    torch.set_flush_denormal(True)  # distill() sets it too; set here so every arm has it from the start
    torch.set_num_threads(1)  # what distill() picks for the tiny student (pick_threads), for every arm
    work = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    base, demos = setup(work)
    n_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(base).parameters())
    print(f"tiny student: {n_params / 1e6:.2f} M params; {len(demos)} demonstrations; {s.steps} steps, "
          f"batch {s.batch_size}, lr {s.lr}; torch threads {torch.get_num_threads()}; load {os.getloadavg()[0]:.1f}")

    # -- the three arms, side by side in one run
    arms = [
        from_distill("(i) plain torch loop [distill backend=torch]", base, demos, work / "torch",
                     replace(s, backend="torch")),
        trl_native("(ii) TRL SFTTrainer, default-ish", base, demos,
                   default_trl_config(s, work / "trl-default"), check_labels=True),
        from_distill("(iii) TRL SFTTrainer, configured [distill trl]", base, demos, work / "trl",
                     replace(s, backend="trl")),
    ]
    table(arms, arms[0])

    # -- one factor at a time, on top of the default-ish arm
    if args.ablate_steps:
        a = replace(s, steps=args.ablate_steps)
        flips: dict[str, dict[str, Any]] = {
            "bf16=False": dict(bf16=False),
            "gradient_checkpointing=False": dict(gradient_checkpointing=False),
            "cosine_with_min_lr (to 0.1x)": dict(lr_scheduler_type="cosine_with_min_lr",
                                                  lr_scheduler_kwargs={"min_lr_rate": a.min_lr_ratio}),
            "optim=adamw_torch (not fused)": dict(optim="adamw_torch"),
            "logging_steps=1": dict(logging_steps=1),
        }
        ablation = [trl_native("default-ish", base, demos, default_trl_config(a, work / "abl"))]
        for name, kw in flips.items():
            ablation.append(trl_native(f"  + {name}", base, demos, default_trl_config(a, work / "abl", **kw)))
        print(f"\none factor at a time from the default-ish TRL arm ({a.steps} steps; ratios vs default-ish):")
        table(ablation, ablation[0])
        threads = [from_distill(f"plain torch loop, {n} thread(s)", base, demos, work / "thr",
                                replace(a, backend="torch", threads=n)) for n in (1, 2)]
        print(f"\ntorch threads on this machine (load {os.getloadavg()[0]:.1f}; ratios vs 1 thread):")
        table(threads, threads[0])

    # -- profiles: where a step's time goes, per path
    if args.profile_steps:
        p = replace(s, steps=args.profile_steps)
        runs = {
            "TRL default-ish": lambda: trl_native("prof", base, demos, default_trl_config(p, work / "prof")),
            "TRL configured [distill trl]": lambda: distill(base, demos, work / "prof", replace(p, backend="trl")),
            "plain torch loop [distill torch]": lambda: distill(base, demos, work / "prof",
                                                                replace(p, backend="torch")),
        }
        for name, run in runs.items():
            print(f"\ncProfile, {name}, {p.steps} steps (set-up included): top functions by own time")
            cprofile_top(run, 14)
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                run()
            print(f"\ntorch.profiler, {name}, {p.steps} steps: top ops by self CPU time")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12,
                                            max_name_column_width=50))

if __name__ == "__main__":
    main()
