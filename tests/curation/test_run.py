"""The async curation run (``CurateRun``): reader -> judge workers -> recorder over bounded queues.

Scripted teachers are injected as the run's panel, so every expected outcome is known and the
run is observed only through its public face: the event bus, ``counts`` and the run directory.
Covered here: the reader stops reading when the judges fall behind; results do not depend on the
order in which calls come back; a cancelled run resumes without paying any verdict twice; and the
summary says exactly what the files hold.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.panel_file import PanelConfig, panel_from_dict
from tgrs_agents.curation.policy import make_policy
from tgrs_agents.curation.run import CurateOptions, CurateRun
from tgrs_agents.errors import ConfigError, TeacherError
from tgrs_agents.events import CandidateLoaded, Event, EventBus
from tgrs_agents.teachers.base import Teacher, TeacherConfig
from tgrs_agents.types import Candidate, Decision, Verdict

Outcome = tuple[bool, float] | None  # None: TeacherError


def rule_a(i: int) -> Outcome:
    return None if i % 11 == 5 else (i % 3 != 0, 0.25 + (i % 7) / 10)


def rule_b(i: int) -> Outcome:
    return (i % 4 != 1, (i % 5) / 5)


class Scripted(Teacher):
    """An I/O teacher whose verdict is a function of the candidate's number.

    ``delay`` picks a sleep per candidate (to scramble completion order); ``gate`` holds every call
    until it opens; calls after the first ``block_after`` never return. ``done`` logs completed
    calls: only a completed call is a paid one.
    """

    def __init__(self, name: str, rank: int, rule: Callable[[int], Outcome], *,
                 delay: Callable[[int], float] | None = None, gate: asyncio.Event | None = None,
                 block_after: int | None = None) -> None:
        super().__init__(TeacherConfig(name=name, kind="final_answer", cost_rank=rank))
        self.rule, self.delay, self.gate, self.block_after = rule, delay, gate, block_after
        self.started = 0
        self.in_flight = 0
        self.done: list[str] = []

    async def judge(self, candidate: Candidate) -> Verdict:
        i = int(candidate.id[1:])
        self.started += 1
        self.in_flight += 1
        try:
            if self.block_after is not None and self.started > self.block_after:
                await asyncio.Event().wait()  # never answers (cancelled with the run)
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(self.delay(i) if self.delay else 0)
        finally:
            self.in_flight -= 1
        self.done.append(candidate.id)
        out = self.rule(i)
        if out is None:
            raise TeacherError("scripted failure", teacher=self.name)
        return Verdict(teacher=self.name, passed=out[0], score=out[1])


def panel_config(tmp_path: Path) -> PanelConfig:
    doc = {"policy": "unanimous", "teacher": [{"name": "a", "kind": "final_answer", "cost_rank": 0},
                                              {"name": "b", "kind": "final_answer", "cost_rank": 1}]}
    return panel_from_dict(doc, base_dir=tmp_path)


def record(i: int) -> str:
    return json.dumps({"id": f"c{i}", "task_id": f"t{i % 5}",
                       "messages": [{"role": "user", "content": f"q{i}"},
                                    {"role": "assistant", "content": f"Answer: {i}"}]})


def write_input(path: Path, n: int, extra: list[str] | None = None) -> Path:
    path.write_text("\n".join([record(i) for i in range(n)] + (extra or [])) + "\n")
    return path


def reference(n: int) -> dict[str, Decision]:
    """Each candidate judged one after the other by a fresh panel: what any run must decide."""
    panel = Panel([Scripted("a", 0, rule_a), Scripted("b", 1, rule_b)], make_policy("unanimous", ["a", "b"]))

    async def go() -> dict[str, Decision]:
        out = {}
        for i in range(n):
            c = Candidate.model_validate_json(record(i))
            out[c.id] = (await panel.judge(c))[0]
        return out

    return asyncio.run(go())


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def outcomes(out: Path) -> dict[str, tuple[Any, ...]]:
    """id -> (accepted, score, reason, decided_by, saved), from the files alone."""
    got: dict[str, tuple[Any, ...]] = {}
    for name, accepted in (("accepted", True), ("rejected", False)):
        for r in jsonl(out / f"{name}.jsonl"):
            assert r["id"] not in got
            got[r["id"]] = (accepted, r["score"], r["reason"], r["decided_by"], tuple(r["saved"]))
    for e in jsonl(out / "events.jsonl"):
        if e["type"] == "failed":
            got[e["candidate_id"]] = (None, None, e["reason"], e["decided_by"], tuple(e["saved"]))
    return got


def expected(ref: dict[str, Decision]) -> dict[str, tuple[Any, ...]]:
    return {cid: (d.accepted, None if d.accepted is None else round(d.score, 6), d.reason, d.decided_by,
                  d.saved) for cid, d in ref.items()}


def make_run(tmp_path: Path, inp: Path, out: Path, teachers: list[Scripted], *, bus: EventBus | None = None,
             **opts: Any) -> CurateRun:
    cfg = panel_config(tmp_path)
    options = CurateOptions(cache=False, **opts)
    return CurateRun(inp, cfg, out, options=options, bus=bus, panel=Panel(teachers, cfg.build_policy()))


async def wait_until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.002)


# --- bounded queues ------------------------------------------------------------------------------
def test_a_slow_teacher_stops_the_reader_instead_of_filling_memory(tmp_path: Path) -> None:
    n, width = 3000, 4
    inp = write_input(tmp_path / "in.jsonl", n)
    loaded: list[int] = []
    bus = EventBus()
    bus.subscribe(lambda ev: loaded.append(ev.line) if isinstance(ev, CandidateLoaded) else None)

    async def go() -> tuple[dict[str, Any], dict[str, int]]:
        gate = asyncio.Event()
        a = Scripted("a", 0, rule_a, gate=gate)
        run = make_run(tmp_path, inp, tmp_path / "run", [a, Scripted("b", 1, rule_b)], bus=bus,
                       max_in_flight=width)
        job = asyncio.create_task(run.run())
        await wait_until(lambda: a.in_flight == width, "the judges to fill up")
        await asyncio.sleep(0.1)  # let the reader run as far as it can
        stuck = {"in_flight": a.in_flight, "started": a.started, "loaded": len(loaded),
                 "lines_read": run.counts["input_lines"]}
        gate.set()
        return await job, stuck

    summary, stuck = asyncio.run(go())
    assert stuck["in_flight"] == stuck["started"] == width  # never more calls than max_in_flight
    # in the judges' hands, waiting in the queue, and one the reader holds: nothing more is loaded
    assert width <= stuck["loaded"] <= 2 * width + 1
    assert stuck["lines_read"] <= 512 < n  # one chunk of the file, not the file
    assert len(loaded) == n and summary["pending"] == summary["failed"]
    assert summary["accepted"] + summary["rejected"] + summary["failed"] == n


# --- order independence ----------------------------------------------------------------------------
def test_results_equal_a_sequential_reference_whatever_order_calls_come_back_in(tmp_path: Path) -> None:
    n = 80
    inp = write_input(tmp_path / "in.jsonl", n)

    def slow_evens(i: int) -> float:
        return 0.01 if i % 2 == 0 else 0.0

    out = tmp_path / "run"
    teachers = [Scripted("a", 0, rule_a, delay=slow_evens), Scripted("b", 1, rule_b, delay=slow_evens)]
    summary = asyncio.run(make_run(tmp_path, inp, out, teachers, max_in_flight=16).run())

    written = [r["line"] for name in ("accepted", "rejected") for r in jsonl(out / f"{name}.jsonl")]
    assert written != sorted(written)  # the calls did come back out of order
    ref = reference(n)
    assert outcomes(out) == expected(ref)
    assert summary["accepted"] == sum(d.accepted is True for d in ref.values())
    assert summary["failed"] == sum(d.accepted is None for d in ref.values()) > 0
    # each verdict line belongs to the candidate on that line
    for v in jsonl(out / "verdicts.jsonl"):
        assert v["id"] == f"c{v['line'] - 1}"


# --- cancellation ------------------------------------------------------------------------------------
def test_a_cancelled_run_resumes_to_the_same_result_without_paying_twice(tmp_path: Path) -> None:
    n, width = 60, 4
    inp = write_input(tmp_path / "in.jsonl", n)
    out = tmp_path / "run"
    events: list[Event] = []

    first_a = Scripted("a", 0, rule_a)
    first_b = Scripted("b", 1, rule_b, block_after=12)

    async def interrupted() -> CurateRun:
        bus = EventBus()
        bus.subscribe(events.append)
        run = make_run(tmp_path, inp, out, [first_a, first_b], bus=bus, max_in_flight=width,
                       commit_interval_s=0.0)
        job = asyncio.create_task(run.run())
        await wait_until(lambda: len(first_b.done) == 12 and first_b.in_flight == width, "b to hang")
        await asyncio.sleep(0.05)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job
        return run

    run1 = asyncio.run(interrupted())
    s1 = json.loads((out / "summary.json").read_text())
    assert run1.stopped == "interrupted" and s1["stopped"] == "interrupted"
    assert jsonl(out / "events.jsonl")[-1]["type"] == "run_stopped"
    decided_1 = s1["accepted"] + s1["rejected"]
    assert 0 < decided_1 < n and s1["pending"] > 0
    assert decided_1 == len(jsonl(out / "accepted.jsonl")) + len(jsonl(out / "rejected.jsonl"))
    hanging = {e.candidate_id for e in events if isinstance(e, CandidateLoaded)} - set(outcomes(out))
    assert hanging  # candidates whose a-verdict is journaled but whose decision never came

    second_a, second_b = Scripted("a", 0, rule_a), Scripted("b", 1, rule_b)
    started: list[Event] = []
    bus2 = EventBus()
    bus2.subscribe(started.append)
    s2 = asyncio.run(make_run(tmp_path, inp, out, [second_a, second_b], bus=bus2, max_in_flight=width).run())

    assert started[0].to_json()["resumed"] is True and started[0].to_json()["already_done"] == decided_1
    assert s2["stopped"] is None and s2["pending"] == s2["failed"]
    assert outcomes(out) == expected(reference(n))
    for name, first, second in (("a", first_a, second_a), ("b", first_b, second_b)):
        paid = Counter(first.done) + Counter(second.done)
        ok = [c for c in paid if rule_a(int(c[1:])) is not None] if name == "a" else list(paid)
        assert all(paid[c] == 1 for c in ok), f"{name} was paid twice for a candidate"
    verdicts = jsonl(out / "verdicts.jsonl")
    pairs = Counter((v["id"], v["teacher"]) for v in verdicts if v["error"] is None)
    assert max(pairs.values()) == 1
    # the resumed summary counts both sessions: every verdict line, every decision line
    assert s2["calls"] == len(verdicts) and s2["accepted"] == len(jsonl(out / "accepted.jsonl"))
    assert s2["teachers"]["a"]["reused_from_journal"] > 0  # the hanging candidates' verdicts were reused


def test_a_missing_input_fails_before_the_run_directory_is_touched(tmp_path: Path) -> None:
    run = make_run(tmp_path, tmp_path / "nope.jsonl", tmp_path / "run", [Scripted("a", 0, rule_a),
                                                                          Scripted("b", 1, rule_b)])
    with pytest.raises(ConfigError, match="input file not found") as e:
        asyncio.run(run.run())
    assert e.value.file == str(tmp_path / "nope.jsonl")
    assert not (tmp_path / "run").exists()


# --- the summary is what was written ----------------------------------------------------------------
def test_summary_counts_equal_the_files(tmp_path: Path) -> None:
    n = 50
    extra = ["not json", '{"id": "c3", "messages": [{"role": "user", "content": "dup"}]}',
             '{"id": "x1"}', "", record(50)]
    inp = write_input(tmp_path / "in.jsonl", n, extra)
    out = tmp_path / "run"
    teachers = [Scripted("a", 0, rule_a), Scripted("b", 1, rule_b)]
    s = asyncio.run(make_run(tmp_path, inp, out, teachers, max_in_flight=8).run())
    assert s == json.loads((out / "summary.json").read_text())

    acc, rej = jsonl(out / "accepted.jsonl"), jsonl(out / "rejected.jsonl")
    inv, ver, ev = jsonl(out / "invalid.jsonl"), jsonl(out / "verdicts.jsonl"), jsonl(out / "events.jsonl")
    kinds = Counter(e["type"] for e in ev)
    failed = [e for e in ev if e["type"] == "failed"]
    assert (s["accepted"], s["rejected"], s["invalid"]) == (len(acc), len(rej), len(inv)) == \
           (kinds["accepted"], kinds["rejected"], kinds["invalid"])
    assert s["invalid"] == 3 and s["failed"] == len(failed) > 0
    assert s["input_lines"] == n + len(extra) and s["valid"] == n + 1
    assert s["accepted"] + s["rejected"] + s["failed"] == s["valid"]
    assert s["pending"] == s["valid"] - s["accepted"] - s["rejected"]
    assert kinds["run_started"] == kinds["run_finished"] == 1 and kinds.get("verdict", 0) == 0

    saved = Counter(t for r in acc + rej + failed for t in r["saved"])
    for name in ("a", "b"):
        mine = [v for v in ver if v["teacher"] == name]
        t = s["teachers"][name]
        assert t["calls"] == len(mine) and t["errors"] == sum(v["error"] is not None for v in mine)
        assert t["passed"] == sum(v["passed"] and v["error"] is None for v in mine)
        assert t["calls_saved"] == saved[name]
        assert t["calls"] + t["calls_saved"] == s["valid"]
    assert s["calls"] == len(ver) and s["calls_saved"] == sum(saved.values())
    assert s["cost_usd"] == 0 and s["cost_per_accepted_usd"] == 0 and s["stopped"] is None


# --- a stop drains the calls in flight ---------------------------------------------------------------
def test_an_internal_error_stops_the_run_after_the_calls_in_flight_end_not_by_cancelling_them(
        tmp_path: Path) -> None:
    n, width = 60, 6
    inp = write_input(tmp_path / "in.jsonl", n)
    out = tmp_path / "run"
    a = Scripted("a", 0, rule_a)
    b = Scripted("b", 1, rule_b, delay=lambda i: 0.02)
    run = make_run(tmp_path, inp, out, [a, b], max_in_flight=width, commit_interval_s=0.0)
    real = run.store.maybe_commit
    calls = []

    def broken(interval_s: float = 0.25) -> None:  # a bug in the recorder, on its third record
        calls.append(b.in_flight)
        if len(calls) == 3:
            raise RuntimeError("a bug in the recorder")
        real(interval_s)

    run.store.maybe_commit = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="a bug in the recorder"):
        asyncio.run(run.run())
    assert calls[2] > 0  # calls were in flight when it broke ...
    assert b.in_flight == 0 and b.started == len(b.done)  # ... and every one of them ended, none cancelled
    verdicts = jsonl(out / "verdicts.jsonl")
    assert {v["id"] for v in verdicts if v["teacher"] == "b"} == set(b.done)  # and was journaled
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped"] == "error: RuntimeError: a bug in the recorder" and s["pending"] > 0
    s2 = asyncio.run(make_run(tmp_path, inp, out, [Scripted("a", 0, rule_a), Scripted("b", 1, rule_b)]).run())
    assert s2["stopped"] is None and outcomes(out) == expected(reference(n))
