"""Reading a run directory for the report (``load_run``, ``payloads``), checked against the files of a
real small curate run: rows in input order, statuses, every verdict, the agreement labels, the
per-teacher marks, a killed run's pending candidates, and an expert-iteration directory.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, curate
from tgrs_agents.errors import RunStoreError
from tgrs_agents.report.agreement import MISSING
from tgrs_agents.report.data import STATUS, load_run, payloads
from tgrs_agents.tasks.arithmetic_data import write_synthetic

ROOT = Path(__file__).resolve().parents[2]
TEACHERS = ["format", "answer", "consistent"]


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def unpack(blob: str) -> Any:
    return json.loads(gzip.decompress(base64.b64decode(blob)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("data")
    write_synthetic(d / "in.jsonl", 120, seed=4)
    panel = load_panel(ROOT / "teachers" / "panel-verifiers.toml")
    asyncio.run(curate(d / "in.jsonl", panel, d / "run", options=CurateOptions(cache=False)))
    return d / "run"


def verdicts_by_line(run: Path) -> dict[int, dict[str, dict[str, Any]]]:
    out: dict[int, dict[str, dict[str, Any]]] = {}
    for v in jsonl(run / "verdicts.jsonl"):
        out.setdefault(v["line"], {})[v["teacher"]] = v
    return out


def expected_marks(vs: dict[str, dict[str, Any]], saved: list[str]) -> str:
    return "".join("S" if t in saved and t not in vs else "." if t not in vs else
                   "E" if vs[t]["error"] else "P" if vs[t]["passed"] else "F" for t in TEACHERS)


def test_a_curate_run_is_read_row_by_row_in_input_order(run_dir: Path) -> None:
    data = load_run(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert data.kind == "curate" and data.summary == summary and [s.round for s in data.sources] == [None]
    assert data.teachers == TEACHERS == list(summary["teachers"])
    decided = {r["line"]: ("accepted", r) for r in jsonl(run_dir / "accepted.jsonl")}
    decided |= {r["line"]: ("rejected", r) for r in jsonl(run_dir / "rejected.jsonl")}
    assert summary["accepted"] > 0 and summary["rejected"] > 0
    assert data.n == len(decided) == summary["accepted"] + summary["rejected"]

    index, details = (unpack(b) for b in payloads(data))
    assert index["line"] == sorted(decided)  # input order, whatever order decisions were written in
    assert index["status"] == list(STATUS) and index["teachers"] == TEACHERS
    vs_by_line = verdicts_by_line(run_dir)
    for i, line in enumerate(index["line"]):
        status, rec = decided[line]
        assert index["id"][i] == rec["id"] and index["status"][index["st"][i]] == status
        assert index["tasks"][index["task"][i]] == rec["task_id"]
        assert index["names"][index["by"][i]] == rec["decided_by"]
        assert index["reasons"][index["reason"][i]] == rec["reason"]
        assert index["score"][i] == pytest.approx(rec["score"], abs=1e-4)
        assert json.loads(details["msgs"][i]) == rec["messages"]
        assert details["saved"][i] == rec["saved"]
        assert index["marks"][i] == data.marks(i) == expected_marks(vs_by_line[line], rec["saved"])
        got = {TEACHERS[v[0]]: v for v in details["v"][i]}
        assert set(got) == set(vs_by_line[line])
        for t, v in got.items():
            assert v[1] == vs_by_line[line][t]["passed"] and v[2] == vs_by_line[line][t]["score"]
    assert any("S" in m for m in index["marks"])  # the cascade saved calls, and the marks show it
    assert sum(len(v) for v in details["v"]) == sum(len(x) for x in vs_by_line.values())


def test_agreement_inputs_are_the_verdicts_and_the_decisions(run_dir: Path) -> None:
    data = load_run(run_dir)
    vs_by_line = verdicts_by_line(run_dir)
    want = np.full((len(TEACHERS), data.n), MISSING, dtype=np.int8)
    for i, line in enumerate(data.cols["line"]):
        for ti, t in enumerate(TEACHERS):
            v = vs_by_line[line].get(t)
            if v is not None and v["error"] is None:
                want[ti, i] = int(v["passed"])
    assert np.array_equal(data.labels(), want)
    assert (want == MISSING).any() and (want == 0).any() and (want == 1).any()
    status = [STATUS[s] for s in data.cols["st"]]
    assert data.panel().tolist() == [1 if s == "accepted" else 0 for s in status]


def test_a_killed_run_shows_pending_candidates_with_their_input(run_dir: Path, tmp_path: Path) -> None:
    """A kill after the verdicts but before the decisions were written (and mid-line)."""
    run = tmp_path / "killed"
    shutil.copytree(run_dir, run)
    acc = (run / "accepted.jsonl").read_text().splitlines(keepends=True)
    lost = [json.loads(x) for x in acc[-3:]]
    (run / "accepted.jsonl").write_text("".join(acc[:-3]))
    torn = json.dumps({**jsonl(run / "verdicts.jsonl")[0], "line": 9999})
    with (run / "verdicts.jsonl").open("a") as f:
        f.write(torn[: len(torn) // 2])

    data = load_run(run)
    index, details = (unpack(b) for b in payloads(data))
    assert 9999 not in index["line"]  # the torn line is not read
    source = {r["id"]: r for r in jsonl(Path(json.loads((run / "run.json").read_text())["input"]))}
    for rec in lost:
        i = index["line"].index(rec["line"])
        assert index["status"][index["st"][i]] == "pending" and index["id"][i] == rec["id"]
        assert index["reasons"][index["reason"][i]] == "no decision recorded yet"
        assert json.loads(details["msgs"][i]) == source[rec["id"]]["messages"]
        assert index["tasks"][index["task"][i]] == source[rec["id"]]["task_id"]
        assert details["v"][i]  # the verdicts that were paid for are shown
    assert data.n == load_run(run_dir).n


def test_an_expert_iteration_dir_reads_every_round(run_dir: Path, tmp_path: Path) -> None:
    top = tmp_path / "loop"
    for r in (1, 2):
        shutil.copytree(run_dir, top / f"round-{r}" / "curate")
    (top / "round-x" / "curate").mkdir(parents=True)  # not a round
    # round 0 (the base model's evaluation) has no curate run; round 2 is on disk, not yet in the summary
    (top / "summary.json").write_text(json.dumps({"rounds": [{"round": 0}, {"round": 1}]}))
    single = load_run(run_dir)

    data = load_run(top)
    assert data.kind == "loop" and [s.round for s in data.sources] == [1, 2]
    assert data.n == 2 * single.n
    index = unpack(payloads(data)[0])
    assert index["rounds"] == [1, 2]
    assert index["rnd"] == [1] * single.n + [2] * single.n
    assert index["id"] == single.ids() * 2  # the same id in two rounds is two candidates
    assert index["line"][: single.n] == sorted(index["line"][: single.n])


def test_a_directory_that_is_not_a_run_is_refused_with_a_hint(run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(RunStoreError, match="not a run directory") as e:
        load_run(tmp_path)
    assert "did you mean" not in str(e.value)
    shutil.copytree(run_dir, tmp_path / "top" / "curate")
    with pytest.raises(RunStoreError, match="did you mean") as e:
        load_run(tmp_path / "top")
    assert str(tmp_path / "top" / "curate") in str(e.value)


def test_latencies_batched_into_a_sketch_match_one_at_a_time() -> None:
    from tgrs_agents.events import Sketch
    from tgrs_agents.report.spill import LatencyBatch

    rng = np.random.default_rng(3)
    xs = np.concatenate([rng.lognormal(-7, 2, 70_000), [0.0, 1e-7, 1e-6, 0.5, 12.0]])
    one, batched = Sketch(), LatencyBatch()
    for x in xs.tolist():
        one.add(x)
        batched.add(x)
    got = batched.flush()
    assert got.n == one.n == len(xs) and got.total == pytest.approx(one.total)
    differ = {k for k in one.counts.keys() | got.counts.keys() if one.counts.get(k) != got.counts.get(k)}
    assert sum(abs(one.counts.get(k, 0) - got.counts.get(k, 0)) for k in differ) <= 2  # a last-ulp log at a bucket edge
    assert got.quantiles((1, 50, 90, 99, 100)) == one.quantiles((1, 50, 90, 99, 100))


def test_a_teacher_heard_twice_shows_its_last_verdict_once(run_dir: Path, tmp_path: Path) -> None:
    """A resumed run may hold two verdicts of one teacher on one candidate: the browser shows the last,
    in the place of the first, and the agreement labels are the last one's."""
    run = tmp_path / "again"
    shutil.copytree(run_dir, run)
    first = jsonl(run / "verdicts.jsonl")[0]
    again = {**first, "passed": not first["passed"], "rationale": "heard again", "score": 0.5}
    with (run / "verdicts.jsonl").open("a") as f:
        f.write(json.dumps(again) + "\n")
    data = load_run(run)
    index, details = (unpack(b) for b in payloads(data))
    i = index["line"].index(first["line"])
    got = details["v"][i]
    assert len(got) == len(verdicts_by_line(run_dir)[first["line"]])  # one per teacher heard
    assert got[0][0] == TEACHERS.index(first["teacher"])  # where its first verdict was (the file's first line)
    assert got[0][3] == "heard again" and got[0][1] == again["passed"] and got[0][2] == 0.5
    assert data.labels()[TEACHERS.index(first["teacher"]), i] == int(again["passed"])
    data.close()
