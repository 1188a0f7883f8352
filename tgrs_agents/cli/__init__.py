"""The ``tgrs`` command line: the parser and :func:`main`; each command's handler is in a module
beside it (:mod:`.curate`, :mod:`.loop`, :mod:`.outputs`)."""

from __future__ import annotations

import argparse
import sqlite3
import sys

from ..errors import TgrsError
from .curate import _calibrate, _curate, _status
from .loop import _demo, _demo_curate, _run
from .outputs import _export, _report


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
