"""The whole ``tgrs curate`` process against a request quota: how close to the quota-bound time?

A run that a provider's request limit bounds cannot finish sooner than ``calls / rate``. This
measures everything else the user waits for on top of that -- interpreter start-up and imports,
reading the input, the limiter's first second, the last calls' latency, the end-of-run report --
by timing the real command line in a subprocess::

    tgrs curate data.jsonl --panel panel.toml --out run/ --no-cache --quiet --json

with one OpenAI judge (defaults only: the panel states the account's ``rpm``, nothing else is
tuned) against the loopback stand-in (its own process, lognormal latency, the request rate
enforced with 429s). The judge judges every candidate, so the quota-bound time is
``candidates / (rpm / 60)``; the default is 1,500 candidates at 3,000 requests/min, 30 s. The key
is a fake one, read from an environment variable; ``--learn`` leaves ``rpm`` out of the panel, so
the limiter takes the limit from the server's headers::

    python benchmarks/bench_curate_quota.py                 # target: wall / quota-bound <= 1.05
    python benchmarks/bench_curate_quota.py --rpm 6000 --n 3000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tgrs_agents.tasks.arithmetic_data import write_synthetic

KEY_ENV = "TGRS_BENCH_API_KEY"
FAKE_KEY = "sk-test-bench-not-a-real-key"


def start_standin(plan: dict) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "tgrs_agents.testing.standin", "--port", "0",
                             "--plan", json.dumps(plan)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"stand-in did not start: {line!r}")
    return proc, int(line.split()[1])


def write_panel(path: Path, url: str, rpm: float | None) -> Path:
    lines = ['policy = "unanimous"', "", "[[teacher]]", 'name = "gpt_judge"', 'kind = "openai"',
             'model = "gpt-4o-mini"', f'base_url = "{url}"', f'api_key_env = "{KEY_ENV}"', "max_tokens = 64"]
    if rpm is not None:
        lines.append(f"rpm = {rpm:g}")
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1500, help="candidates (each one judge call)")
    ap.add_argument("--rpm", type=float, default=3000, help="the server's request limit")
    ap.add_argument("--latency", type=float, default=0.3, help="mean server latency, seconds")
    ap.add_argument("--learn", action="store_true", help="no rpm in the panel: learn it from headers")
    ap.add_argument("--target", type=float, default=1.05, help="wall / quota-bound to pass")
    args = ap.parse_args()
    quota_s = args.n / (args.rpm / 60)
    env = {**os.environ, KEY_ENV: FAKE_KEY}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        data = write_synthetic(d / "in.jsonl", args.n, seed=7, per_task=1)
        # interpreter start-up and the CLI's imports alone, for the breakdown
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import tgrs_agents.cli"], check=True, env=env)
        startup_s = time.perf_counter() - t0

        proc, port = start_standin({"rpm": args.rpm, "latency_mean_s": args.latency, "seed": 1})
        try:
            panel = write_panel(d / "panel.toml", f"http://127.0.0.1:{port}/v1",
                                None if args.learn else args.rpm)
            cmd = [sys.executable, "-m", "tgrs_agents", "curate", str(data), "--panel", str(panel),
                   "--out", str(d / "run"), "--no-cache", "--quiet", "--json"]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            wall = time.perf_counter() - t0
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
                stats = json.load(r)
        finally:
            proc.terminate()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        return 2
    assert FAKE_KEY not in done.stdout + done.stderr
    summary = json.loads(done.stdout)
    decided = summary.get("accepted", 0) + summary.get("rejected", 0)
    ratio = wall / quota_s
    print(f"tgrs curate: {args.n} candidates, one openai judge ({'rpm from headers' if args.learn else 'rpm stated'})"
          f"; stand-in {args.rpm:g} requests/min, latency lognormal mean {args.latency * 1000:.0f} ms")
    print(f"  quota-bound time  {quota_s:7.2f} s   ({args.n} calls at {args.rpm / 60:g}/s)")
    print(f"  total wall        {wall:7.2f} s   (the subprocess, start to exit)")
    print(f"    of which start-up and imports ~{startup_s:.2f} s; the run's own wall_s {summary.get('wall_s')}")
    print(f"  server: {stats.get('requests', 0)} requests, {stats.get('429', 0)} 429s; "
          f"decided {decided} of {args.n}, failed {summary.get('failed')}")
    ok = ratio <= args.target and decided == args.n
    print(f"  wall / quota-bound = {ratio:.3f}   [{'ok' if ok else 'MISS'}] target <= {args.target}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
