"""The jury keeps counts of verdict patterns, not one row per candidate (issue 11, item 7): its memory
does not grow with the run, and its report is the same as when every candidate is kept by id."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import pytest

from tgrs_agents.curation import jury as jury_mod
from tgrs_agents.curation.jury import JuryLog

TEACHERS = ["a", "b", "c"]
POLICY = SimpleNamespace(reliability=None, name="majority", escalate=["c"], teachers=["a", "b", "c"], weights={})


def verdicts(n: int, seed: int = 0) -> list[list[tuple[str, bool | None]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        good = rng.random() < 0.6
        row = [(t, None if rng.random() < 0.02 else (good if rng.random() < 0.85 else not good)) for t in ("a", "b")]
        if rng.random() < 0.3:
            row.append(("c", good))
        out.append(row)
    return out


def journal(path: Path, rows: list[list[tuple[str, bool | None]]]) -> Path:
    with path.open("w") as f:
        for line, row in enumerate(rows, 1):
            for t, p in row:
                f.write(json.dumps({"id": f"c{line}", "line": line, "teacher": t, "passed": bool(p),
                                    "error": "boom" if p is None else None}) + "\n")
    return path


def test_a_large_run_keeps_counts_and_reports_what_keeping_every_row_reports(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rows = verdicts(9000)
    path = journal(tmp_path / "verdicts.jsonl", rows)
    reports = []
    for cap in (10**9, jury_mod.EXACT_UP_TO):  # every row by id, then counts past 4,096
        monkeypatch.setattr(jury_mod, "EXACT_UP_TO", cap)
        log = JuryLog(TEACHERS)
        for i, row in enumerate(rows, 1):
            log.observe(f"c{i}", row)
        assert log.candidates == 9000
        assert (log.rows is None) == (cap < 9000)
        log.follow(path)
        reports.append(log.report(POLICY))
    exact, counted = reports
    assert counted == exact
    assert exact["candidates"] == 9000 and exact["judge_errors"] > 0 and 0 < exact["escalated"] < 9000


def test_the_jury_memory_does_not_grow_with_the_candidates() -> None:
    rows = verdicts(30_000, seed=1)
    log = JuryLog(TEACHERS)
    for i, row in enumerate(rows[:5000]):
        log.observe(f"cand-{i:08d}", row)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, row in enumerate(rows[5000:], 5000):
        log.observe(f"cand-{i:08d}", row)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert log.candidates == 30_000
    assert grown < 50_000, f"{grown} bytes for 25,000 more candidates"  # one row each was ~440 bytes
