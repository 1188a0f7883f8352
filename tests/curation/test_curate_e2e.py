"""End to end: ``tgrs curate`` through the real command line on >= 10,000 generated candidates.

Every expectation is recomputed here from the generated records themselves (which lines are
broken and why, which trajectories are correct), never taken from the package's own helpers:

* a candidate is correct iff its final message has an ``Answer: N`` marker and ``N`` equals both
  the record's ``reference`` and the last ``tool`` result;
* a line is invalid iff it is not JSON, lacks a non-empty string ``id``, has no non-empty
  ``messages`` list, has a message with an unknown role, or repeats the id of an earlier valid line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.tasks.arithmetic_data import write_synthetic

ROOT = Path(__file__).resolve().parents[2]
VERIFIERS = ROOT / "teachers" / "panel-verifiers.toml"
N, SEED, BAD_EVERY, PER_TASK = 12_000, 5, 97, 4
TEACHERS = ("format", "answer", "consistent")
ROLES = {"system", "developer", "user", "assistant", "tool"}
DATA_FILES = ("accepted", "rejected", "invalid", "verdicts", "passed")
TIMEOUT = 300  # seconds; generous, for a loaded 2-core machine


# --- independent expectations ---------------------------------------------------------------------
@dataclass
class Row:
    line: int
    id: str
    task_id: str
    passes: dict[str, bool]  # teacher -> would pass

    @property
    def correct(self) -> bool:
        return all(self.passes.values())


@dataclass
class Expected:
    path: Path
    input_lines: int = 0
    rows: list[Row] = field(default_factory=list)  # the valid candidates, in input order
    invalid: dict[int, tuple[str | None, str]] = field(default_factory=dict)  # line -> (field, hint)

    @property
    def accepted(self) -> set[str]:
        return {r.id for r in self.rows if r.correct}

    @property
    def rejected(self) -> set[str]:
        return {r.id for r in self.rows if not r.correct}

    def calls_unanimous(self) -> dict[str, int]:
        """Teacher calls under the unanimous cascade (cheapest first, stop at the first failure)."""
        calls = dict.fromkeys(TEACHERS, 0)
        for r in self.rows:
            for t in TEACHERS:
                calls[t] += 1
                if not r.passes[t]:
                    break
        return calls


def judge_record(doc: dict[str, Any]) -> dict[str, bool]:
    msgs = doc["messages"]
    final = next((m.get("content") or "" for m in reversed(msgs) if m["role"] == "assistant"), "")
    tools = [m.get("content") for m in msgs if m["role"] == "tool"]
    marker = re.search(r"Answer:\s*-?\d", final) is not None
    m = re.search(r"Answer:\s*(-?\d+)\s*$", final)
    answer = int(m.group(1)) if m else None
    last_tool = int(tools[-1]) if tools and re.fullmatch(r"-?\d+", str(tools[-1])) else None
    return {
        "format": marker,
        "answer": answer is not None and answer == doc["reference"],
        "consistent": answer is not None and answer == last_tool,
    }


def problem(raw: str) -> tuple[str | None, str] | None:
    """Why a line is not a valid candidate: (field, a word its reason must contain), or None."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None, "JSON"
    if not isinstance(doc, dict):
        return None, "object"
    if "id" not in doc:
        return "id", "missing"
    if not isinstance(doc["id"], str) or not doc["id"]:
        return "id", "string"
    msgs = doc.get("messages")
    if "messages" not in doc:
        return "messages", "missing"
    if not isinstance(msgs, list) or not msgs:
        return "messages", "non-empty"
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            return f"messages[{i}].role", repr(m.get("role") if isinstance(m, dict) else m)
    return None


def expectations(path: Path) -> Expected:
    exp = Expected(path)
    first_line: dict[str, int] = {}
    with path.open() as f:
        for line, raw in enumerate(f, start=1):
            exp.input_lines = line
            if not raw.strip():
                continue
            why = problem(raw)
            if why is not None:
                exp.invalid[line] = why
                continue
            doc = json.loads(raw)
            if doc["id"] in first_line:
                exp.invalid[line] = ("id", f"line {first_line[doc['id']]}")
                continue
            first_line[doc["id"]] = line
            exp.rows.append(Row(line, doc["id"], (doc.get("task_id") or doc["id"]).strip(),
                                judge_record(doc)))
    return exp


# --- helpers -----------------------------------------------------------------------------------------
def curate_cmd(inp: Path, panel: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tgrs_agents", "curate", str(inp), "--panel", str(panel),
            "--out", str(out), "--quiet", *extra]


def curate(inp: Path, panel: Path, out: Path, *extra: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(curate_cmd(inp, panel, out, *extra), capture_output=True, text=True,
                       timeout=TIMEOUT)
    if ok:
        assert p.returncode == 0, f"curate failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p


def records(path: Path) -> list[dict[str, Any]]:
    with path.open("rb") as f:
        return [json.loads(ln) for ln in f if ln.strip()]


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def ids(out: Path, name: str) -> list[str]:
    return [r["id"] for r in records(out / f"{name}.jsonl")]


def snapshot(out: Path) -> dict[str, bytes]:
    return {n: (out / f"{n}.jsonl").read_bytes() for n in DATA_FILES}


def write_panel(path: Path, *, policy: str = "unanimous", extra: str = "",
                consistent: str = 'kind = "python"\nfunction = "tgrs_agents.checks:answer_matches_tool"') -> Path:
    path.write_text(
        f'policy = "{policy}"\n{extra}\n'
        '[[teacher]]\nname = "format"\nkind = "regex"\npattern = "Answer:\\\\s*-?\\\\d"\ncost_rank = 0\n\n'
        '[[teacher]]\nname = "answer"\nkind = "final_answer"\ncost_rank = 1\n\n'
        f'[[teacher]]\nname = "consistent"\n{consistent}\ncost_rank = 2\n'
    )
    return path


def wait_for(cond: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


# --- fixtures ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def private_verdict_cache(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Keep every curate run's verdict ledger out of the user's cache directory."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TGRS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("input") / "candidates.jsonl", N, seed=SEED,
                           bad_every=BAD_EVERY, per_task=PER_TASK)


@pytest.fixture(scope="module")
def exp(data: Path) -> Expected:
    e = expectations(data)
    # the generated file is what this test is about: >= 10k candidates, bad lines, a duplicate id
    assert e.input_lines == N >= 10_000
    assert len(e.invalid) >= N // BAD_EVERY and any(f == "id" for f, _ in e.invalid.values())
    assert e.accepted and e.rejected
    return e


@pytest.fixture(scope="module")
def main_run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("main") / "run"
    p = curate(data, VERIFIERS, out, "--json")
    return out, json.loads(p.stdout)


# --- tests -------------------------------------------------------------------------------------------
def test_outputs_match_independent_expectations(exp: Expected, main_run: tuple[Path, dict[str, Any]]) -> None:
    out, printed = main_run
    acc, rej = ids(out, "accepted"), ids(out, "rejected")
    assert len(acc) == len(set(acc)) and len(rej) == len(set(rej)), "a candidate was written twice"
    assert set(acc) == exp.accepted
    assert set(rej) == exp.rejected
    assert not set(acc) & set(rej)
    assert (out / "passed.jsonl").stat().st_size == 0

    inv = records(out / "invalid.jsonl")
    assert sorted(r["line"] for r in inv) == sorted(exp.invalid)
    for r in inv:
        want_field, hint = exp.invalid[r["line"]]
        assert r["field"] == want_field, r
        assert r["reason"].startswith(f"{exp.path}:{r['line']}"), r["reason"]
        if want_field is not None:
            assert f"field '{want_field}'" in r["reason"], r["reason"]
        assert hint in r["reason"], (hint, r["reason"])

    s = summary(out)
    assert s == printed, "--json printed another summary than summary.json"
    valid = len(exp.rows)
    assert {k: s[k] for k in ("input_lines", "valid", "accepted", "rejected", "invalid", "failed",
                              "pending", "passed")} == {
        "input_lines": N, "valid": valid, "accepted": len(exp.accepted),
        "rejected": len(exp.rejected), "invalid": len(exp.invalid), "failed": 0, "pending": 0,
        "passed": 0,
    }
    assert s["stopped"] is None and s["finalized"] is True
    assert set(s["teachers"]) == set(TEACHERS)
    want_calls = exp.calls_unanimous()
    for name, st in s["teachers"].items():
        assert st["calls"] + st["calls_saved"] == valid, (name, st)
        assert st["calls"] == want_calls[name], (name, st)
        assert st["errors"] == 0
    assert s["calls"] == sum(want_calls.values())

    # what an SFT trainer reads
    by_id = {r.id: r for r in exp.rows}
    for rec in records(out / "accepted.jsonl"):
        assert {"id", "task_id", "messages", "tools"} <= rec.keys()
        assert rec["task_id"] == by_id[rec["id"]].task_id and rec["line"] == by_id[rec["id"]].line
        assert rec["messages"] and rec["tools"] and rec["messages"][-1]["role"] == "assistant"


def test_accepted_loads_with_hf_datasets(exp: Expected, main_run: tuple[Path, dict[str, Any]],
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    datasets = pytest.importorskip("datasets", reason="the 'datasets' package (extra 'hf') is not installed")
    out, _ = main_run
    ds = datasets.load_dataset("json", data_files=str(out / "accepted.jsonl"), split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert ds.num_rows == len(exp.accepted)
    assert {"id", "task_id", "messages", "tools"} <= set(ds.column_names)
    assert set(ds["id"]) == exp.accepted


def test_rerun_on_finished_dir_does_no_new_work(data: Path, main_run: tuple[Path, dict[str, Any]],
                                                tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(main_run[0], out)
    before, s0 = snapshot(out), summary(out)
    n_events = len(records(out / "events.jsonl"))
    curate(data, VERIFIERS, out)
    assert snapshot(out) == before, "a rerun on a finished directory changed its outputs"
    assert (out / "config.toml").read_bytes() == (main_run[0] / "config.toml").read_bytes()
    s1 = summary(out)
    volatile = {"wall_s", "wall_s_invocation", "invocations_wall_s", "teachers"}  # timings (compared below)
    assert s1["invocations_wall_s"][:-1] == s0["invocations_wall_s"] and s1["wall_s"] >= s0["wall_s"]
    assert {k: v for k, v in s1.items() if k not in volatile} == {
        k: v for k, v in s0.items() if k not in volatile}
    for name, st in s1["teachers"].items():
        # latencies come back from the journal rounded, so their mean may differ in the last digit
        assert {k: v for k, v in st.items() if k != "mean_latency_s"} == {
            k: v for k, v in s0["teachers"][name].items() if k != "mean_latency_s"}, name
        assert st["reused_from_journal"] == 0
    new_events = records(out / "events.jsonl")[n_events:]
    assert [e["type"] for e in new_events] == ["run_started", "run_finished"], new_events
    assert new_events[0]["resumed"] is True and new_events[0]["already_done"] == N


def test_other_panel_on_same_dir_is_refused_then_forced(data: Path, exp: Expected,
                                                        main_run: tuple[Path, dict[str, Any]],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(main_run[0], out)
    before = snapshot(out)
    majority = write_panel(tmp_path / "majority.toml", policy="majority")

    p = curate(data, majority, out, ok=False)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert str(out) in p.stderr and "panel" in p.stderr and "--force" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    assert snapshot(out) == before, "a refused run touched the directory"

    curate(data, majority, out, "--force")
    archives = sorted(out.glob("archive-*"))
    assert len(archives) == 1 and archives[0].is_dir()
    assert {n: (archives[0] / f"{n}.jsonl").read_bytes() for n in DATA_FILES} == before
    s = summary(out)
    assert s["policy"] == "majority" and s["pending"] == 0 and s["failed"] == 0
    # majority of three: at least two of the three checks pass
    want = {r.id for r in exp.rows if sum(r.passes.values()) >= 2}
    assert set(ids(out, "accepted")) == want
    assert set(ids(out, "rejected")) == {r.id for r in exp.rows} - want
    assert s["accepted"] == len(want) and s["invalid"] == len(exp.invalid)


@pytest.mark.slow
def test_best_k_keeps_the_best_of_each_task(data: Path, exp: Expected, tmp_path: Path) -> None:
    # mean_score over the three checks: correct trajectories score 1, those that only mis-called
    # the tool 2/3 (still accepted), so best_k = 1 has a real choice to make in many tasks
    panel = write_panel(tmp_path / "best1.toml", policy="mean_score", extra="threshold = 0.6\nbest_k = 1\n")
    out = tmp_path / "run"
    curate(data, panel, out)

    score = {r.id: sum(r.passes.values()) / len(TEACHERS) for r in exp.rows}
    passing = [r for r in exp.rows if score[r.id] >= 0.6 - 1e-12]
    best: dict[str, Row] = {}
    for r in passing:  # highest score; ties go to the earlier line
        if r.task_id not in best or score[r.id] > score[best[r.task_id].id]:
            best[r.task_id] = r
    keep = {r.id for r in best.values()}
    assert any(score[r.id] < 1 for r in passing) and len(keep) < len(passing)

    acc = records(out / "accepted.jsonl")
    tasks = [r["task_id"] for r in acc]
    assert len(tasks) == len(set(tasks)), "more than one accepted candidate for a task"
    assert {r["id"] for r in acc} == keep
    rej = records(out / "rejected.jsonl")
    rej_ids = [r["id"] for r in rej]
    assert len(rej_ids) == len(set(rej_ids)) and set(rej_ids) == {r.id for r in exp.rows} - keep
    dropped = [r for r in rej if r["decided_by"] == "best_k"]
    assert {r["id"] for r in dropped} == {r.id for r in passing} - keep
    kept_score = {r["task_id"]: r["score"] for r in acc}
    for r in dropped:
        assert "best_k" in r["reason"] and repr(r["task_id"]) in r["reason"], r["reason"]
        assert r["score"] <= kept_score[r["task_id"]]
        assert r["score"] == pytest.approx(score[r["id"]], abs=1e-6)

    s = summary(out)
    assert (s["accepted"], s["rejected"], s["invalid"]) == (len(keep), len(exp.rows) - len(keep), len(exp.invalid))
    assert s["valid"] == len(exp.rows) and s["pending"] == 0 and s["passed"] == 0 and s["failed"] == 0
    assert s["finalized"] is True and s["best_k"] == 1
    for name, st in s["teachers"].items():
        assert st["calls"] + st["calls_saved"] == len(exp.rows), (name, st)

    # a rerun of the finalized run changes nothing and reports the same counts
    before = snapshot(out)
    curate(data, panel, out)
    assert snapshot(out) == before
    s2 = summary(out)
    assert {k: s2[k] for k in ("valid", "accepted", "rejected", "pending", "passed")} == {
        k: s[k] for k in ("valid", "accepted", "rejected", "pending", "passed")}


SLOW_CHECK = """
import asyncio

from tgrs_agents.teachers.checks import answer_matches_tool


async def check(candidate):
    await asyncio.sleep(0.002)
    return answer_matches_tool(candidate)
"""


@pytest.mark.slow
def test_sigint_leaves_a_resumable_run_that_completes_like_an_uninterrupted_one(
    data: Path, exp: Expected, main_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    helper = tmp_path / "slow_check.py"
    helper.write_text(SLOW_CHECK)
    slow = write_panel(tmp_path / "slow.toml", consistent=(
        f'kind = "python"\nfunction = "{helper}:check"\nmax_concurrency = 8'))
    out = tmp_path / "run"
    # SIGINT as a terminal delivers it: a test run started in the background (`cmd &`) passes SIGINT
    # on ignored, and Python keeps an inherited SIG_IGN (then the signal would be dropped, not tested)
    proc = subprocess.Popen(curate_cmd(data, slow, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        verdicts = out / "verdicts.jsonl"
        wait_for(lambda: proc.poll() is not None or (verdicts.exists() and verdicts.stat().st_size > 0),
                 "the first verdicts")
        assert proc.poll() is None, "curate finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, stderr)
    assert "resumable" in stderr and "Traceback" not in stderr, stderr
    s = summary(out)
    assert s["stopped"] == "interrupted"
    assert s["accepted"] + s["rejected"] + s["invalid"] < N, "nothing was left to resume"

    curate(data, slow, out)  # the same command again
    s = summary(out)
    assert s["stopped"] is None and s["pending"] == 0 and s["failed"] == 0
    ref = main_run[0]  # the uninterrupted run of the same decisions (same checks, faster teacher)
    for name in ("accepted", "rejected", "invalid"):
        got = records(out / f"{name}.jsonl")
        assert len(got) == len({r["line"] for r in got}), f"duplicate lines in {name}.jsonl"
        want = records(ref / f"{name}.jsonl")
        assert sorted(got, key=lambda r: r["line"]) == sorted(want, key=lambda r: r["line"]), name
    r0 = summary(ref)
    for k in ("input_lines", "valid", "accepted", "rejected", "invalid", "calls", "calls_saved"):
        assert s[k] == r0[k], k
    for name, st in s["teachers"].items():
        assert (st["calls"], st["calls_saved"]) == (r0["teachers"][name]["calls"],
                                                    r0["teachers"][name]["calls_saved"]), name
    pairs = [(r["id"], r["teacher"]) for r in records(out / "verdicts.jsonl")]
    assert len(pairs) == len(set(pairs)), "a teacher was asked twice about the same candidate"
    assert os.path.getsize(out / "passed.jsonl") == 0
