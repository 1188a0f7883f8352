"""Train a tiny reward model in-project, so the ``reward_model`` teacher has a real, imperfect model.

Reads top to bottom: labelled rows -> split by task -> a ``LlamaForSequenceClassification`` sized
like the tiny student (one logit) -> a plain torch loop (binary cross-entropy, AdamW, warm-up then
cosine) -> held-out accuracy and AUROC -> ``save_pretrained``.

* Labels come from verifiers, never from the model: ``accepted.jsonl`` = 1 and ``rejected.jsonl`` = 0
  of a ``tgrs curate`` run directory (:func:`rows_from_run`), or any trajectories with a
  ``reference`` labelled by the ``final_answer`` check (:func:`label_with_verifier`); by default the
  built-in calculator-agent trajectories (:func:`default_rows`: right answers, mis-copied operands,
  mis-copied results, missing ``Answer:``).
* The model reads exactly what the teacher will read: :func:`~tgrs_agents.teachers.reward_model.render_conversation`
  (the tokenizer's chat template), the *last* ``max_length`` tokens, right padded, with
  ``pad_token_id`` on the config. It never sees the reference, so it has to learn what a right
  trajectory looks like (the tool call copies the question; the answer copies the tool result).
* Tasks are split between training and held-out rows, never shared.

``python -m tgrs_agents.student.train_reward --out runs/reward-model`` trains one on the built-in data
(``--from-run DIR`` for a curate run, ``--tokenizer DIR`` to reuse a student's tokenizer).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..teachers.loading import load_model, load_tokenizer


@dataclass(frozen=True)
class RewardSettings:
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    max_length: int = 128  # tokens read (the end of the conversation)
    heldout: float = 0.2  # fraction of *tasks* held out
    seed: int = 0
    hidden_size: int = 128
    intermediate_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4


@dataclass
class RewardResult:
    out_dir: Path
    losses: list[float]
    train_rows: int
    heldout_rows: int
    heldout_accuracy: float | None  # at score 0.5 (logit 0)
    heldout_auroc: float | None
    train_seconds: float
    heldout_scores: list[tuple[int, float]] = field(default_factory=list)  # (label, sigmoid score)


# ----------------------------------------------------------------------------------------- data

def rows_from_run(run_dir: str | Path) -> list[dict[str, Any]]:
    """A curate run directory's decided candidates: accepted -> label 1, rejected -> label 0."""
    from ..curation.store import iter_jsonl

    run_dir = Path(run_dir)
    rows = []
    for name, label in (("accepted", 1), ("rejected", 0)):
        p = run_dir / f"{name}.jsonl"
        if p.exists():
            rows += [{**r, "label": label} for r in iter_jsonl(p)]
    if not rows:
        raise FileNotFoundError(f"no accepted.jsonl / rejected.jsonl in {run_dir}")
    return rows


def label_with_verifier(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Label trajectories that carry a ``reference`` with the ``final_answer`` check (1 = right)."""
    from ..teachers.final_answer import FinalAnswerConfig, FinalAnswerTeacher, extract_answer
    from ..types import Candidate

    check = FinalAnswerTeacher(FinalAnswerConfig.model_validate({"name": "label", "kind": "final_answer"}))
    out = []
    for r in records:
        answer = extract_answer(Candidate.model_validate(r).final_text)
        out.append({**r, "label": int(answer is not None and check.matches(answer, r["reference"]))})
    return out


def default_rows(n: int = 2000, *, seed: int = 1) -> list[dict[str, Any]]:
    """Built-in calculator-agent trajectories (:mod:`tgrs_agents.tasks.arithmetic_data`), verifier-labelled."""
    from ..tasks.arithmetic_data import synthetic_lines

    mix = (0.5, 0.2, 0.2, 0.1)  # good, wrong_tool, wrong_copy, no_marker
    return label_with_verifier(json.loads(line) for line in synthetic_lines(n, seed=seed, per_task=2, mix=mix))


def split_by_task(rows: Sequence[dict[str, Any]], heldout: float, seed: int) -> tuple[list[Any], list[Any]]:
    tasks = sorted({str(r.get("task_id") or r["id"]) for r in rows})
    random.Random(seed).shuffle(tasks)
    held = set(tasks[:round(len(tasks) * heldout)])
    train = [r for r in rows if str(r.get("task_id") or r["id"]) not in held]
    return train, [r for r in rows if str(r.get("task_id") or r["id"]) in held]


def auroc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (ties count one half); None without both classes."""
    pairs = sorted(zip(scores, labels, strict=True))
    n_pos = sum(1 for _, y in pairs if y)
    n_neg = len(pairs) - n_pos
    if not n_pos or not n_neg:
        return None
    rank_sum, i = 0.0, 0
    while i < len(pairs):  # average ranks over ties (Mann-Whitney U)
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        rank = (i + 1 + j) / 2
        rank_sum += rank * sum(1 for _, y in pairs[i:j] if y)
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


# ---------------------------------------------------------------------------------------- model

def build_reward_model(tokenizer: Any, s: RewardSettings) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(s.seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
        num_hidden_layers=s.num_hidden_layers, num_attention_heads=s.num_attention_heads,
        num_key_value_heads=s.num_attention_heads, max_position_embeddings=s.max_length,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    cfg.num_labels = 1  # one logit: the reward
    return LlamaForSequenceClassification(cfg)


def encode(tokenizer: Any, row: dict[str, Any], max_length: int) -> list[int]:
    from ..teachers.reward_model import render_conversation
    from ..types import Candidate

    text = render_conversation(tokenizer, Candidate.model_validate({k: v for k, v in row.items() if k != "label"}))
    return list(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])[-max_length:]


def batch_tensors(rows: Sequence[list[int]], pad_id: int) -> tuple[Any, Any]:
    import torch

    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids, mask


def predict(model: Any, encoded: Sequence[list[int]], pad_id: int, batch_size: int = 64) -> list[float]:
    """Sigmoid scores of encoded rows."""
    import torch

    model.eval()
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(encoded), batch_size):
            ids, mask = batch_tensors(encoded[i:i + batch_size], pad_id)
            out += torch.sigmoid(model(input_ids=ids, attention_mask=mask).logits[:, 0]).tolist()
    return out


def train_reward_model(rows: Sequence[dict[str, Any]], out_dir: str | Path, *, tokenizer: Any = None,
                       init_from: str | Path | None = None,
                       settings: RewardSettings = RewardSettings()) -> RewardResult:
    """Train on ``rows`` (trajectories with ``label`` 0/1), evaluate on held-out tasks, save to ``out_dir``.

    ``tokenizer``: a tokenizer, a directory, or None to train a character tokenizer on ``rows``.
    ``init_from``: a causal-LM checkpoint (e.g. the warm-started student) whose body starts the
    classifier (its tokenizer too); the score head starts at random. Default: random init.
    """
    import torch
    from transformers import get_scheduler

    from .tiny import train_tokenizer

    s, out_dir = settings, Path(out_dir)
    torch.set_flush_denormal(True)
    torch.manual_seed(s.seed)
    train, held = split_by_task(rows, s.heldout, s.seed)
    if not train or len({r["label"] for r in train}) < 2:
        raise ValueError("training rows need both labels (0 and 1)")
    if init_from is not None:
        tokenizer = str(init_from)
    if tokenizer is None:
        tokenizer = train_tokenizer(str(m.get("content") or "") for r in rows for m in r["messages"])
    elif isinstance(tokenizer, str | Path):
        tokenizer = load_tokenizer(tokenizer)
    pad_id = int(tokenizer.pad_token_id)
    if init_from is not None:
        model, _ = load_model(init_from, head="sequence_classifier", dtype=torch.float32, tokenizer=False,
                              model_kwargs={"num_labels": 1, "pad_token_id": pad_id})
    else:
        model = build_reward_model(tokenizer, s)
    x_train = [encode(tokenizer, r, s.max_length) for r in train]
    y_train = torch.tensor([float(r["label"]) for r in train])
    n_pos = float(y_train.sum())
    pos_weight = torch.tensor((len(train) - n_pos) / max(n_pos, 1.0))  # balance the classes

    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=s.lr, betas=s.betas, weight_decay=0.0)
    sched = get_scheduler("cosine_with_min_lr", opt, num_warmup_steps=math.ceil(s.warmup_ratio * s.steps),
                          num_training_steps=s.steps, scheduler_specific_kwargs={"min_lr_rate": s.min_lr_ratio})
    g = torch.Generator().manual_seed(s.seed)
    order: list[int] = []
    losses = []
    t0 = time.perf_counter()
    model.train()
    for _ in range(s.steps):
        if len(order) < s.batch_size:
            order += torch.randperm(len(train), generator=g).tolist()
        idx, order = order[:s.batch_size], order[s.batch_size:]
        ids, mask = batch_tensors([x_train[i] for i in idx], pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_train[idx], pos_weight=pos_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    train_seconds = time.perf_counter() - t0

    acc = roc = None
    scored: list[tuple[int, float]] = []
    if held:
        scores = predict(model, [encode(tokenizer, r, s.max_length) for r in held], pad_id)
        labels = [int(r["label"]) for r in held]
        scored = list(zip(labels, scores, strict=True))
        acc = sum((p >= 0.5) == bool(y) for y, p in scored) / len(scored)
        roc = auroc(labels, scores)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    result = RewardResult(out_dir, losses, len(train), len(held), acc, roc, train_seconds, scored)
    summary = {k: v for k, v in asdict(result).items() if k not in ("losses", "heldout_scores", "out_dir")}
    (out_dir / "reward.json").write_text(json.dumps(
        {"settings": asdict(s), **summary, "final_loss": losses[-1] if losses else None}, indent=1))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tgrs_agents.student.train_reward",
                                description="train a tiny reward model on verifier-labelled trajectories")
    p.add_argument("--out", default="runs/reward-model")
    p.add_argument("--from-run", default=None, help="a tgrs curate run directory (accepted=1, rejected=0)")
    p.add_argument("--tokenizer", default=None, help="a tokenizer directory (e.g. the student's)")
    p.add_argument("--init-from", default=None, help="start from a causal-LM checkpoint (e.g. the student)")
    p.add_argument("--n", type=int, default=2000, help="built-in trajectories when --from-run is not given")
    p.add_argument("--steps", type=int, default=RewardSettings.steps)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rows = rows_from_run(args.from_run) if args.from_run else default_rows(args.n, seed=args.seed + 1)
    res = train_reward_model(rows, args.out, tokenizer=args.tokenizer, init_from=args.init_from,
                             settings=RewardSettings(steps=args.steps, seed=args.seed))
    print(json.dumps({"out_dir": str(res.out_dir), "train_rows": res.train_rows, "heldout_rows": res.heldout_rows,
                      "heldout_accuracy": res.heldout_accuracy, "heldout_auroc": res.heldout_auroc,
                      "final_loss": res.losses[-1], "train_seconds": round(res.train_seconds, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
