"""The sequential parts of ``--engine ray`` around the shards: how long before they bound a big run.

A cluster run does three things outside the shards' parallel judging (tgrs_agents.cluster):

* the id pre-pass scan (``scan_shard``): each worker reads its shard and lists its ids -- parallel,
  so its rate per worker is what matters;
* the driver's cross-shard id merge (``cross_shard_repeats``): every id through one SQLite index, in
  shard order -- sequential;
* the driver's output merge (``shards.merge``): every output row concatenated, rows after the first
  shard re-numbered (parsed and written again) -- sequential.

Timed here in one process (no Ray: the same functions), then the arithmetic for 10 M lines::

    python benchmarks/bench_ray_prepass.py            # 200,000 lines, 4 shards
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from tgrs_agents.cluster.ids import cross_shard_repeats, scan_shard
from tgrs_agents.cluster.shards import copy_range, merge, plan
from tgrs_agents.formats import resolve
from tgrs_agents.tasks.arithmetic_data import write_synthetic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        src = write_synthetic(d / "in.jsonl", args.n, seed=1, per_task=4)
        fmt = resolve(src, "auto")[0].name
        dirs, offsets, total = [], [], 0
        t0 = time.perf_counter()
        for i, (a, b) in enumerate(plan(src, args.shards)):
            sd = d / f"s{i}"
            sd.mkdir()
            offsets.append(total)
            total += copy_range(src, a, b, sd / "input.jsonl")
            dirs.append(sd)
        copy_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        ids = sum(scan_shard(sd / "input.jsonl", fmt) for sd in dirs)
        scan_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        cross_shard_repeats(dirs, offsets, d)
        cross_s = time.perf_counter() - t0
        for sd in dirs:  # an output as big as the input: every record "accepted"
            (sd / "run").mkdir()
            shutil.copy(sd / "input.jsonl", sd / "run" / "accepted.jsonl")
        (d / "out").mkdir()
        t0 = time.perf_counter()
        rows = merge([sd / "run" for sd in dirs], offsets, d / "out")
        merge_s = time.perf_counter() - t0
    n = args.n
    print(f"{n:,} lines ({ids:,} ids), {args.shards} shards, one process")
    print(f"copy into shards:   {n / copy_s:12,.0f} lines/s   (each worker copies its own range)")
    print(f"pre-pass scan:      {n / scan_s:12,.0f} lines/s   per worker (parallel: x workers)")
    print(f"cross-shard merge:  {ids / cross_s:12,.0f} ids/s     in the driver (sequential)")
    print(f"output merge:       {rows['accepted'] / merge_s:12,.0f} rows/s    in the driver (sequential)")
    big = 10_000_000
    print(f"10 M lines: scan {big / (n / scan_s) / 60:.1f} min of one worker (/{args.shards} on {args.shards}), "
          f"driver id merge {big / (ids / cross_s):.0f} s, output merge {big / (rows['accepted'] / merge_s):.0f} s")


if __name__ == "__main__":
    main()
