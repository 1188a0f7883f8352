"""The demo twice, side by side: filtered by the panel vs the accept-all control.

    python benchmarks/bench_demo.py [--out runs/bench-demo] [--rounds 3] [--quick]

Prints pass@1 (temperature 1.0, held-out split) per round for both arms, generation and SFT
tokens/s, and wall time per arm. Targets (2-core CPU): `tgrs demo` under 3 minutes; pass@1 rises
by >= 40 points from before round 1 to after round 3; the filtered arm ends >= 40 points above
accept-all. Each arm runs in its own process (`tgrs demo`), one after the other.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def arm(out: Path, rounds: int, accept_all: bool, quick: bool) -> tuple[dict, float]:
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "tgrs_agents", "demo", "--out", str(out), "--rounds", str(rounds)]
    cmd += ["--accept-all"] if accept_all else []
    cmd += ["--quick"] if quick else []
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "summary.json").read_text()), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench-demo")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    base = Path(a.out)
    filt, wf = arm(base / "filtered", a.rounds, False, a.quick)
    ctrl, wc = arm(base / "accept-all", a.rounds, True, a.quick)
    k = filt["eval_k"]
    print(f"{'round':>6} | {'filtered pass@1':>15} {'pass@' + str(k):>8} | {'accept-all pass@1':>17} "
          f"{'pass@' + str(k):>8} | {'accept % (filtered)':>19}")
    for rf, rc in zip(filt["rounds"], ctrl["rounds"], strict=True):
        acc = f"{rf['acceptance_rate']:.0%}" if "acceptance_rate" in rf else ""
        print(f"{rf['round']:>6} | {rf['pass@1']:>15.3f} {rf[f'pass@{k}']:>8.3f} | {rc['pass@1']:>17.3f} "
              f"{rc[f'pass@{k}']:>8.3f} | {acc:>19}")
    for name, s, wall in (("filtered", filt, wf), ("accept-all", ctrl, wc)):
        rs = s["rounds"][1:]
        gen = sum(r["gen_tokens_per_s"] for r in rs) / len(rs)
        sft = sum(r["sft_tokens_per_s"] for r in rs) / len(rs)
        print(f"{name}: wall {wall:.0f} s (tgrs demo process), generation {gen:,.0f} tok/s, "
              f"SFT {sft:,.0f} tok/s")
    rise = filt["rounds"][-1]["pass@1"] - filt["rounds"][0]["pass@1"]
    gap = filt["rounds"][-1]["pass@1"] - ctrl["rounds"][-1]["pass@1"]
    print(f"pass@1 rise (filtered, start -> last round): {100 * rise:+.1f} points (target >= +40)")
    print(f"filtered minus accept-all after the last round: {100 * gap:+.1f} points (target >= +40)")
    print(f"filtered demo wall time: {wf:.0f} s (target < 180 s)")


if __name__ == "__main__":
    main()
