"""Batch judging under ``kill -9`` and with few workers: the run parks candidates instead of holding a worker,
flushes a batch that never fills by its window, and a killed run resumed by the same command polls the same
batches, pays for nothing twice and decides as an uninterrupted run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from batch_cascade_kit import OA_ENV, OA_KEY, answered, brain, decisions, verdicts, write_panel
from test_batch_cascade import expected, run

from tgrs_agents.paid.retry import RetryPolicy
from tgrs_agents.paid.services import Services
from tgrs_agents.tasks.arithmetic_data import write_synthetic
from tgrs_agents.teachers.base import BuildContext
from tgrs_agents.teachers.batch_judge import BatchJudge
from tgrs_agents.teachers.openai_judge import OpenAIJudge, OpenAIJudgeConfig
from tgrs_agents.testing.standin import FaultPlan, StandIn
from tgrs_agents.types import Candidate

pytest.importorskip("openai")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv(OA_ENV, OA_KEY)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "in.jsonl", 60, seed=7)


def test_parked_candidates_free_the_workers(data, tmp_path):
    """Two workers, batches of 16 that only fill (the window is an hour): they fill only because a candidate
    waiting for its batch verdict does not hold a worker. Holding one would wait out the hour."""
    _, undecided = expected(data)
    with StandIn(FaultPlan(batch_delay_s=0.05), brain=brain) as srv:
        panel = write_panel(tmp_path / "b.toml", srv, "openai", "batch", max_items=16, window_s=3600, poll_s=0.02,
                            max_parked=16)
        s, _ = run(data, panel, tmp_path / "out", max_in_flight=2)
        sizes = [len(b.items) for b in srv.batches.all.values()]
    assert sizes[:2] == [16, 16] and sum(sizes) == len(undecided)  # the rest goes when the input ends
    assert s["pending"] == 0 and len(decisions(tmp_path / "out")) == 60


class ManualClock:
    """Wall time that moves only when the test says; ``sleep`` waits for it."""

    def __init__(self) -> None:
        self.t = 1_750_000_000.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.t + s, fut))
        await fut

    async def advance(self, s: float) -> None:
        self.t += s
        for due, fut in list(self.sleepers):
            if due <= self.t and not fut.done():
                fut.set_result(None)
        self.sleepers = [x for x in self.sleepers if not x[1].done()]
        for _ in range(50):  # let whatever woke run up to its next wait (HTTP to the stand-in included)
            await asyncio.sleep(0.005)


def test_a_batch_that_never_fills_goes_by_its_window(tmp_path):
    with StandIn(FaultPlan(batch_delay_s=10), brain=brain) as srv:
        clock = ManualClock()
        srv.batches.clock = clock
        cfg = OpenAIJudgeConfig(name="judge", model="gpt-4o-mini", base_url=srv.url_openai, api_key_env=OA_ENV,
                                mode="batch", batch={"max_items": 100, "window_s": 60, "poll_s": 5})
        services = Services(retry=RetryPolicy(initial_s=0.0, jitter_s=0.0))
        judge = BatchJudge(OpenAIJudge(cfg, BuildContext(tmp_path)), services, clock=clock, sleep=clock.sleep)
        judge.open(tmp_path / "run")
        cands = [Candidate(id=f"c{i}", task_id="t", reference="4", messages=[
            {"role": "user", "content": f"2+2? (asked {i % 3} times)"},
            {"role": "assistant", "content": f"Answer: {4 + i % 2}"}]) for i in range(3)]
        cands.append(cands[0].model_copy(update={"id": "c0-again"}))  # the same content: asked once

        async def go():
            runner = asyncio.create_task(judge.run())
            asks = [asyncio.create_task(judge.judge(c)) for c in cands]
            await clock.advance(0)  # they are buffered at t0
            await clock.advance(59)
            early = srv.stats["batches"]
            reserved = services.budget.reserved_usd
            await clock.advance(1)  # the window: three requests, far from max_items, go now
            for _ in range(500):
                if srv.stats["batches"]:
                    break
                await asyncio.sleep(0.01)
            sent = srv.stats["batches"], srv.stats["batch_items"]
            while not all(a.done() for a in asks):
                await clock.advance(5)
            judge.close()
            await runner
            await judge.aclose()
            return early, reserved, sent, [a.result() for a in asks]

        early, reserved, sent, got = asyncio.run(go())
    assert early == 0 and reserved > 0 and sent == (1, 3)
    assert [v.passed for v in got] == [True, False, True, True] and all(v.usage.cost_usd > 0 for v in got[:3])
    assert got[3].cached and got[3].usage.cost_usd == 0  # the follower paid nothing
    assert services.budget.reserved_usd == pytest.approx(0, abs=1e-12)
    assert services.budget.spent_usd == pytest.approx(sum(v.usage.cost_usd for v in got))


def _curate(data: Path, panel: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tgrs_agents", "curate", str(data), "--panel", str(panel),
                             "--out", str(out), "--quiet", "--json", "--no-cache", "--max-in-flight", "8"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run never got there"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_kill_9_mid_batch_then_resume_pays_nothing_twice(data, tmp_path):
    """Killed while batches run, then while answers are being handed on; no ledger (``--no-cache``): the batch
    journal and its answers file alone keep every verdict paid once."""
    want, undecided = expected(data)
    out = tmp_path / "out"
    with StandIn(FaultPlan(batch_delay_s=1.0), brain=brain) as srv:
        panel = write_panel(tmp_path / "b.toml", srv, "openai", "batch", max_items=8, window_s=0.05, poll_s=0.05)
        _kill_when(_curate(data, panel, out), lambda: srv.stats["batches"] >= 2)  # submitted, still running
        first = srv.stats["batch_items"]
        judge_verdicts = lambda: sum(v["teacher"] == "judge" for v in verdicts(out))  # noqa: E731
        _kill_when(_curate(data, panel, out), lambda: judge_verdicts() >= 3)  # mid hand-on
        proc = _curate(data, panel, out)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr[-2000:]
        summary = json.loads(stdout)
    assert first >= 8 and summary["pending"] == 0 and summary["failed"] == 0
    assert decisions(out) == want
    assert answered(srv) == len(undecided)  # every undecided candidate paid exactly once, across three runs
    paid = [v for v in verdicts(out) if v["teacher"] == "judge" and v["error"] is None]
    assert sorted(v["id"] for v in paid) == sorted(undecided)  # journaled once each
    assert summary["cost_usd"] == pytest.approx(sum(v["cost_usd"] for v in paid), abs=1e-6)


def test_a_batch_judge_without_a_run_directory_asks_online(tmp_path):
    """Calibration and the loop's panels have no run directory to journal batches in: the judge asks online."""
    with StandIn(brain=brain) as srv:
        cfg = OpenAIJudgeConfig(name="judge", model="gpt-4o-mini", base_url=srv.url_openai, api_key_env=OA_ENV,
                                mode="batch")
        judge = BatchJudge(OpenAIJudge(cfg, BuildContext(tmp_path)), Services())
        cand = Candidate(id="c", task_id="t", reference="4", messages=[
            {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "Answer: 4"}])

        async def go():
            try:
                return await judge.judge(cand)
            finally:
                await judge.aclose()

        v = asyncio.run(go())
        assert v.passed and srv.stats["requests"] == 1 and srv.stats["batch_requests"] == 0
