"""The run directory (``RunStore``): group commits in dependency order, recovery after a torn write,
what counts as done on resume, refusing another panel or input, best-k finalisation that survives a
crash, and ``atomic_write``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.curation.store import (
    RunStore,
    atomic_write,
    iter_jsonl,
    verdict_from_record,
    verdict_record,
)
from tgrs_agents.errors import RunStoreError
from tgrs_agents.types import Usage, Verdict


@pytest.fixture
def inp(tmp_path: Path) -> Path:
    p = tmp_path / "in.jsonl"
    p.write_text('{"id": "c1", "messages": [{"role": "user", "content": "q"}]}\n')
    return p


def open_store(out: Path, inp: Path, fp: str = "panel-1", force: bool = False) -> tuple[RunStore, Any]:
    store = RunStore(out)
    state = store.open(panel_toml="# panel\n", panel_fp=fp, input_path=inp, force=force)
    return store, state


def verdict(teacher: str, passed: bool = True, **kw: Any) -> Verdict:
    return Verdict(teacher=teacher, passed=passed, score=1.0 if passed else 0.0, **kw)


def decision(line: int, *, saved: tuple[str, ...] = (), task: str = "t", score: float = 1.0) -> dict[str, Any]:
    return {"id": f"c{line}", "task_id": task, "messages": [], "line": line, "score": score,
            "reason": "r", "decided_by": "a", "saved": list(saved)}


def sizes(store: RunStore, names: tuple[str, ...]) -> dict[str, int]:
    return {n: store.path(n).stat().st_size for n in names}


# --- group commits ------------------------------------------------------------------------------
def test_records_reach_disk_only_at_commit_verdicts_before_decisions_before_events(
        tmp_path: Path, inp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, _ = open_store(tmp_path / "run", inp)
    # appended in the worst order: the event first, the verdict that supports it last
    store.append("events", {"type": "accepted", "line": 1})
    store.append("accepted", decision(1))
    store.append("rejected", decision(2))
    store.append("invalid", {"line": 3, "reason": "bad"})
    store.append("verdicts", verdict_record(1, "c1", verdict("a")))
    store.append("verdicts", verdict_record(2, "c2", verdict("a", False)))
    names = ("verdicts", "accepted", "rejected", "invalid", "events")
    assert set(sizes(store, names).values()) == {0}  # buffered, not written

    order: list[str] = []
    real_write = os.write

    def spy(fd: int, data: Any) -> int:
        order.append(Path(os.readlink(f"/proc/self/fd/{fd}")).stem)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", spy)
    store.commit()
    monkeypatch.undo()
    first = {name: order.index(name) for name in names}
    assert first["verdicts"] < min(first["accepted"], first["rejected"], first["invalid"])
    assert max(first["accepted"], first["rejected"], first["invalid"]) < first["events"]
    assert [r["line"] for r in iter_jsonl(store.path("verdicts"))] == [1, 2]
    assert len(list(iter_jsonl(store.path("events")))) == 1
    store.close()


def test_a_crash_between_files_of_a_commit_never_leaves_a_decision_without_its_verdicts(
        tmp_path: Path, inp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    store, _ = open_store(out, inp)
    store.append("accepted", decision(1))
    store.append("verdicts", verdict_record(1, "c1", verdict("a")))
    real_write = os.write

    def die_after_verdicts(fd: int, data: Any) -> int:
        if Path(os.readlink(f"/proc/self/fd/{fd}")).stem != "verdicts":
            raise KeyboardInterrupt  # the process is killed right after the verdicts were written
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", die_after_verdicts)
    with pytest.raises(KeyboardInterrupt):
        store.commit()
    monkeypatch.undo()
    _, state = open_store(out, inp)
    assert 1 not in state.done  # not decided: judged again, from the verdict that survived
    assert set(state.prior[1]) == {"a"} and state.stats["a"].calls == 1


# --- recovery ------------------------------------------------------------------------------------
def test_recovery_cuts_a_torn_last_line_of_every_file(tmp_path: Path, inp: Path) -> None:
    out = tmp_path / "run"
    store, _ = open_store(out, inp)
    for line in (1, 2):
        store.append("verdicts", verdict_record(line, f"c{line}", verdict("a")))
        store.append("accepted", decision(line))
        store.append("events", {"type": "accepted", "line": line})
    store.close()
    whole = {n: store.path(n).read_bytes() for n in ("verdicts", "accepted", "events")}
    for n in whole:  # a kill -9 in the middle of the next commit
        with store.path(n).open("ab") as f:
            f.write(b'{"id": "c3", "line": 3, "tea')

    store, state = open_store(out, inp)
    assert {n: store.path(n).read_bytes() for n in whole} == whole
    assert state.resumed and state.done.count == 2 and 3 not in state.done
    assert state.counts["accepted"] == 2 and state.prior == {}
    store.append("accepted", decision(3))  # the next record starts on a line of its own
    store.close()
    assert [r["line"] for r in iter_jsonl(store.path("accepted"))] == [1, 2, 3]


def test_a_candidate_is_done_only_if_its_decision_line_survived(tmp_path: Path, inp: Path) -> None:
    out = tmp_path / "run"
    store, _ = open_store(out, inp)
    paid = Usage(requests=1, input_tokens=10, output_tokens=2, cost_usd=0.01)
    store.append("verdicts", verdict_record(1, "c1", verdict("a", usage=paid)))
    store.append("verdicts", verdict_record(1, "c1", verdict("b", False, usage=paid)))
    store.append("verdicts", verdict_record(2, "c2", verdict("a", usage=paid)))  # b never answered
    store.append("verdicts", verdict_record(3, "c3", Verdict.failure("a", "timeout")))
    store.append("rejected", decision(1, saved=("c",)))
    store.append("invalid", {"line": 4, "reason": "bad"})
    store.close(wall_s=12.5)

    _, state = open_store(out, inp)
    assert 1 in state.done and 4 in state.done and 2 not in state.done and 3 not in state.done
    assert state.counts == {"accepted": 0, "rejected": 1, "invalid": 1, "passed": 0}
    assert set(state.prior) == {2, 3}  # the decided candidate's verdicts are not offered again
    assert state.prior[2]["a"].passed is True and state.prior[2]["a"].usage.cost_usd == pytest.approx(0.01)
    assert state.prior[3]["a"].error == "timeout"
    a, b, c = state.stats["a"], state.stats["b"], state.stats["c"]
    assert (a.calls, a.errors, a.requests, b.calls, c.calls, c.saved) == (3, 1, 2, 1, 0, 1)
    assert a.cost_usd == pytest.approx(0.02)
    assert state.wall_s == 12.5


def test_scan_done_reads_without_repairing(tmp_path: Path, inp: Path) -> None:
    out = tmp_path / "run"
    store, _ = open_store(out, inp)
    store.append("accepted", decision(1))
    store.append("rejected", decision(5))
    store.close()
    with store.path("accepted").open("ab") as f:
        f.write(b'{"line": 9, "id"')
    before = store.path("accepted").read_bytes()
    done = RunStore(out).scan_done()
    assert done.count == 2 and 1 in done and 5 in done and 9 not in done
    assert store.path("accepted").read_bytes() == before  # a dry run changes nothing


# --- one run per directory -----------------------------------------------------------------------
def test_another_panel_or_input_is_refused_and_force_archives(tmp_path: Path, inp: Path) -> None:
    out = tmp_path / "run"
    store, _ = open_store(out, inp, fp="panel-1")
    store.append("accepted", decision(1))
    store.close()
    kept = store.path("accepted").read_bytes()
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "x", "messages": [{"role": "user", "content": "other"}]}\n')

    with pytest.raises(RunStoreError, match="another panel") as e:
        open_store(out, inp, fp="panel-2")
    assert "another input" not in str(e.value) and "--force" in str(e.value)
    with pytest.raises(RunStoreError, match="another input"):
        open_store(out, other, fp="panel-1")
    with pytest.raises(RunStoreError, match=r"another panel.*another input"):
        open_store(out, other, fp="panel-2")
    assert store.path("accepted").read_bytes() == kept  # refused before touching anything

    fresh, state = open_store(out, other, fp="panel-2", force=True)
    fresh.close()
    assert not state.resumed and state.done.count == 0
    assert fresh.path("accepted").read_bytes() == b""
    [archive] = [p for p in out.iterdir() if p.is_dir() and p.name.startswith("archive-")]
    assert (archive / "accepted.jsonl").read_bytes() == kept
    assert json.loads((out / "run.json").read_text())["panel_fingerprint"] == "panel-2"
    _, again = open_store(out, other, fp="panel-2")  # the new run continues normally
    assert again.resumed


# --- best_k finalisation -------------------------------------------------------------------------
def test_finalize_best_k_interrupted_is_undone_on_resume_then_completes_once(
        tmp_path: Path, inp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    store, _ = open_store(out, inp)
    for line, score in ((1, 0.9), (2, 0.5), (3, 0.7)):
        store.append("passed", decision(line, score=score))
    store.append("rejected", decision(4, score=0.0))
    store.commit()
    rejected_before = store.path("rejected").read_bytes()
    keep, dropped = {1}, {3: (2, 3), 2: (3, 3)}

    real_replace = os.replace

    def crash_before_accepted(src: Any, dst: Any) -> None:
        if Path(dst).name == "accepted.jsonl":
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_before_accepted)
    with pytest.raises(KeyboardInterrupt):
        store.finalize_best_k(keep, dropped)
    monkeypatch.undo()
    store.close()
    assert len(list(iter_jsonl(store.path("rejected")))) == 3  # the dropped ones were already written

    store, state = open_store(out, inp)
    assert not store.finalized()
    assert store.path("rejected").read_bytes() == rejected_before
    assert state.counts["passed"] == 3 and state.counts["rejected"] == 1
    assert store.finalize_best_k(keep, dropped) == 1
    assert store.finalized()
    assert [r["line"] for r in iter_jsonl(store.path("accepted"))] == [1]
    rej = list(iter_jsonl(store.path("rejected")))
    assert sorted(r["line"] for r in rej) == [2, 3, 4]  # no duplicate from the first attempt
    by_best_k = {r["line"]: r for r in rej if r["decided_by"] == "best_k"}
    assert set(by_best_k) == {2, 3} and "ranked 2 of 3" in by_best_k[3]["reason"]
    store.close()


# --- files -------------------------------------------------------------------------------------
def test_atomic_write_replaces_whole_files_and_never_half_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "summary.json"
    atomic_write(p, '{"v": 1}')
    assert p.read_text() == '{"v": 1}'
    atomic_write(p, b'{"v": 2}')
    assert p.read_bytes() == b'{"v": 2}'
    assert [x.name for x in tmp_path.iterdir()] == ["summary.json"]

    def killed(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(p, '{"v": 3, "long": "' + "x" * 100_000 + '"}')
    assert p.read_bytes() == b'{"v": 2}'  # readers see the old file or the new one, never a part


def test_verdict_record_round_trips() -> None:
    v = Verdict(teacher="judge", passed=False, score=0.25, rationale="wrong", cached=False, latency_s=0.1234567,
                usage=Usage(requests=2, input_tokens=100, output_tokens=20, cost_usd=0.004))
    rec = json.loads(json.dumps(verdict_record(7, "c7", v)))
    assert rec["line"] == 7 and rec["id"] == "c7"
    back = verdict_from_record(rec)
    assert back == v.model_copy(update={"latency_s": 0.123457})
    err = Verdict.failure("judge", "HTTP 500", usage=Usage(requests=3))
    assert verdict_from_record(verdict_record(1, "c1", err)) == err


# --- paid verdicts at once; failed writes; damage; the run id ----------------------------------
def test_write_now_reaches_the_file_before_any_commit(tmp_path: Path, inp: Path) -> None:
    store, _ = open_store(tmp_path / "run", inp)
    paid = verdict("api", usage=Usage(requests=1, cost_usd=0.01))
    assert store.write_now("verdicts", verdict_record(1, "c1", paid))
    store.append("verdicts", verdict_record(2, "c2", verdict("free")))
    assert [r["teacher"] for r in iter_jsonl(store.path("verdicts"))] == ["api"]  # a kill now loses nothing paid
    store.close()
    assert [r["teacher"] for r in iter_jsonl(store.path("verdicts"))] == ["api", "free"]


def test_a_failed_write_is_taken_back_names_the_file_and_stops_further_commits(
        tmp_path: Path, inp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    out = tmp_path / "run"
    store, _ = open_store(out, inp)
    store.append("accepted", decision(1))
    store.commit()
    whole = store.path("accepted").read_bytes()
    real_write = os.write

    def full(fd: int, data: Any) -> int:
        real_write(fd, bytes(data)[:7])  # part of a line reaches the disk, then it is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    store.append("accepted", decision(2))
    with pytest.raises(RunStoreError, match=rf"^{out / 'accepted.jsonl'}: cannot write: No space left on device"):
        store.commit()
    monkeypatch.undo()
    assert store.path("accepted").read_bytes() == whole  # the part was taken back
    store.append("accepted", decision(3))
    with pytest.raises(RunStoreError):  # nothing more is committed once a write failed
        store.commit()
    with pytest.raises(RunStoreError):
        store.close()
    assert store.path("accepted").read_bytes() == whole
    _, state = open_store(out, inp)  # and the directory resumes as it was
    assert state.done.count == 1 and 1 in state.done


def test_damaged_lines_in_the_middle_are_set_aside_and_the_rest_is_read(tmp_path: Path, inp: Path) -> None:
    out = tmp_path / "run"
    store, _ = open_store(out, inp)
    for line in (1, 2, 3):
        store.append("verdicts", verdict_record(line, f"c{line}", verdict("a")))
        store.append("rejected", decision(line))
    store.close()
    for name in ("rejected", "verdicts"):
        rows = store.path(name).read_bytes().splitlines(keepends=True)
        rows[1] = b'{"id": "c2", "li\n'
        rows.insert(2, b'["not", "a record"]\n')
        store.path(name).write_bytes(b"".join(rows))
    store, state = open_store(out, inp)
    assert [n for n in (1, 2, 3) if n in state.done] == [1, 3] and state.counts["rejected"] == 2
    assert set(state.prior) == set() and state.stats["a"].calls == 2
    assert len(store.warnings) == 2 and all("2 damaged line(s)" in w for w in store.warnings)
    assert [r["line"] for r in iter_jsonl(store.path("rejected"))] == [1, 3]  # clean JSONL again
    torn = list(iter_jsonl(out / "torn-lines.jsonl"))
    assert [(t["file"], t["line_no"]) for t in torn] == [("rejected.jsonl", 2), ("rejected.jsonl", 3),
                                                        ("verdicts.jsonl", 2), ("verdicts.jsonl", 3)]
    store.close()


def test_the_run_id_is_kept_across_resumes_and_new_after_force(tmp_path: Path, inp: Path) -> None:
    out = tmp_path / "run"
    store, first = open_store(out, inp)
    store.close()
    store, again = open_store(out, inp)
    store.close()
    assert first.run_id and again.run_id == first.run_id
    store, forced = open_store(out, inp, fp="panel-2", force=True)
    store.close()
    assert forced.run_id != first.run_id
