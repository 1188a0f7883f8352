"""The live display of `tgrs curate`: a rich display on a terminal, one plain line per interval otherwise."""

from __future__ import annotations

import io
from pathlib import Path

from tgrs_agents.curation.progress import Progress
from tgrs_agents.events import CandidateDecided, RunFinished, RunStarted, VerdictReceived
from tgrs_agents.types import Decision, Usage, Verdict


def _feed(p: Progress, run_dir: Path) -> None:
    p(RunStarted(run_dir=str(run_dir), input="x", resumed=False, already_done=0, panel_fingerprint="f"))
    for i in range(4):
        v = Verdict(teacher="judge", passed=i % 2 == 0, score=1.0, usage=Usage(requests=2, cost_usd=0.25),
                    cached=i == 3)
        p(VerdictReceived(candidate_id=f"c{i}", verdict=v))
        p(CandidateDecided(line=i + 1, decision=Decision(candidate_id=f"c{i}", task_id="t", accepted=i % 2 == 0,
                                                         score=1.0, reason="r", saved=("other",))))
    p(RunFinished(summary={"budget_usd": 2.0, "rate_limited": 3}))


def test_progress_plain_lines(tmp_path: Path) -> None:
    out = io.StringIO()
    with Progress(4, stream=out, interval_s=0.0, live=False) as p:
        _feed(p, tmp_path)
    last = out.getvalue().strip().splitlines()[-1]
    assert last.startswith("[tgrs] 4/4 done")
    for part in ("accepted 50.0%", "cost $1.0000 of $2.00 (50%)", "cache hits 1", "retries 3", "429s 3"):
        assert part in last


def test_progress_rich_display(tmp_path: Path) -> None:
    out = io.StringIO()
    with Progress(4, stream=out, live=True) as p:
        _feed(p, tmp_path)
    text = out.getvalue()
    for part in ("read", "decided", "judge", "other", "4/4", "cost $1.0000 of $2.00", "429s 3"):
        assert part in text


