"""A budgeted ``tgrs run`` against the loopback stand-in: the dry run's estimate vs what was paid.

The tiny student on CPU (warm start, real sampling and SFT, a few minutes) with a panel of a free
format check, then an OpenAI judge on the stand-in (priced at gpt-4o-mini's list price; a fake key
from an environment variable). Round 0 (the warm start) is made once and copied, then:

1. ``tgrs run --dry-run``: per round, the judge calls and their cost at most (before any sampling: every
   candidate judged, each as long as generation allows);
2. reference: the loop with no cap (its own ledger): what each round paid;
3. the same loop into another directory (a fresh ledger) with a budget of ``--share`` of the reference's
   total: it stops at a stage boundary, with its line; the dry run of what is left (the stopped round's
   bound now comes from its real candidates and what its curate run already decided);
4. the same command with a larger budget: it resumes and completes; its total against the reference's
   (nothing paid twice), the stand-in's requests against the reference's, and a re-run that pays nothing.

::

    python benchmarks/bench_loop_budget.py                 # about 3 minutes on 2 CPU cores
    python benchmarks/bench_loop_budget.py --rounds 3 --share 0.4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

KEY_ENV = "TGRS_BENCH_API_KEY"
FAKE_KEY = "sk-test-bench-not-a-real-key"


def write_panel(path: Path, url: str) -> Path:
    path.write_text(f'''policy = "unanimous"
[[teacher]]
name = "format"
kind = "regex"
pattern = "Answer:\\\\s*-?\\\\d"
cost_rank = 0
[[teacher]]
name = "gpt_judge"
kind = "openai"
model = "gpt-4o-mini"
base_url = "{url}"
api_key_env = "{KEY_ENV}"
rubric = "The final answer must equal the reference."
max_tokens = 64
cost_rank = 1
''')
    return path


def paid_verdicts(run: Path) -> int:
    """Requests the runs' verdict journals record as paid (a retried call counts each attempt)."""
    n = 0
    for f in run.glob("round-*/curate/verdicts.jsonl"):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            n += rec.get("requests", 0) if not rec.get("cached") else 0
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n-train", type=int, default=32)
    ap.add_argument("--n", type=int, default=4, help="samples per training task")
    ap.add_argument("--share", type=float, default=0.5, help="first budget: this share of the dry run's bound")
    ap.add_argument("--latency", type=float, default=0.05, help="the stand-in's mean latency, seconds")
    args = ap.parse_args()
    os.environ[KEY_ENV] = FAKE_KEY

    from tgrs_agents.loop.config import LoopConfig
    from tgrs_agents.loop.dryrun import dry_run_loop, print_plan
    from tgrs_agents.loop.rounds import ExpertIteration
    from tgrs_agents.testing.standin import FaultPlan, StandIn

    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-budget-"))
    ref, out = tmp / "reference", tmp / "budgeted"
    with StandIn(FaultPlan(latency_mean_s=args.latency)) as srv:
        panel = write_panel(tmp / "panel.toml", srv.url_openai)

        def cfg(usd: float | None, rounds: int = args.rounds) -> LoopConfig:
            return LoopConfig(rounds=rounds, eval_k=4, tasks={"n_train": args.n_train, "n_eval": 16},
                              generate={"n": args.n}, sft={"steps": 30}, warm_start={"steps": 120},
                              panel={"file": str(panel)}, base_dir=str(tmp), budget={"usd": usd})

        def loop(d: Path, usd: float | None, rounds: int = args.rounds) -> ExpertIteration:
            return ExpertIteration(cfg(usd, rounds), d, log=lambda s: print("   ", s), live=False,
                                   cache_path=str(tmp / f"ledger-{d.name}.sqlite"))

        def requests() -> int:
            return sum(1 for r in srv.requests if r["path"] == "/v1/chat/completions")

        t0 = time.perf_counter()
        loop(ref, None, rounds=0).run()  # round 0, shared by both runs (rounds is operational)
        shutil.copytree(ref, out)
        print(f"round 0 made in {time.perf_counter() - t0:.0f}s\n\n1. dry run before any round")
        before = dry_run_loop(loop(out, None))
        print_plan(before, str(out))

        print("\n2. reference: no cap")
        n0 = requests()
        full = loop(ref, None).run()
        n_ref = requests() - n0

        budget = round(full["cost_usd"] * args.share, 6)
        print(f"\n3. --budget-usd {budget} ({args.share:.0%} of what the reference paid)")
        n0 = requests()
        first = loop(out, budget).run()
        print(f"   -> stopped: {first['stopped'] is not None}; paid ${first['cost_usd']:.6f} of ${budget:.6f}")
        left = dry_run_loop(loop(out, budget))
        print_plan(left, str(out))
        print("\n4. the same command with --budget-usd 1.0")
        second = loop(out, 1.0).run()
        assert second["stopped"] is None, second["stopped"]
        n_budgeted = requests() - n0
        n0 = requests()
        again = loop(out, 1.0).run()
        n_again = requests() - n0

    print("\nestimate vs actual, per round")
    print(f"{'round':>5} {'calls<=':>8} {'bound $':>10} {'at stop $':>10} {'calls':>6} {'paid $':>10} "
          f"{'paid/bound':>10} {'accepted':>8} {'$/accepted':>11}")
    for est, now, got in zip(before["rounds"][1:], left["rounds"][1:], second["rounds"][1:], strict=True):
        s = json.loads((out / f"round-{got['round']}" / "curate" / "summary.json").read_text())
        bound, per = est["cost_usd_at_most"], got.get("cost_per_accepted_usd")
        at_stop = "done" if all(x["done"] for x in now["stages"].values()) and now["stages"] else \
            f"{now['cost_usd_at_most'] + now['spent_usd']:.6f}"
        print(f"{got['round']:>5} {est['calls_at_most']:>8} {bound:>10.6f} {at_stop:>10} "
              f"{s['teachers']['gpt_judge']['calls']:>6} {got['cost_usd']:>10.6f} "
              f"{got['cost_usd'] / bound if bound else 0:>10.2f} {got['accepted']:>8} "
              f"{per if per is not None else float('nan'):>11.6f}")
    print("(at stop: what the stopped round had paid plus the dry run's bound on the rest of it)")
    print(f"total: bound ${before['cost_usd_at_most']:.6f}; budgeted run ${second['cost_usd']:.6f} "
          f"({second['cost_usd'] / before['cost_usd_at_most']:.2f} of the bound) in two invocations "
          f"(${first['cost_usd']:.6f} before the stop); reference ${full['cost_usd']:.6f}")
    print(f"stand-in requests: budgeted run {n_budgeted}, reference {n_ref}; paid verdicts journaled "
          f"{paid_verdicts(out)} / {paid_verdicts(ref)}")
    print(f"a re-run of the finished run: {n_again} requests, ${again['cost_usd_invocation']:.6f}")
    print(f"(directory {tmp})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
