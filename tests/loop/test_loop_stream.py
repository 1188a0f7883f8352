"""Streaming generate -> judge (tgrs_agents.loop.stream): same candidates and decisions as the sequential
round, overlap, resume after a kill (kept lines are not regenerated nor judged twice), failures on either side."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from tgrs_agents.assets import asset_path
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, CurateRun
from tgrs_agents.curation.store import iter_jsonl
from tgrs_agents.errors import InputError
from tgrs_agents.loop.stream import CandidateFile, generate_and_judge, stream_fingerprint
from tgrs_agents.tasks.arithmetic import make_tasks
from tgrs_agents.tasks.arithmetic_data import trajectory

N = 4
TASKS = make_tasks(20, seed=3, prefix="t")  # 20 tasks x 4 = 80 candidates, 5 chunks of 4 tasks


class FakeStudent:
    """A deterministic generator: chunk c's records depend on (c, task, k) only; ``calls`` logs chunks."""

    def __init__(self, delay_s: float = 0.0, fail_at: int | None = None, hang_at: int | None = None) -> None:
        self.delay_s, self.fail_at, self.hang_at = delay_s, fail_at, hang_at
        self.calls: list[int] = []

    async def __call__(self, c: int, tasks: list[Any]) -> list[dict[str, Any]]:
        self.calls.append(c)
        if c == self.fail_at:
            raise RuntimeError(f"the student broke on chunk {c}")
        if c == self.hang_at:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay_s)
        out = []
        for t in tasks:
            for k in range(N):
                rng = random.Random(f"{c}-{t.id}-{k}")
                flavour = rng.choice(["good", "good", "wrong_copy", "no_marker"])
                rec = trajectory(0, rng, task_id=t.id, flavour=flavour)
                rec["id"] = f"r1-{t.id}-s{k}"
                out.append(rec)
        return out


def verifier_judge(cands: Path, out: Path):
    cfg = load_panel(asset_path("teachers/panel-verifiers.toml"))
    return lambda feed: CurateRun(cands, cfg, out, options=CurateOptions(cache=False), source=feed).run()


def round_(tmp: Path, student: FakeStudent, *, stream: bool = True, judge: Any = "verifiers") -> Any:
    cands, out = tmp / "candidates.jsonl", tmp / "curate"
    j = verifier_judge(cands, out) if judge == "verifiers" else judge
    return asyncio.run(generate_and_judge(student, TASKS, N, cands, judge=j, stream=stream, chunk_tasks=4,
                                          fingerprint=stream_fingerprint(TASKS, N, "r1-")))


def decided(out: Path) -> dict[str, list[int]]:
    return {name: sorted(r["line"] for r in iter_jsonl(out / f"{name}.jsonl")) for name in ("accepted", "rejected")}


def accepted_ids(out: Path) -> set[str]:
    return {r["id"] for r in iter_jsonl(out / "accepted.jsonl")}


def test_streamed_round_makes_and_decides_what_the_sequential_one_does(tmp_path):
    s = round_(tmp_path / "s", FakeStudent(delay_s=0.05))
    q = round_(tmp_path / "q", FakeStudent(delay_s=0.05), stream=False)
    assert (tmp_path / "s/candidates.jsonl").read_bytes() == (tmp_path / "q/candidates.jsonl").read_bytes()
    assert s.samples == q.samples == 80 and s.generated_now == 80
    assert 0 < s.summary["accepted"] < 80 and s.summary["accepted"] == q.summary["accepted"]
    assert accepted_ids(tmp_path / "s/curate") == accepted_ids(tmp_path / "q/curate")
    assert s.streamed and not q.streamed
    assert s.overlap_s > 0.1 and q.overlap_s == 0.0  # the panel judged while the student sampled
    assert q.judge_s > 0 and q.round_s >= q.generate_s + q.judge_s - 0.01


def test_a_killed_round_resumes_without_regenerating_or_rejudging_what_it_kept(tmp_path):
    whole = tmp_path / "whole"
    round_(whole, FakeStudent())
    part = tmp_path / "part"
    first = FakeStudent(hang_at=3)
    with pytest.raises(TimeoutError):  # killed while chunk 3 is being sampled

        async def killed() -> None:
            cands, out = part / "candidates.jsonl", part / "curate"
            run = generate_and_judge(first, TASKS, N, cands, judge=verifier_judge(cands, out), chunk_tasks=4,
                                     fingerprint=stream_fingerprint(TASKS, N, "r1-"))
            await asyncio.wait_for(run, timeout=1.5)

        asyncio.run(killed())
    assert first.calls == [0, 1, 2, 3]
    before = decided(part / "curate")
    assert 0 < sum(map(len, before.values())) <= 48  # chunks 0-2 were judged (some or all of them)
    # and the kill tore a line of chunk 3 as it was being written: the rerun cuts it
    lines = (part / "candidates.jsonl").read_bytes().splitlines(keepends=True)
    assert len(lines) == 48
    whole_lines = (whole / "candidates.jsonl").read_bytes().splitlines(keepends=True)
    with (part / "candidates.jsonl").open("ab") as f:
        f.write(whole_lines[48] + whole_lines[49][:40])

    again = FakeStudent()
    res = round_(part, again)
    assert again.calls == [3, 4]  # chunks 0-2 kept; chunk 3 regenerated, only its missing lines appended
    assert res.generated_now == 80 - 49
    assert (part / "candidates.jsonl").read_bytes() == (whole / "candidates.jsonl").read_bytes()
    after = decided(part / "curate")
    lines_decided = after["accepted"] + after["rejected"]
    assert sorted(lines_decided) == list(range(1, 81))  # every line decided exactly once
    assert accepted_ids(part / "curate") == accepted_ids(whole / "curate")
    verdicts = [(v["line"], v["teacher"]) for v in iter_jsonl(part / "curate" / "verdicts.jsonl")]
    assert len(verdicts) == len(set(verdicts))  # nothing judged twice
    assert res.summary["accepted"] == len(accepted_ids(whole / "curate"))


def test_a_kept_line_of_another_round_is_refused_naming_file_and_line(tmp_path):
    cands = tmp_path / "candidates.jsonl"
    rec = FakeStudent()
    recs = asyncio.run(rec(0, TASKS[:4]))
    recs[2]["id"] = "someone-else"
    cands.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs[:3]))
    with pytest.raises(InputError) as e:
        asyncio.run(generate_and_judge(FakeStudent(), TASKS, N, cands, chunk_tasks=4))
    assert "candidates.jsonl:3" in str(e.value) and "'id'" in str(e.value)


def test_a_generator_failure_stops_the_judge_after_it_decided_what_it_had(tmp_path):
    with pytest.raises(RuntimeError, match="broke on chunk 2"):
        round_(tmp_path, FakeStudent(fail_at=2))
    got = decided(tmp_path / "curate")
    assert sorted(got["accepted"] + got["rejected"]) == list(range(1, 33))  # chunks 0-1, all decided
    summary = json.loads((tmp_path / "curate" / "summary.json").read_text())
    assert "broke on chunk 2" in summary["stopped"]
    res = round_(tmp_path, FakeStudent())  # and the round then resumes to the end
    assert res.summary["accepted"] + res.summary["rejected"] == 80


def test_a_judge_that_cannot_start_ends_the_generator(tmp_path):
    student = FakeStudent(delay_s=0.05)

    async def broken(feed: Any) -> dict[str, Any]:
        await asyncio.sleep(0.08)
        raise ValueError("no panel")

    with pytest.raises(ValueError, match="no panel"):
        round_(tmp_path, student, judge=broken)
    assert len(student.calls) < 5  # cancelled, not left running to the end of the round
    assert CandidateFile(tmp_path / "candidates.jsonl").count == 4 * N * len(student.calls[:-1])


def test_generate_only_writes_the_round(tmp_path):
    res = asyncio.run(generate_and_judge(FakeStudent(), TASKS, N, tmp_path / "c.jsonl", chunk_tasks=7))
    assert res.samples == 80 and res.summary is None and res.judge_s == 0.0
    ids = [json.loads(x)["id"] for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert ids == [f"r1-{t.id}-s{k}" for t in TASKS for k in range(N)]


def test_a_served_student_samples_chunks_ahead_and_they_are_still_written_in_order(tmp_path):
    class Served(FakeStudent):  # its later chunks answer first: the network, not one worker thread
        def __init__(self) -> None:
            super().__init__()
            self.now = self.most = 0

        async def __call__(self, c: int, tasks: list[Any]) -> list[dict[str, Any]]:
            self.now += 1
            self.most = max(self.most, self.now)
            self.delay_s = 0.05 / (c + 1)
            try:
                return await super().__call__(c, tasks)
            finally:
                self.now -= 1

    for ahead in (1, 3):
        student = Served()
        path = tmp_path / f"ahead{ahead}.jsonl"
        res = asyncio.run(generate_and_judge(student, TASKS, N, path, chunk_tasks=4, ahead=ahead))
        ids = [json.loads(x)["id"] for x in path.read_text().splitlines()]
        assert res.samples == 80 and ids == [f"r1-{t.id}-s{k}" for t in TASKS for k in range(N)]
        assert student.most == ahead and student.calls == [0, 1, 2, 3, 4]


def test_the_student_resamples_a_chunk_identically_whatever_ran_before(tmp_path):
    """What makes resume deterministic: chunk c's draws depend on c alone, not on the chunks before."""
    from tgrs_agents.loop.config import LoopConfig
    from tgrs_agents.loop.stream import student_chunks
    from tgrs_agents.paid.services import Services
    from tgrs_agents.student import tiny
    from tgrs_agents.tasks.arithmetic import demonstration

    demos = [demonstration(t) for t in TASKS]
    tok = tiny.train_tokenizer([m["content"] for d in demos for m in d["messages"] if m.get("content")])
    model_dir = tiny.save(tiny.build_model(tok, seed=1), tok, tmp_path / "student")
    cfg = LoopConfig(base_dir=str(tmp_path), generate={"max_new_tokens": 12, "max_turns": 2, "max_tokens": 24})

    async def go() -> tuple[list[Any], list[Any], list[Any]]:
        async with student_chunks(cfg, model_dir, 3, 1.0, "r1-", Services()) as chunk:
            a = await chunk(1, TASKS[4:8])
            b = await chunk(0, TASKS[:4])
        async with student_chunks(cfg, model_dir, 3, 1.0, "r1-", Services()) as chunk:
            c = await chunk(1, TASKS[4:8])  # a fresh student, as after a kill
        return a, b, c

    a, b, c = asyncio.run(go())
    assert a == c and len(a) == 12
    assert [r["id"] for r in a] == [f"r1-{t.id}-s{k}" for t in TASKS[4:8] for k in range(3)]
    texts = [m.get("content") for r in a + b for m in r["messages"] if m["role"] == "assistant"]
    assert len(set(map(str, texts))) > 3  # really sampled (temperature 1.0), not one fixed string


def test_an_api_judge_judges_each_candidate_once_while_the_student_samples(tmp_path, monkeypatch):
    from tests.api_judge_kit import set_keys, table
    from tgrs_agents.curation.panel_file import panel_from_dict
    from tgrs_agents.testing.standin import FaultPlan, StandIn

    set_keys(monkeypatch)
    with StandIn(FaultPlan(latency_mean_s=0.05, seed=1)) as srv:
        cfg = panel_from_dict({"policy": "unanimous", "teacher": [table("openai", srv)]}, base_dir=tmp_path)
        cands, out = tmp_path / "candidates.jsonl", tmp_path / "curate"

        def judge(feed: Any) -> Any:
            return CurateRun(cands, cfg, out, options=CurateOptions(cache=False), source=feed).run()

        res = round_(tmp_path, FakeStudent(delay_s=0.1), judge=judge)
        assert srv.stats["ok"] == 80 and len(srv.requests) == 80
    assert res.overlap_s > 0.2
    truth = {r["id"] for r in iter_jsonl(cands) if r["messages"][-1]["content"] == f"Answer: {r['reference']}"}
    assert accepted_ids(out) == truth and 0 < len(truth) < 80


@pytest.mark.slow
def test_tgrs_run_streams_a_round_and_decides_what_the_sequential_round_does(tmp_path):
    """The loop end to end (tiny student): [generate] stream = true (the default) and false make the same
    candidates and accept the same ones; the streamed round's summary entry has its walls and overlap."""
    from tgrs_agents.loop.config import LoopConfig
    from tgrs_agents.loop.rounds import ExpertIteration

    def run(stream: bool) -> tuple[dict[str, Any], Path]:
        cfg = LoopConfig(rounds=1, eval_k=2, tasks={"n_train": 24, "n_eval": 8}, warm_start={"steps": 40},
                         generate={"n": 4, "stream": stream, "chunk_tasks": 6}, sft={"steps": 4},
                         base_dir=str(tmp_path))
        out = tmp_path / f"run-{stream}"
        return ExpertIteration(cfg, out, log=lambda s: None, live=False).run(), out / "round-1"

    (streamed, s_dir), (sequential, q_dir) = run(True), run(False)
    assert (s_dir / "candidates.jsonl").read_bytes() == (q_dir / "candidates.jsonl").read_bytes()
    assert accepted_ids(s_dir / "curate") == accepted_ids(q_dir / "curate")
    s1, q1 = streamed["rounds"][1], sequential["rounds"][1]
    assert s1["samples"] == 96 and s1["accepted"] == q1["accepted"]
    assert s1["streamed"] is True and q1["streamed"] is False
    assert s1["generate_s"] > 0 and s1["judge_s"] > 0 and 0 < s1["overlap_s"] <= min(s1["generate_s"], s1["judge_s"])
    assert "overlap_s" not in q1
    assert json.loads((s_dir / "generate.done.json").read_text())["overlap_s"] == s1["overlap_s"]


def test_a_damaged_kept_line_is_refused_naming_file_and_line(tmp_path):
    cands = tmp_path / "candidates.jsonl"
    cands.write_bytes(b'{"id": "r1-t0-s0"}\n[1, 2]\n')
    with pytest.raises(InputError) as e:
        CandidateFile(cands)
    assert "candidates.jsonl:2" in str(e.value) and "'id'" in str(e.value)
