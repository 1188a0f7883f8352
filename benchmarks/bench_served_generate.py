"""A served generator's round, sampled whole vs in chunks (written as they end, so a kill keeps them).

One round of ``[generator]`` sampling (plain distillation: an OpenAI-compatible calculator agent, two
requests a rollout) against the loopback stand-in with lognormal latency, three ways side by side,
alternating, each in a fresh directory:

* **whole**: every rollout at once, the round written when all are done (the path before chunking:
  a kill mid-round pays for the whole round again);
* **chunks, 1 at a time**: the round in chunks of tasks (tgrs_agents.loop.stream), each sampled after
  the one before it is written;
* **chunks, k at a time** (``--ahead``): the loop samples ``SERVED_AHEAD`` at a time for a served generator.

Prints the median wall time of each and its ratio to the whole round; a kill pays again only for the
chunks in flight (``tests/loop/test_served_generator.py``)::

    python benchmarks/bench_served_generate.py                 # 96 tasks x 4 rollouts, 200 ms
    python benchmarks/bench_served_generate.py --tasks 48 --latency 0.3 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tgrs_agents.loop.config import load_run_config
from tgrs_agents.loop.sampling import load_tasks, rollouts
from tgrs_agents.loop.stream import SERVED_AHEAD, generate_and_judge, stream_fingerprint, student_chunks
from tgrs_agents.paid.services import Services
from tgrs_agents.testing.served_agent import calculator_agent
from tgrs_agents.testing.standin import FaultPlan, StandIn

KEY_ENV = "TGRS_BENCH_GEN_KEY"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=96)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ahead", default=f"1,8,{SERVED_AHEAD}", help="chunks sampled at once, comma-separated")
    args = ap.parse_args()
    aheads = [int(a) for a in args.ahead.split(",")]
    os.environ[KEY_ENV] = "sk-bench-not-a-real-key"
    walls: dict[str, list[float]] = {"whole": [], **{f"chunks, {a} at a time": [] for a in aheads}}
    with tempfile.TemporaryDirectory() as tmp, StandIn(FaultPlan(latency_mean_s=args.latency, seed=1),
                                                       chat=calculator_agent) as srv:
        d = Path(tmp)
        (d / "run.toml").write_text(f"""[tasks]
n_train = {args.tasks}
n_eval = 4
[generate]
n = {args.n}
[generator]
model = "teacher-m"
base_url = "{srv.url_openai}"
api_key_env = "{KEY_ENV}"
price_input_per_mtok = 0
price_output_per_mtok = 0
""")
        cfg = load_run_config(d / "run.toml")
        train, _ = load_tasks(cfg)

        def whole(i: int) -> int:
            recs, _ = rollouts(cfg, cfg.generator, train, args.n, 1.0, "r1-", Services())
            (d / f"whole{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
            return len(recs)

        def chunks(i: int, ahead: int) -> int:
            async def go() -> Any:
                async with student_chunks(cfg, cfg.generator, args.n, 1.0, "r1-", Services()) as chunk:
                    return await generate_and_judge(chunk, train, args.n, d / f"c{ahead}-{i}.jsonl", ahead=ahead,
                                                    fingerprint=stream_fingerprint(train, args.n, "r1-"))
            return asyncio.run(go()).samples

        for i in range(args.repeats):
            for ahead in [0, *aheads]:  # 0: the whole round at once
                t0 = time.perf_counter()
                got = whole(i) if ahead == 0 else chunks(i, ahead)
                name = "whole" if ahead == 0 else f"chunks, {ahead} at a time"
                walls[name].append(time.perf_counter() - t0)
                assert got == args.tasks * args.n, (name, got)
    base = statistics.median(walls["whole"])
    print(f"{args.tasks} tasks x {args.n} rollouts (2 requests each), stand-in latency lognormal mean "
          f"{args.latency * 1000:.0f} ms, median of {args.repeats}; {os.cpu_count()} CPUs")
    print(f"{'round sampled':<22} {'wall s':>7} {'x whole':>8}   runs")
    for name, ws in walls.items():
        med = statistics.median(ws)
        print(f"{name:<22} {med:7.2f} {med / base:8.2f}   {', '.join(f'{w:.2f}' for w in ws)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
