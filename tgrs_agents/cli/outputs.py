"""Commands that read a finished run directory: ``tgrs report`` and ``tgrs export``."""

from __future__ import annotations

import argparse
import json


def _report(args: argparse.Namespace) -> int:
    """Write DIR/report.html (and, with --screenshots, PNGs of it) for a curate or loop directory."""
    from ..report.html import screenshot_report, write_report

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
    from ..export import Hygiene, PairSettings, export_run

    pairs = PairSettings(mode=args.pairs, pairs_per_task=args.pairs_per_task or None, min_margin=args.min_margin)
    hygiene = Hygiene(drop_errored=not args.keep_errored, trim_trailing_user=not args.keep_trailing_user,
                      tool_ids=args.tool_ids, require_answer=not args.keep_unanswered,
                      max_tokens=args.max_tokens, tokenizer=args.tokenizer, redact=not args.no_redact)
    report = export_run(args.dir, to=args.to, out=args.out, round=args.round, hygiene=hygiene,
                        force=args.force, name=args.name, pairs=pairs)
    print(json.dumps(report.to_json(), indent=2) if args.json else "\n".join(report.lines()))
    return 0


