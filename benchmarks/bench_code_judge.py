"""The code demo's judge stage on one round's candidates: with and without the verdict memo.

    python benchmarks/bench_code_judge.py runs/bench-demo-code/filtered/seed-0/round-2/candidates.jsonl
    python benchmarks/bench_code_judge.py CANDIDATES --torch     # with torch loaded, as in `tgrs demo`

Judges the file with the shipped code panel (``teachers/panel-code.toml``: ``compiles``, then
``code_tests`` in the sandbox) twice, in one process, each candidate through ``Panel.judge`` with up to
64 in flight: first with a memo that keeps nothing (every candidate that compiles starts a sandbox),
then with a fresh memo (each distinct content once: tgrs_agents.curation.memo). Prints, for each, the
sandbox processes started, the wall time and the candidates per second, and checks that every
decision is the same. ``--torch`` imports torch and transformers first: the loop's process holds
them, and a ``preexec_fn`` made every sandbox spawn copy that process (see sandbox._pdeathsig).
The memo's saving across rounds (a round's student repeats the last one's answers) is in
``bench_demo.py --tasks code``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


async def judge_all(panel: Any, cands: list[Any], in_flight: int = 64) -> list[tuple[Any, ...]]:
    gate = asyncio.Semaphore(in_flight)

    async def one(c: Any) -> tuple[Any, ...]:
        async with gate:
            d, _ = await panel.judge(c)
        return d.candidate_id, d.accepted, d.reason, tuple((v.teacher, v.passed) for v in d.verdicts)

    try:
        return list(await asyncio.gather(*(one(c) for c in cands)))
    finally:
        await panel.aclose()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("candidates", help="a code round's candidates.jsonl")
    ap.add_argument("--torch", action="store_true", help="import torch and transformers first (as the loop does)")
    a = ap.parse_args()
    if a.torch:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    from tgrs_agents.curation.memo import VerdictMemo
    from tgrs_agents.curation.panel import Panel
    from tgrs_agents.curation.panel_file import load_panel
    from tgrs_agents.teachers import code_tests
    from tgrs_agents.types import Candidate

    cands = [Candidate.model_validate(json.loads(line)) for line in Path(a.candidates).open()]
    cfg = load_panel(ROOT / "teachers" / "panel-code.toml")
    runs = [0]
    real = code_tests.run_python

    async def counted(*args: Any, **kw: Any) -> Any:
        runs[0] += 1
        return await real(*args, **kw)

    code_tests.run_python = counted  # type: ignore[assignment]
    out = {}
    for name, memo in (("every candidate", VerdictMemo(max_entries=0)), ("memo", VerdictMemo())):
        panel = Panel.from_config(cfg)
        panel.memo = memo
        runs[0] = 0
        t0 = time.perf_counter()
        out[name] = asyncio.run(judge_all(panel, cands))
        wall = time.perf_counter() - t0
        reached = panel.stats["tests"].calls
        print(f"{name:>15}: {len(cands)} candidates, {reached} reached code_tests, {runs[0]} sandbox runs "
              f"in {wall:.1f} s ({runs[0] / wall:.1f} runs/s, {len(cands) / wall:.1f} candidates/s), "
              f"memo hits {panel.memo_hits}", flush=True)
    same = out["every candidate"] == out["memo"]
    print(f"decisions identical: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
