"""Batch judging inside the cascade, against the loopback stand-in: the same 2,000-candidate cascade (a
``final_answer`` verifier, then a paid OpenAI judge) online and with ``mode = "batch"``.

Prints, for each way: decisions (identical?), paid judge requests, cost and cost per accepted sample, wall time
beside the stand-in's simulated batch processing delay; and for a batch run killed (``kill -9``) three times and
resumed by the same command each time: verdicts paid twice (provider requests answered beyond the candidates
that needed the judge) and whether its decisions equal the uninterrupted runs'.

    nice -n 15 .venv/bin/python benchmarks/bench_batch.py [--n 2000] [--delay 8]

Each run is ``python -m tgrs_agents curate`` in a subprocess (``--no-cache``: nothing is served from the
ledger, so every verdict is paid by the run that needs it); the stand-in serves from this process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tgrs_agents.tasks.arithmetic_data import write_synthetic  # noqa: E402
from tgrs_agents.testing.standin import FaultPlan, StandIn, default_brain  # noqa: E402

ENV, KEY = "TGRS_BENCH_OA_KEY", "sk-bench-ba7c4"


def brain(prompt: str) -> dict[str, Any]:
    """The stand-in's judge: the default rule, and a correct answer to a multiple of 5 is rejected too."""
    out = default_brain(prompt)
    ref = re.findall(r"<reference>(.*?)</reference>", prompt, re.S)
    if out["passed"] and ref and int(ref[-1].strip()) % 5 == 0:
        return {"score": 3, "passed": False, "rationale": "a multiple of five"}
    return out


def panel(path: Path, url: str, batch: dict[str, Any] | None) -> Path:
    lines = ['policy = "unanimous"', "", "[[teacher]]", 'name = "answer"', 'kind = "final_answer"', "cost_rank = 0",
             "", "[[teacher]]", 'name = "judge"', 'kind = "openai"', 'model = "gpt-4o-mini"', f'base_url = "{url}"',
             f'api_key_env = "{ENV}"', "cost_rank = 10", "rpm = 1000000", "tpm = 1000000000", "max_concurrency = 64"]
    if batch is not None:
        lines += ['mode = "batch"', "", "[teacher.batch]", *(f"{k} = {json.dumps(v)}" for k, v in batch.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def curate(data: Path, pfile: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, ENV: KEY, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tgrs_agents", "curate", str(data), "--panel", str(pfile), "--out",
                             str(out), "--quiet", "--json", "--no-cache", "--max-in-flight", "64"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen) -> dict[str, Any]:
    stdout, stderr = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"curate failed ({proc.returncode}): {stderr[-3000:]}")
    return json.loads(stdout)


def kill_when(proc: subprocess.Popen, ready: Any, what: str) -> None:
    while not ready():
        if proc.poll() is not None:
            raise SystemExit(f"the run ended before '{what}': {proc.communicate()[1][-2000:]}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    print(f"    kill -9 when {what}")


def decisions(out: Path) -> dict[str, bool]:
    got: dict[str, bool] = {}
    for name, ok in (("accepted", True), ("rejected", False)):
        p = out / f"{name}.jsonl"
        if p.exists():
            got.update({json.loads(line)["id"]: ok for line in p.read_text().splitlines()})
    return got


def judged(out: Path) -> int:
    p = out / "verdicts.jsonl"
    return sum('"teacher":"judge"' in line.replace(" ", "") for line in p.read_text().splitlines()) \
        if p.exists() else 0


def answered(srv: StandIn, since: int = 0) -> int:
    return sum(kind == "ok" for b in list(srv.batches.all.values())[since:] for _, kind, _ in b.results)


def row(name: str, s: dict[str, Any], wall: float, paid: int) -> None:
    per = s["cost_usd"] / s["accepted"] if s["accepted"] else float("nan")
    print(f"  {name:<22} accepted {s['accepted']:>5}  rejected {s['rejected']:>5}  judge requests {paid:>5}  "
          f"cost ${s['cost_usd']:.5f}  per accepted ${per:.3e}  wall {wall:6.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--delay", type=float, default=8.0, help="the stand-in's batch processing delay (s)")
    args = ap.parse_args()
    batch = {"max_items": 250, "window_s": 1.0, "poll_s": 0.5}
    with tempfile.TemporaryDirectory() as tmp, StandIn(FaultPlan(batch_delay_s=args.delay), brain=brain) as srv:
        t = Path(tmp)
        data = write_synthetic(t / "in.jsonl", args.n, seed=3)
        p_on, p_b = panel(t / "online.toml", srv.url_openai, None), panel(t / "batch.toml", srv.url_openai, batch)
        print(f"{args.n} candidates; verifier, then a gpt-4o-mini judge; stand-in batch delay {args.delay:.1f} s; "
              f"batches of at most {batch['max_items']}, window {batch['window_s']} s, poll every {batch['poll_s']} s")

        t0 = time.monotonic()
        online = finish(curate(data, p_on, t / "online"))
        wall_on, http = time.monotonic() - t0, srv.stats["requests"]
        t0 = time.monotonic()
        plain = finish(curate(data, p_b, t / "batch"))
        wall_b, n_b, paid_b = time.monotonic() - t0, len(srv.batches.all), answered(srv)
        undecided = online["teachers"]["judge"]["calls"]

        print("  killed batch run:")
        out = t / "killed"
        t0 = time.monotonic()
        kill_when(curate(data, p_b, out), lambda: len(srv.batches.all) >= n_b + 2, "2 batches are submitted")
        kill_when(curate(data, p_b, out), lambda: judged(out) >= undecided // 4, "a quarter of the verdicts are in")
        mark = len(srv.batches.all)
        kill_when(curate(data, p_b, out), lambda: judged(out) >= undecided // 2 or len(srv.batches.all) >= mark + 2,
                  "half the verdicts are in, or 2 more batches are submitted")
        killed = finish(curate(data, p_b, out))
        wall_k = time.monotonic() - t0
        paid_k = answered(srv, since=n_b)

        row("online", online, wall_on, http)
        row("batch", plain, wall_b, paid_b)
        row("batch, 3 x kill -9", killed, wall_k, paid_k)
        same = decisions(t / "online") == decisions(t / "batch") == decisions(out)
        print(f"  decisions identical (online, batch, killed batch): {same}; "
              f"{len(decisions(t / 'online'))} decided of {args.n}")
        print(f"  batch / online cost per accepted sample: {plain['cost_usd'] / online['cost_usd']:.3f}")
        print(f"  batch wall {wall_b:.1f} s = simulated delay {args.delay:.1f} s ({args.delay / wall_b:.0%}) + the "
              f"rest; online wall {wall_on:.1f} s")
        print(f"  batches: uninterrupted {n_b}, killed run {len(srv.batches.all) - n_b}; judge requests needed "
              f"{undecided}; verdicts paid twice across 3 kills: {paid_k - undecided}")
        print(f"  killed run summary: pending {killed['pending']}, failed {killed['failed']}, "
              f"cost ${killed['cost_usd']:.5f} (uninterrupted ${plain['cost_usd']:.5f})")


if __name__ == "__main__":
    main()
