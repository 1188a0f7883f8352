"""``tgrs curate --engine ray`` against one request quota: does the cluster keep to it?

One OpenAI judge (the panel states ``rpm``) against the loopback stand-in (its own process,
lognormal latency, the request rate enforced with 429s at a 1 s bank). The judge judges every
candidate, so the quota-bound time is ``candidates / (rpm / 60)``. Three ways to run the same input:

* **ray (cold)**: ``--engine ray`` on local Ray, ``--workers`` shards; every worker takes its quota in
  leases from one bank actor per endpoint (tgrs_agents.cluster). Its wall includes starting the Ray
  workers (a Python process each, importing the package: about 3 s each on this loaded 2-CPU box);
* **ray (warm pool)**: the same, on workers started before the clock (``warm_workers``): what a
  driver that curates more than once (the Python API, a service) pays from its second run on, and
  what a long-lived cluster pays;
* **independent**: the input cut in ``--workers`` quarters, each a single-process ``tgrs curate`` at
  the same time, each believing it owns the whole quota -- what the cluster state exists to prevent;
* **single**: one ``tgrs curate`` process on the whole input (the reference figure).

For each: wall / quota-bound, "paid/ideal" (from the first request the server saw to the end: the
rate kept once calls flow, start-up aside) and the share of the server's answers that were 429s
(targets for ray: <= 1.05 and <= 1%, as a single process)::

    python benchmarks/bench_ray_curate.py                  # 1,500 candidates at 3,000/min, 4 workers
    python benchmarks/bench_ray_curate.py --n 3000 --no-single
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

from bench_curate_quota import FAKE_KEY, KEY_ENV, start_standin, write_panel

from tgrs_agents.cluster.shards import copy_range, plan
from tgrs_agents.tasks.arithmetic_data import write_synthetic


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
        return json.load(r)


def cli(data: Path, panel: Path, out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tgrs_agents", "curate", str(data), "--panel", str(panel),
                             "--out", str(out), "--no-cache", "--quiet", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def measure(port: int, fn) -> tuple[float, float, int, int, int]:
    """wall, from the first request to the end, requests, 429s, decided"""
    before = stats(port)
    t0, start = time.perf_counter(), time.time()
    decided = fn()
    wall, end = time.perf_counter() - t0, time.time()
    after = stats(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/arrivals", timeout=30) as r:
        first = min((t for t, _ in json.load(r) if t >= start), default=start)
    n429 = after.get("429", 0) - before.get("429", 0)
    return wall, end - first, after.get("requests", 0) - before.get("requests", 0), n429, decided


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--rpm", type=float, default=3000)
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--no-single", action="store_true")
    args = ap.parse_args()
    quota_s = args.n / (args.rpm / 60)
    os.environ[KEY_ENV] = FAKE_KEY
    env = {**os.environ}
    import ray

    from tgrs_agents.cluster.engine import curate_on_ray, warm_workers
    from tgrs_agents.curation.panel_file import load_panel
    from tgrs_agents.curation.run import CurateOptions

    rows, shard_walls = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        data = write_synthetic(d / "in.jsonl", args.n, seed=7, per_task=1)
        quarters = []
        for i, (a, b) in enumerate(plan(data, args.workers)):
            copy_range(data, a, b, d / f"q{i}.jsonl")
            quarters.append(d / f"q{i}.jsonl")
        proc, port = start_standin({"rpm": args.rpm, "latency_mean_s": args.latency, "seed": 1})
        try:
            panel = write_panel(d / "panel.toml", f"http://127.0.0.1:{port}/v1", args.rpm)
            ray.init(num_cpus=args.workers, include_dashboard=False, configure_logging=False, log_to_driver=False)

            def on_ray(out: Path) -> int:
                s = curate_on_ray(data, load_panel(panel), out, options=CurateOptions(cache=False),
                                  workers=args.workers)
                done = out.glob("shards/*/run/summary.json")
                shard_walls[out.name] = max(json.loads(p.read_text())["wall_s"] for p in done)
                return s["accepted"] + s["rejected"]

            rows.append(("ray (cold)", *measure(port, lambda: on_ray(d / "ray"))))
            ray.shutdown()
            time.sleep(2)  # the server's bank refills between runs
            ray.init(num_cpus=args.workers, include_dashboard=False, configure_logging=False, log_to_driver=False)
            t0 = time.perf_counter()
            pool = warm_workers(args.workers)
            warm_s = time.perf_counter() - t0
            rows.append(("ray (warm pool)", *measure(port, lambda: on_ray(d / "ray-warm"))))
            ray.shutdown()

            def independent() -> int:
                procs = [cli(q, panel, d / f"ind{i}", env) for i, q in enumerate(quarters)]
                outs = [p.communicate() for p in procs]
                return sum(json.loads(o)["accepted"] + json.loads(o)["rejected"] for o, _ in outs if o.strip())

            time.sleep(2)  # the server's bank refills between runs
            rows.append((f"{args.workers} independent", *measure(port, independent)))
            if not args.no_single:
                def single() -> int:
                    o, _ = cli(data, panel, d / "single", env).communicate()
                    s = json.loads(o)
                    return s["accepted"] + s["rejected"]

                time.sleep(2)
                rows.append(("single process", *measure(port, single)))
        finally:
            proc.terminate()
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
    print(f"{args.n} candidates, one openai judge, stand-in {args.rpm:g} requests/min (1 s bank), latency "
          f"lognormal mean {args.latency * 1000:.0f} ms; quota-bound {quota_s:.1f} s; {os.cpu_count()} CPUs")
    print(f"{'run':<16} {'wall s':>7} {'wall/ideal':>10} {'paid/ideal':>10} {'requests':>8} {'429s':>5} "
          f"{'429 share':>9} {'decided':>7}")
    for name, wall, paid, req, n429, decided in rows:
        print(f"{name:<16} {wall:7.1f} {wall / quota_s:10.3f} {paid / quota_s:10.3f} {req:8d} {n429:5d} "
              f"{n429 / max(req, 1):9.2%} {decided:7d}")
    print("(ray's wall includes the id pre-pass and the merge; Ray itself was started before the clock; "
          f"cold: also starting its workers, which the warm pool did before it, in {warm_s:.1f} s, "
          f"{len(pool)} workers)")
    for name, longest in shard_walls.items():
        print(f"{name}, the shards' own runs: longest {longest:.1f} s = {longest / quota_s:.3f} x ideal "
              "(the rest of its wall: worker start-up if cold, imports, the pre-pass, the merge)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
