"""Throughput and peak memory of ``tgrs curate`` with the three-verifier panel, on one core.

Generates synthetic calculator-agent trajectories (``tgrs_agents.tasks.arithmetic_data``; one broken line in 97
and a duplicate id, like the demo) for each size, reusing files already generated, then runs
``tgrs curate --quiet`` on each as a child process pinned to one core (``taskset -c 0``, else
``os.sched_setaffinity``). Wall time includes interpreter start-up; peak RSS is the child's own
``ru_maxrss`` (from ``wait4``). Targets from the spec: >= 5,000 candidates/s on one core, and a
peak RSS that does not grow with the input::

    python benchmarks/bench_curate.py                    # 10k, 100k and 1M
    python benchmarks/bench_curate.py --sizes 10k,100k   # a subset
    python benchmarks/bench_curate.py --sizes 100k --profile /tmp/curate-100k.prof
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PANEL = ROOT / "teachers" / "panel-verifiers.toml"
TARGET_RATE = 5_000.0
MAX_RSS_GROWTH = 1.5  # largest run's peak RSS / smallest run's, above which memory "grows"


def parse_size(text: str) -> int:
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k" if n % 1000 == 0 else str(n)


def ensure_input(data_dir: Path, n: int, seed: int, bad_every: int) -> Path:
    """The generated input for ``n`` candidates; generated once, then reused."""
    from tgrs_agents.tasks.arithmetic_data import write_synthetic

    path = data_dir / f"synthetic-{label(n)}-seed{seed}-bad{bad_every}.jsonl"
    if not path.exists():
        t0 = time.perf_counter()
        tmp = path.with_suffix(".jsonl.part")
        write_synthetic(tmp, n, seed=seed, bad_every=bad_every)
        os.replace(tmp, path)
        print(f"  generated {path.name} ({path.stat().st_size / 1e6:.0f} MB) in "
              f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return path


def pinned(cmd: list[str]) -> tuple[list[str], Any]:
    """``cmd`` pinned to core 0: through taskset if there is one, else a pre-exec affinity call."""
    taskset = shutil.which("taskset")
    if taskset:
        return [taskset, "-c", "0", *cmd], None
    if hasattr(os, "sched_setaffinity"):
        return cmd, lambda: os.sched_setaffinity(0, {0})
    print("  warning: cannot pin to one core on this platform", file=sys.stderr)
    return cmd, None


def run_child(cmd: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, float, float, str]:
    """Run ``cmd``; returns (exit code, wall seconds, peak RSS in MB, stdout)."""
    cmd, preexec = pinned(cmd)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out_file, err_file = tempfile.TemporaryFile(), tempfile.TemporaryFile()  # no pipe to fill up
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out_file, stderr=err_file, env=env, preexec_fn=preexec)
    if hasattr(os, "wait4"):  # this child's own rusage, whatever ran before it
        deadline = t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        maxrss_kb = usage.ru_maxrss
    else:  # the max over all children so far: only right if this one is the largest yet
        proc.wait(timeout=timeout_s)
        wall = time.perf_counter() - t0
        maxrss_kb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
    if sys.platform == "darwin":
        maxrss_kb //= 1024  # bytes there
    if proc.returncode != 0:
        err_file.seek(0)
        print(err_file.read().decode(errors="replace")[-4000:], file=sys.stderr)
    out_file.seek(0)
    return proc.returncode, wall, maxrss_kb / 1024, out_file.read().decode()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10k,100k,1M", help="comma-separated candidate counts (default: 10k,100k,1M)")
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "tgrs-bench",
                   help="where generated inputs are kept and reused (default: $TMPDIR/tgrs-bench)")
    p.add_argument("--panel", type=Path, default=PANEL, help="panel file (default: the three verifiers)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bad-every", type=int, default=97, help="one broken line every N (0: none)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds allowed per curate run")
    p.add_argument("--keep-runs", action="store_true", help="keep each run directory (they are large)")
    p.add_argument("--profile", type=Path, default=None,
                   help="also run the largest size under cProfile and write the stats here")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = p.parse_args(argv)

    sizes = sorted(parse_size(s) for s in args.sizes.split(",") if s.strip())
    args.data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TGRS_CACHE_DIR": str(args.data_dir / "cache")}  # keep ~/.cache clean
    results: list[dict[str, Any]] = []
    for n in sizes:
        inp = ensure_input(args.data_dir, n, args.seed, args.bad_every)
        out = args.data_dir / f"run-{label(n)}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "tgrs_agents", "curate", str(inp), "--panel", str(args.panel),
               "--out", str(out), "--quiet", "--json"]
        print(f"  curate {label(n)} ...", file=sys.stderr, flush=True)
        code, wall, rss, stdout = run_child(cmd, env, args.timeout)
        if code != 0:
            print(f"curate failed on {label(n)} (exit {code})", file=sys.stderr)
            return 1
        summary = json.loads(stdout)
        assert summary["input_lines"] == n and summary["pending"] == 0, summary
        results.append({"n": n, "wall_s": round(wall, 3), "curate_wall_s": summary["wall_s"],
                        "candidates_per_s": round(n / wall, 1), "peak_rss_mb": round(rss, 1),
                        "valid": summary["valid"], "accepted": summary["accepted"]})
        if not args.keep_runs:
            shutil.rmtree(out, ignore_errors=True)

    print(f"\ntgrs curate, panel {args.panel.name}, one core (python {sys.version.split()[0]})")
    print(f"{'n':>10} {'wall s':>9} {'candidates/s':>13} {'peak RSS MB':>12}   (in-run s)")
    for r in results:
        print(f"{r['n']:>10,} {r['wall_s']:>9.2f} {r['candidates_per_s']:>13,.0f} {r['peak_rss_mb']:>12.1f}"
              f"   ({r['curate_wall_s']:.2f})")
    slowest = min(r["candidates_per_s"] for r in results)
    growth = max(r["peak_rss_mb"] for r in results) / min(r["peak_rss_mb"] for r in results)
    print(f"throughput target >= {TARGET_RATE:,.0f}/s: {'met' if slowest >= TARGET_RATE else 'MISSED'} "
          f"(slowest {slowest:,.0f}/s)")
    if len(results) > 1:
        print(f"flat memory (peak RSS ratio <= {MAX_RSS_GROWTH}): "
              f"{'met' if growth <= MAX_RSS_GROWTH else 'MISSED'} (ratio {growth:.2f})")
    if args.json:
        print(json.dumps(results, indent=2))

    if args.profile:
        n = sizes[-1]
        inp = ensure_input(args.data_dir, n, args.seed, args.bad_every)
        out = args.data_dir / f"run-{label(n)}-profile"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, "-m", "cProfile", "-o", str(args.profile), "-m", "tgrs_agents", "curate",
               str(inp), "--panel", str(args.panel), "--out", str(out), "--quiet", "--json"]
        code, wall, _, _ = run_child(cmd, env, args.timeout)
        shutil.rmtree(out, ignore_errors=True)
        if code != 0:
            return 1
        import pstats

        print(f"\ncProfile of {label(n)} ({wall:.1f}s under the profiler), top 25 by cumulative time:")
        pstats.Stats(str(args.profile)).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
