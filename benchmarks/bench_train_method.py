"""The demo loop with each training method side by side: ``sft``, ``dpo`` and ``sft+dpo`` (``[train] method``).

    python benchmarks/bench_train_method.py [--out runs/bench-train-method] [--rounds 3] [--seeds N]
        [--tasks arithmetic] [--methods sft,dpo,sft+dpo] [--quick] [--n-eval N] [--reuse]
        [--train steps=15 ...] [--train sft+dpo:lr=1e-5 ...] [--variant NAME:METHOD:KEY=VALUE,... ...]

Each method runs the built-in demo loop (``tgrs demo``'s config: tiny student, verifier panel,
held-out pass@1 at T=1.0) with the same seeds; a seed fixes the warm start, so every method of a
seed starts from the same round 0 (it is computed once and copied: it does not depend on the
method). Prints held-out pass@1 per round and method: with one seed, the value ± its standard error
over held-out tasks (``pass@1_se`` of summary.json); with ``--seeds N``, the mean over seeds ± the
standard error of that mean (SD / sqrt(N)). Also pairs per round, the DPO step's wall time and the
wall time per method. ``--tasks`` is passed through as ``[tasks] source`` (``arithmetic``, another
built-in family, or a task file); ``code`` takes ``tgrs demo --tasks code``'s panel, turn limit and sizes
(192 training, 128 held-out tasks, SFT 80 steps, warm start 200). ``--quick``: 96 training and 48
held-out tasks, 60 SFT steps. ``--n-eval N``: N held-out tasks instead (the training tasks stay).
``--train KEY=VALUE`` sets a ``[train]`` knob of the DPO methods (``steps``, ``beta``, ``lr``,
``pairs``, ``pairs_per_task``, ``min_margin``); ``--train METHOD:KEY=VALUE`` of that method only.
Runs one after the other in this process.

``--variant NAME:METHOD:KEY=VALUE,...`` (repeatable; with ``sft`` and ``dpo`` among ``--methods``):
after the runs, a cheap exploration of DPO settings on seed 0's round 1. Each variant makes its pairs
from that round's judged candidates (the same for every method of a seed), runs DPO from the model the
METHOD starts from (round 0 for ``dpo``, sft's round-1 model for ``sft+dpo``) and evaluates it on the
held-out tasks: round-1 pass@1 ± SE over tasks, next to round 0's and sft's, with DPO's last-step reward
accuracy and implicit rewards (chosen, rejected). One seed, one round: a screen, not the benchmark.

Seeds differ in their warm start, so the spread over seeds of a round's pass@1 is mostly the warm
start's, shared by every method of a seed. The difference to ``sft`` is therefore also printed paired:
per seed and held-out task (``round-K/eval.jsonl``), the method's pass@1 minus sft's, averaged over
seeds x tasks ± the standard error over those units, and per seed. That SE counts the sampling of tasks
and answers, not a second training run of the same seed; the per-seed values show that spread.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
from pathlib import Path

from tgrs_agents.loop.config import LoopConfig
from tgrs_agents.loop.evaluate import eval_counts, summarize
from tgrs_agents.loop.rounds import ExpertIteration

METHODS = ("sft", "dpo", "sft+dpo")


def config(method: str, seed: int, rounds: int, tasks: str, quick: bool, train: dict | None = None,
           n_eval: int | None = None) -> LoopConfig:
    cfg = LoopConfig(rounds=rounds, seed=seed, base_dir=str(Path.cwd()), train={"method": method, **(train or {})})
    update = {"tasks": cfg.tasks.model_copy(update={"source": tasks})}
    if tasks == "code":  # as `tgrs demo --tasks code`: its panel (unit tests), one turn, its sizes
        from tgrs_agents.tasks.families import FAMILIES

        fam = FAMILIES["code"]
        update = {"tasks": update["tasks"].model_copy(update={"n_train": 192, "n_eval": 128}),
                  "panel": cfg.panel.model_copy(update={"file": fam.panel}),
                  "generate": cfg.generate.model_copy(update={"max_new_tokens": fam.max_new_tokens, "max_turns": 1,
                                                              "n": 8}),
                  "sft": cfg.sft.model_copy(update={"steps": 80}),
                  "warm_start": cfg.warm_start.model_copy(update={"steps": 200})}
    if quick:
        update |= {"tasks": update["tasks"].model_copy(update={"n_train": 96, "n_eval": 48}),
                   "sft": cfg.sft.model_copy(update={"steps": 60})}
    if n_eval:
        update["tasks"] = update["tasks"].model_copy(update={"n_eval": n_eval})
    return cfg.model_copy(update=update)


def knobs(specs: list[str], method: str) -> dict:
    """The ``--train`` knobs that apply to ``method``: ``KEY=VALUE`` (every DPO method), ``METHOD:KEY=VALUE``."""
    out = {}
    for spec in specs:
        only, _, kv = spec.rpartition(":") if ":" in spec.split("=", 1)[0] else ("", "", spec)
        k, v = kv.split("=", 1)
        if method != "sft" and only in ("", method):
            out[k] = json.loads(v) if v[:1].isdigit() or v[:1] in "[{-" else v
    return out


def per_task(run_dir: Path, rnd: int) -> dict[str, float]:
    """Held-out pass@1 per task of one round (``round-K/eval.jsonl``)."""
    lines = (run_dir / f"round-{rnd}" / "eval.jsonl").read_text().splitlines()
    return {r["task_id"]: r["pass@1"] for r in map(json.loads, lines)}


def paired(dirs: list[Path], base: list[Path], rnd: int) -> str:
    """Method minus sft at round ``rnd``: mean ± SE over seed x task units, then per seed."""
    units, seeds = [], []
    for d, b in zip(dirs, base, strict=True):
        m, s = per_task(d, rnd), per_task(b, rnd)
        diffs = [m[t] - s[t] for t in s if t in m]
        units += diffs
        seeds.append(statistics.mean(diffs))
    se = statistics.stdev(units) / math.sqrt(len(units)) if len(units) > 1 else float("nan")
    return (f"{statistics.mean(units):+.3f} ± {se:.3f} (n={len(units)}; per seed "
            + ", ".join(f"{x:+.3f}" for x in seeds) + ")")


def run(out: Path, cfg: LoopConfig, round0: Path | None, reuse: bool) -> tuple[dict, float]:
    """One loop; ``round0``: a finished round 0 of the same seed to start from (copied in after the claim)."""
    if out.exists() and not reuse:
        shutil.rmtree(out)
    loop = ExpertIteration(cfg, out, log=lambda s: None, live=False)
    if round0 is not None and not (out / "round-0").exists():
        loop.claim()  # the directory is this config's; round 0 is the same for every method of a seed
        shutil.copytree(round0, out / "round-0")
    summary = loop.run()
    return summary, sum(r.get("wall_s", 0.0) for r in summary["rounds"][1:])  # rounds 1..R: round 0 is shared


def mse(values: list[float], se: float | None = None, fmt: str = ".3f") -> str:
    """``mean ± SE of the mean`` over seeds; one value: ``value ± its standard error`` (when known)."""
    if len(values) > 1:
        return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values) / math.sqrt(len(values)):{fmt}}"
    return f"{values[0]:{fmt}}" + (f" ± {se:{fmt}}" if se is not None else "")


def variants(specs: list[str], base: Path, a: argparse.Namespace) -> None:
    """The ``--variant`` screen on seed 0's round 1 (see the module docstring)."""
    from tgrs_agents.loop.preference import make_pairs, prefer

    runs = {m: base / a.tasks.replace("/", "_") / m / "seed-0" for m in ("sft", "dpo")}
    cfg = config("sft", 0, 1, a.tasks, a.quick, None, a.n_eval)
    loop = ExpertIteration(cfg, runs["sft"], log=lambda s: None, live=False)
    _, held = loop.tasks()
    print(f"round-1 screen, seed 0: held-out pass@1 ± SE over {cfg.tasks.n_eval} tasks")
    print(f"  round 0 {per_round(runs['sft'], 0)}, sft {per_round(runs['sft'], 1)}")
    for spec in specs:
        name, method, kvs = spec.split(":", 2)
        train = knobs([kv for kv in kvs.split(",") if kv], method)
        c = config(method, 0, 1, a.tasks, a.quick, train, a.n_eval)
        d = base / "variants" / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        n = make_pairs(runs["dpo"] / "round-1" / "curate", d / "pairs.jsonl", c.train.pair_settings())["pairs"]
        start = runs["sft"] / "round-1" / "model" if method == "sft+dpo" else runs["dpo"] / "round-0" / "model"
        r = prefer(start, d / "pairs.jsonl", d / "model", c.train.settings(seed=1, lora_r=c.sft.lora_r))
        recs, _ = loop._rollouts(d / "model", held, cfg.eval_k, cfg.eval_temperature, "v-")
        ev = summarize(eval_counts(cfg, recs, held, services=loop.services), cfg.eval_k)
        last = r.logs[-1] if r.logs else {}
        print(f"  {name} ({method}, {kvs}): {ev.pass1:.3f} ± {ev.pass1_se:.3f}; {n} pairs, reward accuracy "
              f"{r.reward_accuracy or 0:.2f}, rewards chosen {last.get('rewards/chosen', 0):+.2f} rejected "
              f"{last.get('rewards/rejected', 0):+.2f}", flush=True)


def per_round(run_dir: Path, rnd: int) -> str:
    s = json.loads((run_dir / f"round-{rnd}" / "eval.done.json").read_text())
    return f"{s['pass@1']:.3f} ± {s.get('pass@1_se', float('nan')):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-train-method")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=1, help="runs per method (seeds 0 .. N-1); figures: mean ± SE")
    ap.add_argument("--tasks", default="arithmetic", help="[tasks] source: a built-in family or a task file")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n-eval", type=int, default=None, help="held-out tasks (default: 48 with --quick, else the "
                    "config's)")
    ap.add_argument("--reuse", action="store_true", help="continue the runs in --out instead of starting afresh")
    ap.add_argument("--train", action="append", default=[], metavar="KEY=VALUE",
                    help="a [train] knob for the DPO methods, e.g. steps=15, beta=0.5, pairs=all; "
                    "METHOD:KEY=VALUE for one method, e.g. sft+dpo:lr=1e-5 (repeatable)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:METHOD:KEY=VALUE,...",
                    help="after the runs, screen a DPO setting on seed 0's round 1, e.g. "
                    "hard10:dpo:pairs=hard,steps=10 (repeatable; needs sft and dpo in --methods)")
    a = ap.parse_args()
    methods = a.methods.split(",")
    base = Path(a.out)
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    walls: dict[str, list[float]] = {m: [] for m in methods}
    dirs: dict[str, list[Path]] = {m: [] for m in methods}
    for seed in range(a.seeds):
        round0 = None
        for m in methods:
            out = base / a.tasks.replace("/", "_") / m.replace("+", "-") / f"seed-{seed}"
            s, wall = run(out, config(m, seed, a.rounds, a.tasks, a.quick, knobs(a.train, m), a.n_eval), round0,
                          a.reuse)
            dirs[m].append(out)
            round0 = round0 or out / "round-0"
            runs[m].append(s)
            walls[m].append(wall)
            print(f"[bench] {m} seed {seed}: pass@1 " + " -> ".join(f"{r['pass@1']:.3f}" for r in s["rounds"])
                  + f" ({wall:.0f} s)", file=sys.stderr, flush=True)

    spread = (f"mean ± SE over {a.seeds} seeds" if a.seeds > 1
              else "± standard error over held-out tasks")
    n_eval = runs[methods[0]][0]["rounds"][0]["eval_tasks"]
    print(f"held-out pass@1 per round, tasks {a.tasks!r} ({n_eval} held-out tasks x "
          f"{runs[methods[0]][0]['eval_k']} samples at T=1.0; {spread})")
    print("| round | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for i in range(a.rounds + 1):
        cells = []
        for m in methods:
            rs = [s["rounds"][i] for s in runs[m]]
            cells.append(mse([r["pass@1"] for r in rs], rs[0].get("pass@1_se")))
        print(f"| {'0 (warm start)' if i == 0 else i} | " + " | ".join(cells) + " |")
    if "sft" in methods:
        for m in methods:
            if m != "sft":
                for i in range(1, a.rounds + 1):
                    print(f"{m} - sft, round {i}, paired by seed and held-out task: {paired(dirs[m], dirs['sft'], i)}")
    for m in methods:
        if knobs(a.train, m):
            print(f"{m}: [train] " + ", ".join(f"{k} = {v!r}" for k, v in knobs(a.train, m).items()))
    for m in methods:
        rs = [r for s in runs[m] for r in s["rounds"][1:]]
        pairs = [r["pairs"] for r in rs if "pairs" in r]
        dpo = [r["dpo_wall_s"] for r in rs if "dpo_wall_s" in r]
        acc = [r["dpo_reward_accuracy"] for r in rs if r.get("dpo_reward_accuracy") is not None]
        extra = ""
        if pairs and acc:
            extra = (f", pairs per round {statistics.mean(pairs):.0f} (min {min(pairs)}), DPO step "
                     f"{statistics.mean(dpo):.1f} s per round, last-step reward accuracy {statistics.mean(acc):.2f}")
        print(f"{m}: wall {mse(walls[m], fmt='.0f')} s for rounds 1-{a.rounds}{extra}")
    if a.variant:
        variants(a.variant, base, a)


if __name__ == "__main__":
    main()
