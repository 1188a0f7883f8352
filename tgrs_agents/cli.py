"""The ``tgrs`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from .errors import TgrsError


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(stderr=False)
    t = Table(title=f"tgrs curate: {out}")
    for col in ("teacher", "calls", "saved", "cache hits", "errors", "passed", "cost $"):
        t.add_column(col, justify="right" if col != "teacher" else "left")
    for name, st in summary["teachers"].items():
        t.add_row(name, str(st["calls"]), str(st["calls_saved"]), str(st["cache_hits"]),
                  str(st["errors"]), str(st["passed"]), f"{st['cost_usd']:.4f}")
    con.print(t)
    s = summary
    con.print(
        f"input lines {s['input_lines']}, valid {s['valid']}, [green]accepted {s['accepted']}[/], "
        f"rejected {s['rejected']}, invalid {s['invalid']}, failed {s['failed']}, pending "
        f"{s['pending']}; calls {s['calls']} (saved {s['calls_saved']}); {s['wall_s']:.1f}s"
    )
    if s.get("set_aside_warning"):
        con.print(f"[bold red]warning: {s['set_aside_warning']}[/]")
    for note in s.get("limit_notes") or ():  # the rate limiter was the bottleneck, and whose limit it was
        con.print(note, style="yellow", markup=False)
    if s.get("stopped"):
        con.print(f"[yellow]stopped early ({s['stopped']}): run the same command again to resume")
    con.print(f"outputs in {out}/ (accepted.jsonl, rejected.jsonl, verdicts.jsonl, summary.json)")


def _curate(args: argparse.Namespace) -> int:
    from .curation.panel_file import load_panel
    from .curation.progress import Progress, count_lines
    from .curation.run import CurateOptions, CurateRun
    from .events import EventBus

    if getattr(args, "engine", "local") == "ray":
        from .cluster import require_ray

        require_ray()  # without the extra: one line naming it, before anything is read
    overrides = {"policy": args.policy, "k": args.k, "threshold": args.threshold,
                 "student_model": args.student_model}
    panel = load_panel(args.panel, overrides=overrides)
    for warning in panel.warnings:
        print(f"tgrs: warning: {warning}", file=sys.stderr)
    if args.dry_run:
        return _dry_run(args, panel)
    bus = EventBus()
    fmt, per_line = _input_format(args)
    opts = CurateOptions(max_in_flight=args.max_in_flight, force=args.force,
                         budget_usd=args.budget_usd, cache=not args.no_cache, cache_path=args.cache,
                         input_format=fmt, max_set_aside=args.max_set_aside)
    if getattr(args, "engine", "local") == "ray":
        from .cluster.engine import curate_on_ray

        summary = curate_on_ray(args.input, panel, args.out, options=opts, workers=args.workers,
                                address=args.ray_address)
        print(json.dumps(summary, indent=2) if args.json else f"tgrs curate --engine ray: accepted "
              f"{summary['accepted']}, rejected {summary['rejected']}, invalid {summary['invalid']} "
              f"in {summary['engine']['shards']} shards; outputs in {args.out}/")
        return 0
    run = CurateRun(args.input, panel, args.out, options=opts, bus=bus)
    total = count_lines(args.input) if per_line else None
    progress = Progress(total, live=None if not args.quiet else False,
                        interval_s=args.log_interval)
    if not args.quiet:
        bus.subscribe(progress)
    from .report.warm import warm_up

    warm = warm_up()  # the end-of-run report's imports, done while the run waits on its provider
    try:
        with progress:
            summary = asyncio.run(run.run())
    except KeyboardInterrupt:
        print(f"\ninterrupted: {args.out} is resumable; run the same command again", file=sys.stderr)
        return 130
    finally:
        warm.finish()  # never exit with the thread mid-import: that aborts the process
    for warning in summary.get("warnings", ()):
        print(f"tgrs: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary, Path(args.out))
    from .report.html import maybe_write_report

    maybe_write_report(args.out, log=lambda s: print(s, file=sys.stderr))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    """Score every teacher of a panel against a labelled file; write the calibration file."""
    from .curation.calibrate import calibrate
    from .curation.panel_file import load_panel
    from .paid.cost import Budget
    from .paid.ledger import Ledger
    from .paid.services import Services

    panel = load_panel(args.panel, overrides={"student_model": args.student_model})
    services = Services(budget=Budget(args.budget_usd), ledger=None if args.no_cache else Ledger(args.cache))
    try:
        report = asyncio.run(calibrate(panel, Path(args.labelled), services, max_in_flight=args.max_in_flight))
    finally:
        services.close()
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    ds = report["dawid_skene"]["teachers"]
    print(f"{report['items']} labelled candidates, {report['prevalence']:.0%} good; {report['calls']} calls, "
          f"${report['cost_usd']:.4f}")
    print(f"{'teacher':<16} {'sensitivity (95% CI)':<22} {'specificity (95% CI)':<22} {'weight':>7} "
          f"{'errors':>6}   unsupervised s / c")
    for name, t in report["teachers"].items():
        s, c = t["sensitivity"], t["specificity"]
        print(f"{name:<16} {s['value']:.3f} [{s['low']:.3f}, {s['high']:.3f}]  {c['value']:.3f} "
              f"[{c['low']:.3f}, {c['high']:.3f}]  {t['weight']:>7.3f} {t['errors']:>6}   "
              f"{ds[name]['sensitivity']['value']:.3f} / {ds[name]['specificity']['value']:.3f}")
    r = report["panel_rule"]
    print(f"the panel's rule ({r['policy']}): precision {r['precision']}, recall {r['recall']}, "
          f"accuracy {r['accuracy']}")
    if args.out:
        print(f"wrote {args.out}: use it with  weights = \"{args.out}\"  (policy = \"weighted_mean\")")
    return 0


def _input_format(args: argparse.Namespace) -> tuple[str, bool]:
    """The reader for the input (said on stderr), and whether it reads one candidate per line."""
    from .formats import resolve

    if not Path(args.input).exists():
        return args.input_format, False  # the run says the file is missing
    fmt, why = resolve(args.input, args.input_format)
    print(f"tgrs: input format {fmt.name} ({why})", file=sys.stderr)
    return fmt.name, Path(args.input).is_file() and fmt.open(Path(args.input)).per_line


def _dry_run(args: argparse.Namespace, panel: Any) -> int:
    from .curation.dryrun import dry_run
    from .paid.ledger import Ledger
    from .paid.services import Services

    services = Services(ledger=None if args.no_cache else Ledger(args.cache))
    if services.ledger is not None:
        services.ledger.check()
    try:
        report = asyncio.run(dry_run(Path(args.input), panel, Path(args.out), services,
                                     input_format=args.input_format)).to_json()
    finally:
        services.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"dry run: {report['candidates']} candidates to judge ({report['already_done']} already "
          f"done, {report['invalid']} invalid lines)")
    print(f"  decided without a paid call: {report['decided_without_paid_calls']}")
    for name, t in report["teachers"].items():
        batch = "n/a" if t["cost_usd_batch"] is None else f"${t['cost_usd_batch']:.4f}"
        print(f"  {name} ({t['mode']}): at most {t['calls']} calls (~{t['input_tokens']:,} in / "
              f"{t['output_tokens']:,} out tokens), {t['cache_hits']} cached, at most "
              f"${t['cost_usd']:.4f} (online ${t['cost_usd_online']:.4f} | batch {batch})")
    print(f"  total: at most {report['paid_calls_at_most']} paid calls, at most "
          f"${report['cost_usd_at_most']:.4f} (online ${report['cost_usd_online_at_most']:.4f} | batch "
          f"${report['cost_usd_batch_at_most']:.4f})")
    return 0


def _status(args: argparse.Namespace) -> int:
    """Batches in flight in a curate run directory, from its journals (``--poll``: ask the provider)."""
    from .curation.batching import batch_status, poll_status

    status = batch_status(args.dir)
    if args.poll and status:
        asyncio.run(poll_status(args.dir, status, Path(args.dir) / "config.toml"))  # the resolved panel
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    if not status:
        print(f"{args.dir}: no batch judges")
    for name, st in status.items():
        ended = ", ".join(f"{n} {s}" for s, n in sorted(st["ended"].items())) or "none"
        print(f"{name}: {len(st['in_flight'])} batches in flight ({st['items_in_flight']} requests); ended: {ended}")
        for r in st["in_flight"]:
            counts = " ".join(f"{k}={v}" for k, v in r["counts"].items())
            print(f"  {r['batch_id'] or r['key']}  {r['state']:<11} {r['items']:>6} requests  age "
                  f"{r['age_s'] / 60:.1f} min  attempt {r['attempt']}  {counts}".rstrip())
    return 0


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
    from .curation.lock import run_lock
    from .loop.rounds import ExpertIteration

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
    from .errors import ConfigError
    from .loop.config import load_run_config

    overrides = {"rounds": args.rounds} if args.rounds is not None else {}
    cfg = load_run_config(args.config, **overrides)
    if args.budget_usd is not None:  # the command line wins over [budget] usd (operational: no refusal)
        if args.budget_usd < 0:
            raise ConfigError(f"must be >= 0; got {args.budget_usd}", field="--budget-usd")
        cfg = cfg.model_copy(update={"budget": cfg.budget.model_copy(update={"usd": args.budget_usd})})
    cache = {"cache": not args.no_cache, "cache_path": args.cache}
    if args.dry_run:
        from .loop.dryrun import dry_run_loop, print_plan
        from .loop.rounds import ExpertIteration

        plan = dry_run_loop(ExpertIteration(cfg, args.out, accept_all=args.accept_all, log=lambda s: None, **cache))
        if args.json:
            print(json.dumps(plan, indent=2))
        else:
            print_plan(plan, args.out)
        return 0
    return _loop(cfg, args.out, args.accept_all, args.force, **cache)


def _demo(args: argparse.Namespace) -> int:
    """The whole loop on the embedded default: tiny student, arithmetic agent tasks, verifiers."""
    from .loop.config import LoopConfig

    cfg = LoopConfig(rounds=args.rounds, seed=args.seed, base_dir=str(Path.cwd()))
    if args.tasks == "code":  # the code family: no tools, one longer turn, judged by its unit tests
        from .tasks.families import FAMILIES

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
    from .assets import asset_path
    from .tasks.arithmetic_data import write_synthetic

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "input.jsonl"
    if not data.exists():
        write_synthetic(data, args.n, seed=0, bad_every=97)
    panel = asset_path("teachers/panel-verifiers.toml")
    ns = build_parser().parse_args(["curate", str(data), "--panel", str(panel),
                                    "--out", str(out / "curate"), "--log-interval", "2"])
    return _curate(ns)


def _report(args: argparse.Namespace) -> int:
    """Write DIR/report.html (and, with --screenshots, PNGs of it) for a curate or loop directory."""
    from .report.html import screenshot_report, write_report

    path = write_report(args.dir)
    paged = (path.parent / "report-data").is_dir()  # a large run's pages (a small run's report removes it)
    where = f"with its pages in {path.parent / 'report-data'}/: keep them beside it" if paged else "self-contained"
    print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB, {where}; open it in a browser)")
    if args.screenshots:
        for png in screenshot_report(args.dir):
            print(f"screenshot: {png}")
    return 0


def _export(args: argparse.Namespace) -> int:
    """A run's kept trajectories in a trainer's format, with agent-trace hygiene; never calls an API."""
    from .export import Hygiene, PairSettings, export_run

    pairs = PairSettings(mode=args.pairs, pairs_per_task=args.pairs_per_task or None, min_margin=args.min_margin)
    hygiene = Hygiene(drop_errored=not args.keep_errored, trim_trailing_user=not args.keep_trailing_user,
                      tool_ids=args.tool_ids, require_answer=not args.keep_unanswered,
                      max_tokens=args.max_tokens, tokenizer=args.tokenizer, redact=not args.no_redact)
    report = export_run(args.dir, to=args.to, out=args.out, round=args.round, hygiene=hygiene,
                        force=args.force, name=args.name, pairs=pairs)
    print(json.dumps(report.to_json(), indent=2) if args.json else "\n".join(report.lines()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tgrs", description="teacher-guided rejection sampling")
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curate", help="judge a JSONL file of trajectories with a panel of teachers")
    c.add_argument("input", help="trajectory file: JSONL, a JSON array, an agent log (see --input-format); or a "
                   "directory of such files, read in sorted order as one input")
    c.add_argument("--input-format", default="auto", metavar="NAME",
                   help="reader: auto (sniff the file; the default), openai, openai-ft, anthropic, claude-code, "
                        "sharegpt, llamafactory, dolci, inspect, swe-agent, mini-swe-agent, openhands, tau-bench")
    c.add_argument("--max-set-aside", type=float, default=0.2, metavar="SHARE",
                   help="warn when more than this share of records is set aside (default 0.2)")
    c.add_argument("--panel", required=True, help="panel TOML file (see teachers/)")
    c.add_argument("--out", required=True, help="run directory (resumable)")
    c.add_argument("--policy", choices=["unanimous", "majority", "k_of_n", "mean_score",
                                        "weighted_mean"], help="override the panel's policy")
    c.add_argument("--k", type=int, help="k for --policy k_of_n")
    c.add_argument("--threshold", type=float, help="threshold for mean_score / weighted_mean")
    c.add_argument("--max-in-flight", type=int, default=256, help="candidates judged at once")
    c.add_argument("--force", action="store_true",
                   help="archive an incompatible run in --out and start afresh")
    c.add_argument("--budget-usd", type=float, default=None,
                   help="stop starting paid calls before spending would pass this (resumable)")
    c.add_argument("--no-cache", action="store_true", help="do not use the verdict ledger")
    c.add_argument("--cache", default=None,
                   help="verdict ledger file (default: ~/.cache/tgrs-agents/verdicts.sqlite)")
    c.add_argument("--dry-run", action="store_true",
                   help="print the expected paid calls and cost, call nothing")
    c.add_argument("--quiet", action="store_true", help="no progress display")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.add_argument("--log-interval", type=float, default=5.0,
                   help="seconds between progress lines when not on a terminal")
    c.add_argument("--student-model", default=None, metavar="MODEL",
                   help="the model that wrote the trajectories: judges of its family are refused "
                   "(unless allow_self_judging = true)")
    c.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: judge the input in shards on Ray workers (pip install 'tgrs-agents[ray]')")
    c.add_argument("--workers", type=int, default=4, help="with --engine ray: shards judged at once")
    c.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --engine ray: join this running cluster (default: start a local one)")
    c.set_defaults(fn=_curate)
    cal = sub.add_parser("calibrate", help="score every teacher of a panel against a labelled JSONL file "
                         "(candidates with a label field); writes the weights for weights = \"FILE\"")
    cal.add_argument("panel", help="panel TOML file")
    cal.add_argument("labelled", help="JSONL: one candidate a line, with \"label\": true or false")
    cal.add_argument("--out", default=None, help="write the calibration JSON here")
    cal.add_argument("--student-model", default=None, metavar="MODEL", help="as for curate")
    cal.add_argument("--max-in-flight", type=int, default=32, help="candidates judged at once")
    cal.add_argument("--budget-usd", type=float, default=None, help="stop before spending would pass this")
    cal.add_argument("--no-cache", action="store_true", help="do not use the verdict ledger")
    cal.add_argument("--cache", default=None, help="verdict ledger file")
    cal.add_argument("--json", action="store_true", help="print the report as JSON")
    cal.set_defaults(fn=_calibrate)
    d = sub.add_parser("demo", help="the whole loop on the embedded default (tiny student, CPU)")
    d.add_argument("--out", default=None, help="run directory (default runs/demo)")
    d.add_argument("--rounds", type=int, default=3)
    d.add_argument("--accept-all", action="store_true", help="the control: SFT on every candidate")
    d.add_argument("--quick", action="store_true", help="fewer tasks and steps (for CI)")
    d.add_argument("--tasks", choices=("arithmetic", "code"), default="arithmetic",
                   help="the built-in task family: calculator agent (default) or Python functions with unit tests")
    d.add_argument("--seed", type=int, default=0, help="seed of the warm start, sampling and SFT (the task "
                   "splits stay the same)")
    d.add_argument("--force", action="store_true", help="archive a run of another config in --out and start afresh")
    d.set_defaults(fn=_demo)
    r = sub.add_parser("run", help="run a configured expert-iteration loop")
    r.add_argument("config", help="run TOML (student, tasks, generate, panel, sft, rounds)")
    r.add_argument("--out", required=True, help="run directory (resumable)")
    r.add_argument("--rounds", type=int, default=None)
    r.add_argument("--accept-all", action="store_true", help="the control: SFT on every candidate")
    r.add_argument("--force", action="store_true", help="archive a run of another config in --out and start afresh")
    r.add_argument("--budget-usd", type=float, default=None, metavar="USD",
                   help="cap on everything the run pays for, all rounds and invocations (overrides [budget] usd); "
                   "the run stops at a stage boundary when it is reached, and resumes with a larger one")
    r.add_argument("--dry-run", action="store_true",
                   help="print the paid calls and an upper bound on their cost per round and in all; call nothing")
    r.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    r.add_argument("--no-cache", action="store_true", help="do not use the verdict ledger")
    r.add_argument("--cache", default=None, help="verdict ledger file (default: ~/.cache/tgrs-agents/verdicts.sqlite)")
    r.set_defaults(fn=_run)
    dc = sub.add_parser("demo-curate", help="curate a generated trajectory file with verifiers")
    dc.add_argument("--out", default="runs/demo-curate")
    dc.add_argument("--n", type=int, default=2000, help="trajectories to generate")
    dc.set_defaults(fn=_demo_curate)
    rp = sub.add_parser("report", help="write DIR/report.html: plots, teacher table, trajectory browser")
    rp.add_argument("dir", help="a curate run directory, or an expert-iteration directory (tgrs run/demo)")
    rp.add_argument("--screenshots", action="store_true",
                    help="also save DIR/report-screenshots/*.png with headless chromium")
    rp.set_defaults(fn=_report)
    st = sub.add_parser("status", help="a curate run's provider batches in flight: age and counts (from its "
                        "journal; --poll asks the provider)")
    st.add_argument("dir", help="a curate run directory")
    st.add_argument("--poll", action="store_true", help="ask the provider for each batch's state and counts")
    st.add_argument("--json", action="store_true", help="print as JSON")
    st.set_defaults(fn=_status)
    ex = sub.add_parser("export", help="a run's kept trajectories in a trainer's format (openai-ft, "
                        "sharegpt, hf, llamafactory), with agent-trace hygiene; calls no API")
    ex.add_argument("dir", help="a curate run directory (accepted.jsonl), a `tgrs run` directory "
                    "(the last round's pool.jsonl) or a JSONL file")
    ex.add_argument("--to", required=True, choices=["openai-ft", "sharegpt", "hf", "llamafactory", "dpo"],
                    help="dpo: preference pairs (accepted and rejected candidates of one curate run or round)")
    ex.add_argument("--pairs", choices=["accepted-rejected", "best-worst", "all", "hard"],
                    default="accepted-rejected",
                    help="dpo: best accepted vs worst rejected (default), best vs worst by panel score, "
                    "every accepted x rejected, or best accepted vs the rejected closest to acceptance (hard)")
    ex.add_argument("--pairs-per-task", type=int, default=1, metavar="N", help="dpo: at most N pairs a task "
                    "(default 1; 0: no cap)")
    ex.add_argument("--min-margin", type=float, default=0.0, metavar="X",
                    help="dpo: pair only when the panel scores differ by at least X (ties never pair)")
    ex.add_argument("--out", required=True, help="output file (a directory for hf and llamafactory; "
                    "hf writes parquet when it ends in .parquet); the report goes to OUT.export.json")
    ex.add_argument("--round", type=int, default=None, help="which round of a `tgrs run` directory")
    ex.add_argument("--max-tokens", type=int, default=None, help="drop traces longer than this")
    ex.add_argument("--tokenizer", default=None,
                    help="count tokens with this tokenizer (default: estimate, ceil(chars / 4))")
    ex.add_argument("--tool-ids", choices=["repair", "drop", "off"], default="repair",
                    help="pair tool calls and results by id: repair orphans (default), drop the trace, "
                    "or leave as is")
    ex.add_argument("--no-redact", action="store_true", help="keep strings that look like secrets")
    ex.add_argument("--keep-errored", action="store_true", help="keep traces whose generation errored")
    ex.add_argument("--keep-trailing-user", action="store_true",
                    help="keep user turns after the last assistant turn")
    ex.add_argument("--keep-unanswered", action="store_true",
                    help="keep traces that do not end on an assistant answer")
    ex.add_argument("--name", default="tgrs", help="dataset name in dataset_info.json (llamafactory)")
    ex.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    ex.add_argument("--json", action="store_true", help="print the report as JSON")
    ex.set_defaults(fn=_export)
    return p


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # TRL would otherwise phone home
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except TgrsError as e:
        print(f"tgrs: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # one line, the file and the cause: not a traceback
        print(f"tgrs: error: {e.filename or ''}{': ' if e.filename else ''}{e.strerror or e}", file=sys.stderr)
        return 2
    except sqlite3.Error as e:
        print(f"tgrs: error: SQLite: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
