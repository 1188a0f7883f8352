"""The demo twice, side by side: filtered by the panel vs the accept-all control, over several seeds.

    python benchmarks/bench_demo.py [--out runs/bench-demo] [--rounds 3] [--quick] [--seeds N] [--reuse]
    python benchmarks/bench_demo.py --tasks code     # the code family (unit tests in the sandbox)

Prints pass@1 (temperature 1.0, held-out split) per round for both arms, generation and SFT
tokens/s, and wall time per arm. With ``--seeds N`` each arm runs N times (``tgrs demo --seed s``,
s = 0 .. N-1: another warm start, other samples, another SFT order; the task splits stay the same)
and every figure is the mean and the standard deviation across the seeds (run-to-run spread; the
standard error of the mean is SD / sqrt(N)). With one seed, pass@1 carries its standard error over
held-out tasks instead. Targets (2-core CPU): `tgrs demo` under 3 minutes; pass@1 rises by >= 40
points from before round 1 to after round 3; the filtered arm ends >= 40 points above accept-all.
Each run is its own process (`tgrs demo`), one after the other. ``--reuse`` continues the runs
already in ``--out`` instead of starting afresh (finished stages are read back; a run directory made
by another config is refused by its fingerprint).

``--tasks code`` runs ``tgrs demo --tasks code`` instead (targets: pass@1 rises >= 25 points over 3
rounds and ends >= 20 points above accept-all, in under 8 minutes a run) and also prints the sandbox's throughput in the
filtered arm's judge stages: candidates that reached the ``code_tests`` teacher per second of judge
wall time (the cheap ``compiles`` check decides the rest without a sandbox), how many of them the
verdict memo answered (content judged before, in this round or an earlier one:
tgrs_agents.curation.memo), and the sandbox processes actually started per second.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def arm(out: Path, rounds: int, accept_all: bool, quick: bool, seed: int, reuse: bool,
        tasks: str = "arithmetic") -> tuple[dict, float]:
    if out.exists() and not reuse:
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "tgrs_agents", "demo", "--out", str(out), "--rounds", str(rounds),
           "--seed", str(seed)]
    cmd += ["--accept-all"] if accept_all else []
    cmd += ["--quick"] if quick else []
    cmd += ["--tasks", tasks] if tasks != "arithmetic" else []
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - t0


def ms(values: list[float], se: float | None = None, fmt: str = ".3f") -> str:
    """``mean ± SD`` over seeds; one value: ``value ± its standard error`` (when known)."""
    if len(values) > 1:
        return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt.lstrip('+')}}"
    return f"{values[0]:{fmt}}" + (f" ± {se:{fmt}}" if se is not None else "")


def sandbox_rate(run: Path, summary: dict) -> tuple[int, int, float]:
    """(candidates the code_tests teacher judged, of them answered by the verdict memo without a
    sandbox, seconds of judge stages) over a run's rounds, from each round's curate summary."""
    n, hits, wall = 0, 0, 0.0
    for r in summary["rounds"][1:]:
        path = run / f"round-{r['round']}" / "curate" / "summary.json"
        if path.exists():
            doc = json.loads(path.read_text())
            n += doc["teachers"].get("tests", {}).get("calls", 0)
            hits += (doc.get("memo_hits") or {}).get("tests", 0)
            wall += r.get("stage_wall_s", {}).get("judge", 0.0)
    return n, hits, wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-demo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, default=1, help="runs per arm (seeds 0 .. N-1); figures are mean ± SD")
    ap.add_argument("--reuse", action="store_true", help="continue the runs in --out instead of starting afresh")
    ap.add_argument("--tasks", choices=("arithmetic", "code"), default="arithmetic", help="the built-in family")
    a = ap.parse_args()
    targets = (25, 20) if a.tasks == "code" else (40, 40)
    base = Path(a.out)
    runs: dict[str, list[dict]] = {"filtered": [], "accept-all": []}
    walls: dict[str, list[float]] = {"filtered": [], "accept-all": []}
    for seed in range(a.seeds):
        for name in runs:
            s, wall = arm(base / name / f"seed-{seed}", a.rounds, name == "accept-all", a.quick, seed, a.reuse,
                          a.tasks)
            runs[name].append(s)
            walls[name].append(wall)
            print(f"[bench] {name} seed {seed}: pass@1 " + " -> ".join(f"{r['pass@1']:.3f}" for r in s["rounds"])
                  + f" ({wall:.0f} s)", file=sys.stderr, flush=True)
    k = runs["filtered"][0]["eval_k"]
    spread = f"mean ± SD over {a.seeds} seeds" if a.seeds > 1 else "± standard error over held-out tasks"
    print(f"pass@1 and pass@{k} per round ({spread})")
    print(f"{'round':>6} | {'filtered pass@1':>15} {'pass@' + str(k):>15} | {'accept-all pass@1':>17} "
          f"{'pass@' + str(k):>15} | {'accept % (filtered)':>19}")
    for i in range(a.rounds + 1):
        f = [s["rounds"][i] for s in runs["filtered"]]
        c = [s["rounds"][i] for s in runs["accept-all"]]

        def col(rs: list[dict], key: str) -> str:
            return ms([r[key] for r in rs], rs[0].get(f"{key}_se"))

        acc = ms([r["acceptance_rate"] for r in f]) if "acceptance_rate" in f[0] else ""
        print(f"{f[0]['round']:>6} | {col(f, 'pass@1'):>15} {col(f, f'pass@{k}'):>15} | "
              f"{col(c, 'pass@1'):>17} {col(c, f'pass@{k}'):>15} | {acc:>19}")
    for name in runs:
        rs = [r for s in runs[name] for r in s["rounds"][1:]]
        gen = statistics.mean(r["gen_tokens_per_s"] for r in rs)
        sft = statistics.mean(r["sft_tokens_per_s"] for r in rs)
        print(f"{name}: wall {ms(walls[name], fmt='.0f')} s per tgrs demo process, generation "
              f"{gen:,.0f} tok/s, SFT {sft:,.0f} tok/s")
    rise = [s["rounds"][-1]["pass@1"] - s["rounds"][0]["pass@1"] for s in runs["filtered"]]
    gap = [f["rounds"][-1]["pass@1"] - c["rounds"][-1]["pass@1"]
           for f, c in zip(runs["filtered"], runs["accept-all"], strict=True)]
    points = {"rise": ms([100 * x for x in rise], fmt="+.1f"), "gap": ms([100 * x for x in gap], fmt="+.1f")}
    print(f"pass@1 rise (filtered, start -> last round): {points['rise']} points (target >= +{targets[0]})")
    print(f"filtered minus accept-all after the last round: {points['gap']} points (target >= +{targets[1]})")
    if a.tasks == "code":
        judged = [sandbox_rate(base / "filtered" / f"seed-{seed}", s) for seed, s in enumerate(runs["filtered"])]
        n, hits, wall = (sum(j[i] for j in judged) for i in range(3))
        print(f"sandbox: {n} candidates reached code_tests in {wall:.0f} s of judge stages "
              f"({n / wall if wall else 0:.1f} candidates/s); {hits} ({hits / max(n, 1):.0%}) answered by the "
              f"verdict memo, {n - hits} sandbox runs ({(n - hits) / wall if wall else 0:.1f} runs/s)")
    limit = 480 if a.tasks == "code" else 180  # code: 3 rounds in 6-8 minutes
    print(f"filtered demo wall time: {ms(walls['filtered'], fmt='.0f')} s (target < {limit} s; with --reuse, the "
          f"resumed part only)")


if __name__ == "__main__":
    main()
