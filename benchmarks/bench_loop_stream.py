"""One expert-iteration round, streamed vs sequential: the tiny student samples, an API judge at 300 ms judges.

The student is the demo's tiny one, warm-started (as ``tgrs demo`` does: round 0's SFT on the seed set,
cached under ``--work``); the round is ``--tasks`` arithmetic training tasks x ``--n`` rollouts at
temperature 1.0, cut into chunks of ``--chunk-tasks`` tasks (tgrs_agents.loop.stream). The judge is
one ``openai`` teacher talking to the loopback stand-in (tgrs_agents.testing.standin, its own process)
with lognormal latency of mean ``--latency`` seconds.

A generate-only pass first measures generation alone; the judge's ``max_concurrency`` is then set so
that judging alone takes about as long (``--concurrency`` sets it instead), the case where streaming
matters most. Then the same round runs sequentially (make every chunk, then judge the file) and
streamed (judge each chunk as it is written), each in a fresh directory, and the script prints the
wall times of generation, judging, the round, their overlap, and round / max(generate, judge) with the
sequential run's standalone walls as the max. Target: streamed <= 1.15, against the sequential sum::

    python benchmarks/bench_loop_stream.py                  # 192 tasks x 8, 300 ms judge
    python benchmarks/bench_loop_stream.py --tasks 64 --latency 0.3 --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tgrs_agents.curation.panel_file import panel_from_dict
from tgrs_agents.curation.run import CurateOptions, CurateRun
from tgrs_agents.loop.config import LoopConfig
from tgrs_agents.loop.rounds import ExpertIteration
from tgrs_agents.loop.stream import generate_and_judge, stream_fingerprint, student_chunks
from tgrs_agents.paid.services import Services

KEY_ENV = "TGRS_BENCH_STANDIN_KEY"
TARGET = 1.15


def standin(latency: float) -> tuple[subprocess.Popen[str], int]:
    plan = json.dumps({"latency_mean_s": latency, "seed": 1})
    proc = subprocess.Popen([sys.executable, "-m", "tgrs_agents.testing.standin", "--port", "0", "--plan", plan],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"the stand-in did not start: {line!r}")
    return proc, int(line.split()[1])


def student(work: Path, cfg: LoopConfig) -> Path:
    loop = ExpertIteration(cfg, work / "student-run", log=lambda s: None)
    model = loop.model_dir(0)
    if not (model / "config.json").exists():
        t0 = time.perf_counter()
        train, held = loop.tasks()
        loop.warm_start(train, held)
        print(f"warm-started the tiny student in {time.perf_counter() - t0:.0f}s", flush=True)
    return model


def one_round(cfg: LoopConfig, model: Path, out: Path, *, judge_table: dict[str, Any] | None, stream: bool,
              chunk_tasks: int | None) -> Any:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    train, _ = ExpertIteration(cfg, out / "loop", log=lambda s: None).tasks()
    n, cands = cfg.generate.n, out / "candidates.jsonl"
    judge = None
    if judge_table is not None:
        panel = panel_from_dict({"policy": "unanimous", "teacher": [judge_table]}, base_dir=out)

        def judge(feed: Any) -> Any:
            return CurateRun(cands, panel, out / "curate", options=CurateOptions(cache=False), source=feed).run()

    async def go() -> Any:
        async with student_chunks(cfg, model, n, cfg.generate.temperature, "r1-", Services()) as chunk:
            return await generate_and_judge(chunk, train, n, cands, judge=judge, stream=stream,
                                            chunk_tasks=chunk_tasks, fingerprint=stream_fingerprint(train, n, "r1-"))

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=192)
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--chunk-tasks", type=int, default=None, help="tasks per chunk (default: 16 chunks)")
    ap.add_argument("--latency", type=float, default=0.3)
    ap.add_argument("--concurrency", type=int, default=0, help="the judge's max_concurrency (0: balance)")
    ap.add_argument("--warm-steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/tgrs-bench-loop-stream"))
    args = ap.parse_args()

    cfg = LoopConfig(tasks={"n_train": args.tasks, "n_eval": 32}, generate={"n": args.n},
                     warm_start={"steps": args.warm_steps}, base_dir=str(args.work))
    model = student(args.work, cfg)
    os.environ[KEY_ENV] = "sk-bench-standin"
    proc, port = standin(args.latency)
    try:
        alone = one_round(cfg, model, args.work / "alone", judge_table=None, stream=False,
                          chunk_tasks=args.chunk_tasks)
        rollouts = alone.samples
        conc = args.concurrency or max(1, math.ceil(rollouts * args.latency / alone.generate_s))
        chunks = f"{args.chunk_tasks} tasks" if args.chunk_tasks else "1/16 of the tasks"
        print(f"{rollouts} rollouts ({args.tasks} tasks x {args.n}, chunks of {chunks}); generation "
              f"alone {alone.generate_s:.1f}s; judge latency {args.latency * 1000:.0f} ms, max_concurrency {conc}",
              flush=True)
        table = {"name": "judge", "kind": "openai", "model": "gpt-judge-bench", "base_url": f"http://127.0.0.1:{port}/v1",
                 "api_key_env": KEY_ENV, "rubric": "The final answer must equal the reference.", "max_tokens": 64,
                 "timeout_s": 30.0, "max_concurrency": conc, "price_input_per_mtok": 0.0,
                 "price_output_per_mtok": 0.0}
        print(f"{'mode':<11}{'generate_s':>11}{'judge_s':>9}{'overlap_s':>10}{'round_s':>9}{'round/max':>10}"
              f"{'accepted':>9}")
        ratios: list[tuple[float, float]] = []
        for rep in range(args.repeats):
            runs = {}
            for streamed in ((False, True) if rep % 2 == 0 else (True, False)):  # alternate: the load drifts
                runs[streamed] = one_round(cfg, model, args.work / ("stream" if streamed else "seq"),
                                           judge_table=table, stream=streamed, chunk_tasks=args.chunk_tasks)
            seq, st = runs[False], runs[True]
            top = max(seq.generate_s, seq.judge_s)  # each stage alone, from the sequential run
            for name, r in (("sequential", seq), ("streamed", st)):
                ratio = r.round_s / top
                print(f"{name:<11}{r.generate_s:>11.1f}{r.judge_s:>9.1f}{r.overlap_s:>10.1f}{r.round_s:>9.1f}"
                      f"{ratio:>10.2f}{r.summary['accepted']:>9}", flush=True)
            verdict = "meets" if st.round_s / top <= TARGET else "misses"
            print(f"repeat {rep + 1}: streamed round / max(generate, judge) = {st.round_s / top:.2f} ({verdict} the "
                  f"{TARGET}x target); sequential = {seq.round_s / top:.2f}", flush=True)
            ratios.append((st.round_s / top, seq.round_s / top))
        if len(ratios) > 1:
            print(f"median over {len(ratios)} repeats: streamed {statistics.median(r[0] for r in ratios):.2f}, "
                  f"sequential {statistics.median(r[1] for r in ratios):.2f} (target {TARGET})")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
