"""Our API client (limiter + one retry layer) against a naive one, on the same loopback stand-in.

The stand-in runs in its own process (``python -m tgrs_agents.testing.standin``) with lognormal
latency (mean 300 ms) and 2% 5xx, and enforces a request rate (429 with retry-after past it).

* **ours**: the ``OpenAIJudge`` adapter wrapped by ``Services`` (RateLimited, Costed, Retrying; the
  ledger only in (c)), limiter ``rpm`` set to the server's rate, the SDK's retries off, called the
  way ``tgrs curate`` calls it: through a ``Panel``. Defaults only: no ``max_concurrency`` (the
  judge's default is a ceiling; the limiter keeps calls in flight at rate x latency below it) and no
  ``burst_s`` (the limiter learns the server's bank from its rate-limit headers).
* **naive**: ``AsyncOpenAI`` with the SDK's default retries (``max_retries=2``) behind an
  ``asyncio.Semaphore(64)``, sending the same request.

Scenarios (each call judges a distinct synthetic trajectory, so no cache can hide a call):

(a) rate-bound: 1,500 calls, server at 3,000 requests/min (ideal = calls / rate = 30 s).
(b) client-bound: 3,000 calls at 12,000 requests/min (ideal 15 s); client CPU per 1,000 calls. The
    two clients alternate ``--repeat`` times (ours, naive, naive, ours, ...); medians are compared.
(c) the workload of (a) twice with a fresh verdict ledger: the second pass makes no HTTP request.
(d) per-minute allowance: 1,500 calls against a server granting 3,000 requests *per minute* that may
    all burst (a bucket holding a minute; ideal at the rate 30 s, the run is shorter than a minute).
    Each client gets a fresh server (a minute's bank does not refill between runs).

Reported: wall / ideal, HTTP requests the server saw, 429s received (and as a share of the HTTP
requests), calls lost (ended in an exception), client CPU per call (``time.process_time`` of this
process, milliseconds)::

    python benchmarks/bench_api_limits.py            # the full run (about 4 minutes)
    python benchmarks/bench_api_limits.py --scale 0.2  # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.policy import make_policy
from tgrs_agents.paid.ledger import Ledger
from tgrs_agents.paid.services import Services
from tgrs_agents.tasks.arithmetic_data import synthetic_lines
from tgrs_agents.teachers.base import BuildContext
from tgrs_agents.teachers.llm_judge import VERDICT_SCHEMA
from tgrs_agents.teachers.openai_judge import OpenAIJudge, OpenAIJudgeConfig
from tgrs_agents.types import Candidate

KEY_ENV = "TGRS_BENCH_API_KEY"
os.environ.setdefault(KEY_ENV, "sk-test-bench-not-a-real-key")
MODEL = "gpt-4o-mini"


# --- the server -------------------------------------------------------------------------------------
class Server:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tgrs_agents.testing.standin", "--port", "0", "--plan", json.dumps(plan)],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.proc.kill()
            raise RuntimeError(f"stand-in did not start: {line!r}")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as r:
            return dict(json.load(r))

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the clients ------------------------------------------------------------------------------------
@dataclass
class Result:
    scenario: str
    client: str
    calls: int
    rate_per_min: float
    wall_s: float = 0.0
    cpu_s: float = 0.0
    lost: int = 0
    server: dict[str, int] = field(default_factory=dict)  # the server's counters, this run only
    note: str = ""

    @property
    def ideal_s(self) -> float:
        return self.calls / (self.rate_per_min / 60)

    @property
    def ratio(self) -> float:
        return self.wall_s / self.ideal_s

    def row(self) -> list[str]:
        s = self.server
        return [self.scenario, self.client, str(self.calls), f"{self.wall_s:.2f}", f"{self.ideal_s:.1f}",
                f"{self.ratio:.3f}", str(s.get("requests", 0)), str(s.get("429", 0)),
                f"{100 * self.share_429:.2f}%", str(s.get("500", 0)), str(self.lost),
                f"{1000 * self.cpu_s / self.calls:.2f}", self.note]

    @property
    def share_429(self) -> float:
        return self.server.get("429", 0) / max(self.server.get("requests", 0), 1)


HEAD = ["scenario", "client", "calls", "wall s", "ideal s", "wall/ideal", "HTTP req", "429s", "429/req",
        "5xx", "lost", "CPU ms/call", "note"]


def candidates(n: int, seed: int) -> list[Candidate]:
    return [Candidate.model_validate_json(line) for line in synthetic_lines(n, seed=seed, per_task=1)]


def judge_teacher(url: str, rpm: float, max_concurrency: int | None) -> OpenAIJudge:
    tuned = {} if max_concurrency is None else {"max_concurrency": max_concurrency}
    cfg = OpenAIJudgeConfig(name="judge", model=MODEL, base_url=url, api_key_env=KEY_ENV, rpm=rpm,
                            max_tokens=64, timeout_s=60, **tuned)
    return OpenAIJudge(cfg, BuildContext(base_dir=Path.cwd()))


async def _ours(url: str, cands: list[Candidate], rpm: float, max_concurrency: int | None,
                ledger: Ledger | None) -> tuple[float, int, Services]:
    """The product's path: a one-judge Panel (its per-teacher ``max_concurrency`` semaphore, error
    verdicts) over the teacher as ``Services`` wraps it."""
    services = Services(ledger=ledger)
    teacher = services.wrap(judge_teacher(url, rpm, max_concurrency))
    panel = Panel([teacher], make_policy("unanimous", [teacher.name]))
    lost = 0

    async def one(c: Candidate) -> None:
        nonlocal lost
        decision, _ = await panel.judge(c)
        lost += any(v.error is not None for v in decision.verdicts)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c in cands))
    wall = time.perf_counter() - t0
    await panel.aclose()
    return wall, lost, services


async def _naive(url: str, cands: list[Candidate], render: Any, concurrency: int) -> tuple[float, int]:
    sem = asyncio.Semaphore(concurrency)
    lost = 0
    async with openai.AsyncOpenAI(api_key=os.environ[KEY_ENV], base_url=url, max_retries=2,
                                  timeout=60) as client:

        async def one(c: Candidate) -> None:
            nonlocal lost
            async with sem:
                try:
                    prompt = render(c)
                    resp = await client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": prompt}], temperature=0.0,
                        max_tokens=64, response_format={"type": "json_schema", "json_schema": {
                            "name": "verdict", "strict": True, "schema": VERDICT_SCHEMA}})
                    json.loads(resp.choices[0].message.content or "")
                except (openai.OpenAIError, ValueError):
                    lost += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one(c) for c in cands))
        return time.perf_counter() - t0, lost


def measure(res: Result, server: Server, fn: Any) -> Any:
    before = server.stats()
    cpu0 = time.process_time()
    out = fn()
    res.cpu_s = time.process_time() - cpu0
    after = server.stats()
    res.server = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return out


def limiter_note(lim: Any) -> str:
    """What the limiter ended with (calls in flight, latency and bank only where it has them)."""
    out = f"waited {lim.stats.waited_s / max(lim.stats.acquired, 1):.2f}s/call, factor {lim.factor:.2f}"
    slots = getattr(lim, "slots", None)
    if slots is not None:
        lat = f"{1000 * slots.latency_s:.0f} ms" if slots.latency_s is not None else "-"
        out += f", in flight <= {slots.target} (latency {lat}, loop lag {1000 * slots.lag_s:.0f} ms)"
    bank = getattr(lim.stats, "bank_s", {}).get("requests")
    if bank is not None:
        out += f", bank {bank:.0f} s (lifted {lim.stats.lifted:.0f})"
    return out


def run_ours(scenario: str, server: Server, cands: list[Candidate], rpm: float, max_concurrency: int | None,
             ledger: Ledger | None = None, note: str = "") -> Result:
    res = Result(scenario, "ours", len(cands), rpm, note=note)
    res.wall_s, res.lost, services = measure(
        res, server, lambda: asyncio.run(_ours(server.url, cands, rpm, max_concurrency, ledger)))
    (lim,) = services.limiters.all().values()
    res.note = "; ".join(x for x in (note, limiter_note(lim)) if x)
    return res


def run_naive(scenario: str, server: Server, cands: list[Candidate], rpm: float, concurrency: int = 64) -> Result:
    render = judge_teacher(server.url, rpm, 1).prompt_for  # the same prompt, rendered in the run
    res = Result(scenario, "naive", len(cands), rpm, note=f"Semaphore({concurrency}), SDK max_retries=2")
    res.wall_s, res.lost = measure(res, server, lambda: asyncio.run(_naive(server.url, cands, render, concurrency)))
    return res


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        cells = zip(r, widths, strict=True)
        lines.append("  ".join(c.ljust(w) if i in (0, 1, 12) else c.rjust(w) for i, (c, w) in enumerate(cells)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every call count (quick looks)")
    ap.add_argument("--latency", type=float, default=0.3, help="mean server latency, seconds")
    ap.add_argument("--p5xx", type=float, default=0.02)
    ap.add_argument("--concurrency", type=int, default=None,
                    help="our judge's max_concurrency (default: none set, the judge's default)")
    ap.add_argument("--only", default="abcd", help="scenarios to run, e.g. 'ab'")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each client in (b), alternating")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    n_a, n_b = max(10, round(1500 * args.scale)), max(10, round(3000 * args.scale))
    base = {"latency_mean_s": args.latency, "p_5xx": args.p5xx}
    results: list[Result] = []
    checks: list[tuple[str, bool]] = []
    summary_b = ""
    settle = 1.5  # let the server's bucket refill between runs

    if "a" in args.only:
        with Server({**base, "rpm": 3000, "seed": 1}) as srv:
            cands = candidates(n_a, seed=1)
            ours = run_ours("(a) rate-bound", srv, cands, 3000, args.concurrency)
            time.sleep(settle)
            naive = run_naive("(a) rate-bound", srv, cands, 3000)
        results += [ours, naive]
        checks += [("(a) ours wall/ideal <= 1.03", ours.ratio <= 1.03),
                   ("(a) ours loses no call", ours.lost == 0),
                   ("(a) ours 429s <= 1% of requests", ours.share_429 <= 0.01)]
    if "b" in args.only:
        # client-bound timings move with whatever else the machine runs: alternate the two clients
        # (ours, naive, naive, ours, ...) and compare medians
        with Server({**base, "rpm": 12000, "seed": 2}) as srv:
            cands = candidates(n_b, seed=2)
            runs: dict[str, list[Result]] = {"ours": [], "naive": []}
            for i in range(args.repeat):
                order = ("ours", "naive") if i % 2 == 0 else ("naive", "ours")
                for who in order:
                    time.sleep(settle)
                    if who == "ours":
                        runs[who].append(run_ours("(b) client-bound", srv, cands, 12000, args.concurrency))
                    else:
                        runs[who].append(run_naive("(b) client-bound", srv, cands, 12000))
        for who in ("ours", "naive"):
            for i, r in enumerate(runs[who]):
                r.note = f"run {i + 1}/{args.repeat}; " + r.note
            results += runs[who]
        med = {who: statistics.median(r.ratio for r in rs) for who, rs in runs.items()}
        cpu = {who: statistics.median(1000 * r.cpu_s / r.calls for r in rs) for who, rs in runs.items()}
        summary_b = (f"(b) median wall/ideal: ours {med['ours']:.3f}, naive {med['naive']:.3f}; median client "
                     f"CPU ms per call: ours {cpu['ours']:.2f}, naive {cpu['naive']:.2f}")
        checks += [("(b) ours median wall/ideal <= 1.05", med["ours"] <= 1.05),
                   ("(b) ours median wall/ideal <= naive's", med["ours"] <= med["naive"]),
                   ("(b) ours loses no call", all(r.lost == 0 for r in runs["ours"])),
                   ("(b) ours 429s <= 1% of requests", all(r.share_429 <= 0.01 for r in runs["ours"]))]
    if "c" in args.only:
        with tempfile.TemporaryDirectory() as tmp, Server({**base, "rpm": 3000, "seed": 3}) as srv:
            ledger = Ledger(Path(tmp) / "ledger.sqlite")
            cands = candidates(n_a, seed=3)
            first = run_ours("(c) ledger", srv, cands, 3000, args.concurrency, ledger, note="pass 1")
            second = run_ours("(c) ledger", srv, cands, 3000, args.concurrency, ledger, note="pass 2")
            hits = ledger.hits
            ledger.close()
        results += [first, second]
        checks += [("(c) pass 2 makes no HTTP request", second.server.get("requests", 0) == 0),
                   ("(c) pass 2 answers every call from the ledger", hits >= second.calls)]
    if "d" in args.only:
        minute = {**base, "rpm": 3000, "burst_s": 60}  # a bucket holding a minute: 3,000 may burst
        cands = candidates(n_a, seed=4)
        with Server({**minute, "seed": 4}) as srv:
            ours = run_ours("(d) per-minute", srv, cands, 3000, args.concurrency)
        with Server({**minute, "seed": 5}) as srv:
            naive = run_naive("(d) per-minute", srv, cands, 3000)
        results += [ours, naive]
        checks += [("(d) ours wall/ideal <= 0.5 (a run shorter than a minute)", ours.ratio <= 0.5),
                   ("(d) ours loses no call", ours.lost == 0),
                   ("(d) ours 429s <= 1% of requests", ours.share_429 <= 0.01)]

    print(f"stand-in: latency lognormal mean {args.latency * 1000:.0f} ms, {args.p5xx:.0%} 5xx, rate enforced "
          f"by the server (429 + retry-after); python {sys.version.split()[0]}, openai {openai.__version__}")
    print("ours: " + ("defaults only (no max_concurrency, no burst_s)" if args.concurrency is None
                      else f"max_concurrency={args.concurrency}"))
    print(table([HEAD] + [r.row() for r in results]))
    print()
    if summary_b:
        print(summary_b)
    mine = [r for r in results if r.client == "ours" and r.server.get("requests", 0)]
    if mine:
        by = {r.scenario: r.ratio for r in mine if not r.scenario.startswith("(b)")}
        req, r429 = sum(r.server.get("requests", 0) for r in mine), sum(r.server.get("429", 0) for r in mine)
        print("ours: " + ", ".join(f"{k} wall/ideal {v:.3f}" for k, v in by.items())
              + f"; 429s {r429} of {req} requests ({100 * r429 / req:.2f}%); client CPU "
              f"{1000 * sum(r.cpu_s for r in mine) / sum(r.calls for r in mine):.2f} ms per call")
    for name, ok in checks:
        print(f"  [{'ok' if ok else 'MISS'}] {name}")
    if args.json:
        Path(args.json).write_text(json.dumps([{**vars(r), "ideal_s": r.ideal_s, "ratio": r.ratio}
                                               for r in results], indent=2))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
