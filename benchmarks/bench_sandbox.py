"""Sandbox overhead: wall time of one ``code_tests`` verdict for a trivial passing solution.

Each call starts a fresh sandbox (namespaces, uid, rlimits and, where it works, the private mount
namespace), runs the harness with the candidate and its tests, and tears everything down. The
figure is what a run pays per candidate on top of the tests themselves. Calls run one at a time.

    python benchmarks/bench_sandbox.py            # 50 calls
    python benchmarks/bench_sandbox.py -n 200     # more calls
    python benchmarks/bench_sandbox.py --json     # the figures as JSON on stdout
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time

from tgrs_agents.teachers import sandbox
from tgrs_agents.teachers.code_tests import CodeTestsConfig, CodeTestsTeacher
from tgrs_agents.types import Candidate, Message

ANSWER = "```python\ndef add(a, b):\n    return a + b\n```"
TESTS = "assert add(2, 2) == 4\nassert add(-1, 1) == 0\n"


def children_cpu_s() -> float:
    """CPU time of every waited-for descendant (the sandbox's processes included): less noisy
    than wall time on a machine others are using."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


async def timings(n: int, strict: bool) -> tuple[list[float], list[float], str]:
    extra = {"strict_types": True} if strict else {}
    teacher = CodeTestsTeacher(CodeTestsConfig(name="bench", **extra))  # type: ignore[arg-type]
    cand = Candidate(id="c", messages=[Message(role="assistant", content=ANSWER)], tests=TESTS)
    assert (await teacher.judge(cand)).passed  # warm-up: the mode probe runs here
    wall, cpu = [], []
    for _ in range(n):
        start, cpu0 = time.perf_counter(), children_cpu_s()
        v = await teacher.judge(cand)
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((children_cpu_s() - cpu0) * 1000)
        assert v.passed, v.rationale
    level = getattr(sandbox, "isolation_level", None)
    return wall, cpu, level() if callable(level) else "+".join(next(iter(sandbox._chosen.values()), ()))


def p90(xs: list[float]) -> float:
    return sorted(xs)[max(0, int(len(xs) * 0.9) - 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("--strict-types", action="store_true", help="with strict_types = true (new code only)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    wall, cpu, level = asyncio.run(timings(args.n, args.strict_types))
    fig = {
        "calls": args.n,
        "isolation": level,
        "mean_ms": round(statistics.fmean(wall), 1),
        "sem_ms": round(statistics.stdev(wall) / len(wall) ** 0.5, 1),
        "p50_ms": round(statistics.median(wall), 1),
        "p90_ms": round(p90(wall), 1),
        "cpu_mean_ms": round(statistics.fmean(cpu), 1),
        "cpu_p90_ms": round(p90(cpu), 1),
    }
    if args.json:
        print(json.dumps(fig))
    else:
        print(f"{fig['calls']} calls [{level}]: wall mean {fig['mean_ms']} ± {fig['sem_ms']} ms, "
              f"p50 {fig['p50_ms']} ms, p90 {fig['p90_ms']} ms; "
              f"sandbox CPU mean {fig['cpu_mean_ms']} ms, p90 {fig['cpu_p90_ms']} ms")


if __name__ == "__main__":
    main()
