"""Generation speed of the tiny student through TransformersBackend and the batched tool loop.

192 arithmetic tasks x 8 samples at temperature 1.0 (one round of rejection sampling), tool calls
run by the calculator between turns. The student is warm-started first with a few SFT steps on the
seed demonstrations (a plain torch loop, so that it writes tool calls and stops like a real
student; ``--train-steps 0`` samples from the random model instead), or loaded with ``--student``.
Prints rollouts/s, generated tokens/s and how the rollouts stopped, per repeat::

    python benchmarks/bench_generate.py                      # CPU, 2 cores: about 7-9 s a round
    python benchmarks/bench_generate.py --device cuda --batch-size 1536
    python benchmarks/bench_generate.py --train-steps 0      # untrained model: long junk turns
    python benchmarks/bench_generate.py --student DIR --threads torch   # torch's own thread count
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import time
from typing import Any

from tgrs_agents.chat import template_messages
from tgrs_agents.generate import (
    RolloutStats,
    SamplingParams,
    ToolBox,
    TransformersBackend,
    calculator_tool,
    load_student,
    rollout,
)
from tgrs_agents.student import tiny
from tgrs_agents.tasks import arithmetic


def warm_start(model: Any, tokenizer: Any, demos: list[dict[str, Any]], steps: int, *,
               batch: int = 32, lr: float = 1e-3, seed: int = 0) -> float:
    """SFT on the assistant tokens only (AdamW, 5% warm-up, cosine to 0.1x, clip 1); returns the last loss."""
    import torch

    torch.manual_seed(seed)
    rows = []
    for d in demos:
        enc = tokenizer.apply_chat_template(template_messages(d["messages"]), tools=d["tools"],
                                            return_dict=True, return_assistant_tokens_mask=True)
        ids = torch.tensor(enc["input_ids"])
        labels = torch.where(torch.tensor(enc["assistant_masks"]) == 1, ids, -100)
        rows.append((ids, labels))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98))
    warm = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steps this small: one thread, or OpenMP spin-waits on busy cores
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        pick = torch.randint(len(rows), (batch,)).tolist()
        width = max(len(rows[i][0]) for i in pick)
        ids = torch.full((batch, width), tokenizer.pad_token_id)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for r, i in enumerate(pick):
            n = len(rows[i][0])
            ids[r, :n], labels[r, :n], mask[r, :n] = rows[i][0], rows[i][1], 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    torch.set_num_threads(threads)
    model.eval()
    return float(loss.detach())


def accuracy(records: list[dict[str, Any]]) -> float:
    ok = 0
    for r in records:
        final = r["messages"][-1]
        if final["role"] != "assistant":
            continue
        found = re.findall(r"Answer:\s*(-?\d+)", final.get("content") or "")
        ok += bool(found) and int(found[-1]) == r["reference"]
    return ok / max(1, len(records))


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=192)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--student", help="a saved student directory to load instead of training one")
    ap.add_argument("--save", help="save the warm-started student here")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", default="auto",
                    help="torch intra-op threads while generating: auto (1 for the tiny student on "
                         "CPU), a number, or 'torch' for torch's own setting")
    args = ap.parse_args()

    import torch

    torch.set_flush_denormal(True)
    train, _ = arithmetic.splits(args.tasks, 128)
    t0 = time.perf_counter()
    if args.student:
        model, tok = load_student(args.student, device="cpu")
        print(f"loaded {args.student}")
    else:
        pool, _ = arithmetic.splits(300, 128, seed=1)
        demos = arithmetic.seed_demonstrations(pool)
        corpus = [m["content"] for d in demos for m in d["messages"] if m.get("content")]
        tok = tiny.train_tokenizer([*corpus, "error: Answer: calculator"])
        model = tiny.build_model(tok)
        loss = warm_start(model, tok, demos, args.train_steps) if args.train_steps else float("nan")
        print(f"warm start: {args.train_steps} steps in {time.perf_counter() - t0:.1f} s, "
              f"last loss {loss:.3f}")
        if args.save:
            tiny.save(model, tok, args.save)
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load avg "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    threads: int | str | None = args.threads
    if threads not in ("auto", "torch"):
        threads = int(threads)
    threads = None if threads == "torch" else threads
    backend = TransformersBackend(model, tok, device=args.device, batch_size=args.batch_size,
                                  threads=threads)
    box = ToolBox([calculator_tool()])
    params = SamplingParams(n=args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                            seed=0)
    for rep in range(args.repeats):
        stats = RolloutStats()
        cpu = time.process_time()
        records = await rollout(backend, train, toolbox=box, params=params, stats=stats,
                                id_prefix=f"r{rep}-")
        print(f"repeat {rep}: {stats.rollouts} rollouts in {stats.wall_s:.2f} s, {stats.steps} steps: "
              f"{stats.rollouts_per_s:.0f} rollouts/s, {stats.generated_tokens} tokens, "
              f"{stats.tokens_per_s:.0f} generated tokens/s; stops {dict(stats.stops)}; "
              f"pass@1 {accuracy(records):.2f}; process CPU {time.process_time() - cpu:.1f} s")
    await backend.aclose()


if __name__ == "__main__":
    asyncio.run(main())
