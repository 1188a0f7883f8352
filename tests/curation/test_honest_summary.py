"""What a run's summary and live display say about time and money (issue 11, item 7): wall time
adds up over the invocations of one directory, and the budget shown is the invocation's own, with
the run's total apart. A paid judge is a scripted adapter inside the real paid-call layer."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.panel_file import panel_from_dict
from tgrs_agents.curation.progress import Progress
from tgrs_agents.curation.run import CurateOptions, CurateRun
from tgrs_agents.events import EventBus
from tgrs_agents.paid.call import CacheIdentity, Paid
from tgrs_agents.paid.cost import Budget, Price
from tgrs_agents.paid.limits import EndpointLimits, FakeClock
from tgrs_agents.paid.services import Services
from tgrs_agents.types import Usage, Verdict

PRICE = Price(10.0, 0.0)  # $10 per million input tokens: 100 tokens cost $0.001
CALL = PRICE.cost(100, 0)


class Judge:
    """A paid judge (PaidJudge) that passes everything at a fixed price, after ``delay_s`` of real time."""

    name = "judge"
    endpoint_key = "http://judge#0"
    limits = EndpointLimits()
    price = PRICE
    cost_rank = 10
    config = None
    max_attempts = 1

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self.clock: FakeClock | None = None

    def estimate(self, request: Any) -> tuple[int, int]:
        return 100, 0

    def cache_identity(self) -> CacheIdentity | None:
        return None

    async def call(self, request: Any) -> Paid[Verdict]:
        self.calls += 1
        await asyncio.sleep(self.delay_s)
        if self.clock is not None:  # the server's own time, on the run's virtual clock
            await self.clock.sleep(0.05)
        used = Usage(requests=1, input_tokens=100)
        return Paid(Verdict(teacher="judge", passed=True, score=1.0), used)

    async def aclose(self) -> None:
        return None


def write_input(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"c{i}", "task_id": "t", "messages": [
        {"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}) + "\n"
        for i in range(n)))
    return path


def curate(tmp_path: Path, inp: Path, out: Path, *, budget: float | None = None, delay_s: float = 0.0,
           progress: Progress | None = None) -> tuple[dict[str, Any], Judge]:
    cfg = panel_from_dict({"policy": "unanimous", "teacher": [{"name": "judge", "kind": "final_answer"}]},
                          base_dir=tmp_path)
    svc = Services(budget=Budget(budget), clock=FakeClock())
    judge = Judge(delay_s)
    judge.clock = svc.clock if judge.limits.rpm else None
    panel = Panel([svc.wrap(judge)], cfg.build_policy())
    bus = EventBus()
    if progress is not None:
        bus.subscribe(progress)
    run = CurateRun(inp, cfg, out, options=CurateOptions(cache=False, max_in_flight=1, budget_usd=budget),
                    bus=bus, panel=panel, services=svc)
    return asyncio.run(run.run()), judge


def test_wall_time_adds_up_over_invocations_and_a_rerun_does_not_reset_it(tmp_path: Path) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 8), tmp_path / "run"
    s1, _ = curate(tmp_path, inp, out, delay_s=0.02)
    assert s1["wall_s"] >= 0.16 and s1["invocations_wall_s"] == [s1["wall_s_invocation"]]
    s2, judge = curate(tmp_path, inp, out)  # finished: nothing left to do, a quick invocation
    assert judge.calls == 0
    assert s2["invocations_wall_s"][0] == pytest.approx(s1["wall_s"], abs=1e-3)
    assert len(s2["invocations_wall_s"]) == 2 and s2["wall_s_invocation"] < s1["wall_s"]
    assert s2["wall_s"] == pytest.approx(s1["wall_s"] + s2["wall_s_invocation"], abs=2e-3)
    s3, _ = curate(tmp_path, inp, out)
    assert len(s3["invocations_wall_s"]) == 3 and s3["wall_s"] >= s2["wall_s"]
    assert json.loads((out / "summary.json").read_text())["wall_s"] == s3["wall_s"]


def test_the_budget_caps_the_runs_total_and_this_invocations_spend_is_shown_apart(tmp_path: Path) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 10), tmp_path / "run"
    s1, j1 = curate(tmp_path, inp, out, budget=4.5 * CALL)
    assert j1.calls == 4 and s1["stopped"] and s1["cost_usd"] == pytest.approx(4 * CALL)
    assert s1["cost_usd_invocation"] == pytest.approx(4 * CALL)
    # resumed with the same budget: the run already spent it, so nothing more is paid
    s2, j2 = curate(tmp_path, inp, out, budget=4.5 * CALL)
    assert j2.calls == 0 and s2["stopped"] and s2["cost_usd_invocation"] == 0
    # resumed with a larger one: it pays up to the new cap on the run's total, shown beside this invocation's
    shown = io.StringIO()
    progress = Progress(10, stream=shown, interval_s=0.0, live=False)
    with progress:
        s3, j3 = curate(tmp_path, inp, out, budget=7.5 * CALL, progress=progress)
    assert j3.calls == 3 and s3["stopped"]
    assert s3["cost_usd_invocation"] == pytest.approx(3 * CALL) and s3["budget_usd"] == pytest.approx(7.5 * CALL)
    assert s3["cost_usd"] == pytest.approx(7 * CALL)  # the run's total, every invocation
    assert s3["budget_used"] == pytest.approx(7 / 7.5, abs=1e-4)
    last = shown.getvalue().strip().splitlines()[-1]
    assert "cost $0.0070 of $0.0075 (93%) (this invocation $0.0030)" in last, last


def test_the_summary_splits_judge_time_and_names_the_users_rpm_as_the_bottleneck(tmp_path: Path) -> None:
    inp, out = write_input(tmp_path / "in.jsonl", 4), tmp_path / "run"
    Judge.limits = EndpointLimits(rpm=60)  # one request a second, on the run's virtual clock
    try:
        s, judge = curate(tmp_path, inp, out)
    finally:
        Judge.limits = EndpointLimits()
    assert judge.calls == 4
    timing = s["teachers"]["judge"]["timing"]
    assert timing["calls"] == 4 and timing["wait_share"] > 0.9  # the server answers at once; the limiter paces
    assert timing["service_s_p50_p90_p99"] == pytest.approx([0.05] * 3, rel=0.011)
    assert timing["wait_s_p50_p90_p99"][2] == pytest.approx(0.95, rel=0.011)
    lim = s["limits"]["judge"]
    assert lim["binding"] == "rpm" and lim["source"] == "config" and lim["configured_per_min"] == 60
    assert s["limit_notes"] == [lim["note"]] and lim["note"].startswith("teacher judge: ")
    assert "waiting on your rpm = 60 limit (teacher file; the provider has not stated its own)" in lim["note"]
    verdicts = [json.loads(x) for x in (out / "verdicts.jsonl").read_text().splitlines()]
    assert sorted(v["wait_s"] for v in verdicts) == pytest.approx([0.0, 0.95, 0.95, 0.95], abs=1e-6)
    assert [v["service_s"] for v in verdicts] == pytest.approx([0.05] * 4, abs=1e-6)
