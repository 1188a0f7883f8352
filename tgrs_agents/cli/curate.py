"""``tgrs curate`` and the commands around it: ``calibrate``, ``status``; the dry run and the
end-of-run summary lines."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any


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
    from ..curation.panel_file import load_panel
    from ..curation.progress import Progress, count_lines
    from ..curation.run import CurateOptions, CurateRun
    from ..events import EventBus

    if getattr(args, "engine", "local") == "ray":
        from ..cluster import require_ray

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
        from ..cluster.engine import curate_on_ray

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
    from ..report.warm import warm_up

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
    from ..report.html import maybe_write_report

    maybe_write_report(args.out, log=lambda s: print(s, file=sys.stderr))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    """Score every teacher of a panel against a labelled file; write the calibration file."""
    from ..curation.calibrate import calibrate
    from ..curation.panel_file import load_panel
    from ..paid.cost import Budget
    from ..paid.ledger import Ledger
    from ..paid.services import Services

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
    from ..formats import resolve

    if not Path(args.input).exists():
        return args.input_format, False  # the run says the file is missing
    fmt, why = resolve(args.input, args.input_format)
    print(f"tgrs: input format {fmt.name} ({why})", file=sys.stderr)
    return fmt.name, Path(args.input).is_file() and fmt.open(Path(args.input)).per_line


def _dry_run(args: argparse.Namespace, panel: Any) -> int:
    from ..curation.dryrun import dry_run
    from ..paid.ledger import Ledger
    from ..paid.services import Services

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
    from ..curation.batching import batch_status, poll_status

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


