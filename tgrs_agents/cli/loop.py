"""``tgrs run`` and ``tgrs demo`` (the loop, and the demo's curate-only variant); the per-round table."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _print_rounds(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    k = summary["eval_k"]
    t = Table(title=f"expert iteration ({summary['arm']})")
    con = Console(width=max(Console().width, 130))
    for col in ("round", "pass@1", f"pass@{k}", "samples", "accepted", "accept %", "pool",
                "gen tok/s", "sft tok/s", "wall s"):
        t.add_column(col, justify="right", no_wrap=True)
    def pm(r: dict[str, Any], key: str) -> str:  # a figure and its standard error
        se = r.get(f"{key}_se")
        return f"{r[key]:.3f}" + (f" ± {se:.3f}" if se is not None else "")

    carried = []
    for r in summary["rounds"]:
        first = r["round"] == 0
        sft = r.get("warm_start", {}).get("sft_tokens_per_s") if first else r.get("sft_tokens_per_s")
        carried += [r["round"]] if r.get("sft_carried_over") else []
        t.add_row(str(r["round"]) if not first else "start", pm(r, "pass@1"),
                  pm(r, f"pass@{k}"), str(r.get("samples", "")), str(r.get("accepted", "")),
                  f"{r['acceptance_rate']:.0%}" if "acceptance_rate" in r else "",
                  str(r.get("pooled", "")), f"{r.get('gen_tokens_per_s', 0):,.0f}" if not first else "",
                  f"{sft:,.0f}" if sft else "", f"{sum(r.get('stage_wall_s', {}).values()):.1f}"
                  if not first else "")
    con.print(t)
    print("± one standard error over held-out tasks")
    for rnd in carried:
        print(f"round {rnd}: the pool was empty (the panel accepted nothing), so the student carried over")
    for r in summary["rounds"]:  # [train] method "dpo" / "sft+dpo"
        if r.get("dpo_carried_over"):
            print(f"round {r['round']}: no preference pairs (the panel accepted all or none), so DPO carried over")
    print(f"total wall time {summary['wall_s']:.0f}s")


def _loop(cfg: Any, out: str, accept_all: bool, force: bool = False, **kw: Any) -> int:
    from ..curation.lock import run_lock
    from ..loop.rounds import ExpertIteration

    with run_lock(out):  # one process per run directory (each round's curate run takes its own)
        summary = ExpertIteration(cfg, out, accept_all=accept_all, force=force, **kw).run()
    _print_rounds(summary)
    if summary.get("cost_usd") or summary.get("budget_usd") is not None:
        per = summary.get("cost_per_accepted_usd")
        budget = summary.get("budget_usd")
        print(f"paid ${summary['cost_usd']:.4f} in all (${summary['cost_usd_invocation']:.4f} this time)"
              + (f", ${per:.4f} per accepted sample" if per else "")
              + (f"; budget ${budget:.4f}" if budget is not None else ""))
    if summary.get("stopped"):
        print("stopped early by the budget: run the same command with a larger budget to resume")
    print(f"outputs in {out}/ (summary.json, round-*/)")
    return 0


def _run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..loop.config import load_run_config

    overrides = {"rounds": args.rounds} if args.rounds is not None else {}
    cfg = load_run_config(args.config, **overrides)
    if args.budget_usd is not None:  # the command line wins over [budget] usd (operational: no refusal)
        if args.budget_usd < 0:
            raise ConfigError(f"must be >= 0; got {args.budget_usd}", field="--budget-usd")
        cfg = cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"usd": args.budget_usd})})
    cache = {"cache": not args.no_cache, "cache_path": args.cache}
    if args.dry_run:
        from ..loop.dryrun import dry_run_loop, print_plan
        from ..loop.rounds import ExpertIteration

        plan = dry_run_loop(ExpertIteration(cfg, args.out, accept_all=args.accept_all, log=lambda s: None, **cache))
        if args.json:
            print(json.dumps(plan, indent=2))
        else:
            print_plan(plan, args.out)
        return 0
    return _loop(cfg, args.out, args.accept_all, args.force, **cache)


def _demo(args: argparse.Namespace) -> int:
    """The whole loop on the embedded default: tiny student, arithmetic agent tasks, verifiers."""
    from ..loop.config import LoopConfig

    cfg = LoopConfig(rounds=args.rounds, seed=args.seed, base_dir=str(Path.cwd()))
    if args.tasks == "code":  # the code family: no tools, one longer turn, judged by its unit tests
        from ..tasks.families import FAMILIES

        fam = FAMILIES["code"]
        # sized for 3 rounds in a few minutes on 2 CPU cores (benchmarks/bench_demo.py --tasks code): the
        # warm start needs its 200 steps on 192 seed tasks (with 120 on 128 it learned nothing in round 1)
        cfg = cfg.model_copy(update={
            "tasks": cfg.tasks.model_copy(update={"source": "code", "n_train": 192, "n_eval": 128}),
            "panel": cfg.panel.model_copy(update={"file": fam.panel}),
            "generate": cfg.generate.model_copy(update={"max_new_tokens": fam.max_new_tokens, "max_turns": 1,
                                                        "n": 8}),
            "sft": cfg.sft.model_copy(update={"steps": 80}),
            "warm_start": cfg.warm_start.model_copy(update={"steps": 200}),
        })
    if args.quick:  # a reduced loop for CI: fewer tasks and steps
        cfg = cfg.model_copy(update={
            "tasks": cfg.tasks.model_copy(update={"n_train": 96, "n_eval": 48}),
            "sft": cfg.sft.model_copy(update={"steps": 60}),
        })
    name = "runs/demo" + ("-code" if args.tasks == "code" else "")
    out = args.out or (f"{name}-accept-all" if args.accept_all else name)
    return _loop(cfg, out, args.accept_all, args.force)


def _demo_curate(args: argparse.Namespace) -> int:
    """Curate a generated file of calculator-agent trajectories with the shipped verifier panel."""
    from ..assets import asset_path
    from ..tasks.arithmetic_data import write_synthetic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "input.jsonl"
    if not data.exists():
        write_synthetic(data, args.n, seed=0, bad_every=97)
    panel = asset_path("teachers/panel-verifiers.toml")
    from . import build_parser
    from .curate import _curate

    ns = build_parser().parse_args(["curate", str(data), "--panel", str(panel),
                                    "--out", str(out / "curate"), "--log-interval", "2"])
    return _curate(ns)


