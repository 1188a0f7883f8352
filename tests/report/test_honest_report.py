"""What the report says about a run, honestly (issue 11, item 7): judge latency split into service
and limiter wait, the limiter's note on whose limit binds, wall time over invocations, the last
budget against the run's total, what the control arm trained on, agreement only over independent verdicts,
and the browser's details paged from disk for a large run."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, curate
from tgrs_agents.report import html
from tgrs_agents.report.agreement import MISSING, teacher_table
from tgrs_agents.report.data import load_run, payloads
from tgrs_agents.tasks.arithmetic_data import write_synthetic

ROOT = Path(__file__).resolve().parents[2]


def unpack(blob: str) -> Any:
    return json.loads(gzip.decompress(base64.b64decode(blob)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("honest")
    write_synthetic(d / "in.jsonl", 120, seed=4)
    panel = load_panel(ROOT / "teachers" / "panel-verifiers.toml")
    asyncio.run(curate(d / "in.jsonl", panel, d / "run", options=CurateOptions(cache=False)))
    return d / "run"


# --- (f) agreement over independent verdicts only ------------------------------------------------
def cascade(n: int, audit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two judges that agree 80% of the time; a unanimous cascade asks B only when A passed, except
    on the first ``audit`` candidates, where both are asked (no short-circuit)."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.5
    a = np.where(rng.random(n) < 0.9, truth, ~truth).astype(np.int8)
    b = np.where(rng.random(n) < 0.9, truth, ~truth).astype(np.int8)
    asked_b = (a == 1) | (np.arange(n) < audit)
    labels = np.stack([a, np.where(asked_b, b, MISSING)]).astype(np.int8)
    panel = np.where(asked_b, a & b, 0).astype(np.int8)
    independent = asked_b  # B saved by the short-circuit elsewhere
    return labels, panel, independent


def test_a_cascade_pair_reads_not_comparable_instead_of_a_kappa_of_zero() -> None:
    labels, panel, independent = cascade(400, audit=0)
    t = teacher_table(["a", "b"], labels, panel, [], {}, [], independent=independent)
    a = t["rows"][0]
    assert a["kappa"][1] == 0.0  # the figure the report used to print: A always passed where B was asked
    assert a["kappa_why"][1] is not None and a["kappa_why"][1].startswith("not comparable")
    page = html._scope_html("all", "this run", t, hidden=False)
    assert "not comparable" in page and ">0.00<" not in page


def test_agreement_counts_only_candidates_judged_without_a_short_circuit() -> None:
    labels, panel, independent = cascade(2000, audit=300, seed=1)
    t = teacher_table(["a", "b"], labels, panel, [], {}, [], independent=independent)
    a = t["rows"][0]
    assert a["kappa_n"][1] == int(independent.sum()) and a["kappa_why"][1] is None
    assert t["independent"] == int(independent.sum()) and t["candidates"] == 2000
    # on the audited candidates alone the two judges' kappa is what their 90% accuracy implies
    audited = np.arange(2000) < 300
    only = teacher_table(["a", "b"], labels[:, audited], panel[audited], [], {}, [])
    assert only["rows"][0]["kappa"][1] == pytest.approx(0.64, abs=0.12)
    few = teacher_table(["a", "b"], labels[:, :10], panel[:10], [], {}, [], independent=independent[:10])
    assert "fewer than 20" in few["rows"][0]["kappa_why"][1]


def test_a_run_reads_which_candidates_were_cut_short(run_dir: Path) -> None:
    data = load_run(run_dir)
    ind = data.independent()
    assert ind.dtype == bool and ind.any() and not ind.all()
    for i in range(data.n):
        assert bool(ind[i]) == (not data.saved(i))


# --- (a) (b) (c) (d) figures on the page ---------------------------------------------------------
def test_the_page_shows_service_and_wait_the_limit_note_walls_and_the_invocations_budget(
        run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    lines = (run / "verdicts.jsonl").read_text().splitlines()
    out = []
    for ln in lines:
        v = json.loads(ln)
        if v["teacher"] == "answer" and v["error"] is None:  # as if a paid judge: 50 ms service, 3 s queued
            v.update(latency_s=3.05, service_s=0.05, wait_s=3.0)
        out.append(json.dumps(v))
    (run / "verdicts.jsonl").write_text("\n".join(out) + "\n")
    s = json.loads((run / "summary.json").read_text())
    note = ("teacher answer: 98% of its call time waiting on your rpm = 600 limit "
            "(teacher file; the provider allows 10000)")
    s.update(budget_usd=0.01, cost_usd=0.0068, cost_usd_invocation=0.0005, limit_notes=[note],
             wall_s=149.0, invocations_wall_s=[146.0, 3.0])
    (run / "summary.json").write_text(json.dumps(s))
    page = html.write_report(run).read_text()
    row = re.search(r'<tr data-teacher="answer">(.*?)</tr>', page).group(1)
    cells = re.findall(r'<td class="(service|wait)">([\d.]+) (ms|s)</td>', row)
    got = [(k, float(x) / (1000 if unit == "ms" else 1)) for k, x, unit in cells]
    assert [k for k, _ in got] == ["service", "service", "wait", "wait"]  # p50 and p99 of each
    assert [x for _, x in got] == pytest.approx([0.05, 0.05, 3.0, 3.0], rel=0.011)  # within the sketch's 1%
    assert note in page
    assert "149.0 s (2 invocations; this one 3.0 s)" in page
    assert "$0.0068 of $0.01 (68%); this invocation $0.0005" in page


# --- (e) the control arm -------------------------------------------------------------------------
def test_the_control_arm_report_shows_what_it_trained_on(tmp_path: Path) -> None:
    top = tmp_path / "loop"
    top.mkdir()
    rounds = [{"round": 0, "pass@1": 0.3, "pass@4": 0.5},
              {"round": 1, "pass@1": 0.1, "pass@4": 0.3, "samples": 512, "accepted": 512, "acceptance_rate": 1.0,
               "pooled": 480, "new_accepted": 480, "sft_rows": 480},
              {"round": 2, "pass@1": 0.08, "pass@4": 0.2, "samples": 512, "accepted": 512, "acceptance_rate": 1.0,
               "pooled": 960, "new_accepted": 480, "sft_rows": 960}]
    (top / "summary.json").write_text(json.dumps({"arm": "accept_all", "eval_k": 4, "rounds": rounds}))
    page = html.write_report(top).read_text()
    assert "1,024 generated, 1,024 kept (no panel)" in page
    assert "480 / 960 rows" in page
    table = re.search(r'<table class="rounds-table">(.*?)</table>', page).group(1)
    assert "What each round trained on (accept_all)" in page
    assert "<td>960</td>" in table and "<td>480</td>" in table and "<td>100%</td>" in table
    assert 'alt="candidates per round"' in page


# --- (g) paged from disk -------------------------------------------------------------------------
def test_a_large_run_pages_the_browser_details_from_disk(run_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    monkeypatch.setattr(html, "PAGED_ABOVE", 50)
    monkeypatch.setattr(html, "PAGE_ROWS", 40)
    page = html.write_report(run).read_text()
    data = load_run(run)
    meta = json.loads(re.search(r'<script type="application/json" id="meta">(.*?)</script>', page).group(1))
    assert meta["paged"] == {"pages": 3, "rows": 40, "dir": "report-data"} and data.n == 120
    assert re.search(r'id="data-details"></script>', page)  # nothing inline
    inline = unpack(payloads(data)[1])
    got: dict[str, list[Any]] = {"msgs": [], "saved": [], "v": [], "tl": []}
    for k in range(3):
        m = re.fullmatch(r'tgrsDetails\((\d+), "([^"]*)"\);\n', (run / "report-data" / f"details-{k}.js").read_text())
        assert m is not None and int(m.group(1)) == k
        part = unpack(m.group(2))
        for key in got:
            got[key] += part[key]
    assert got == {key: inline[key] for key in got}  # the same details, a page at a time
    monkeypatch.setattr(html, "PAGED_ABOVE", 10_000)
    html.write_report(run)
    assert not (run / "report-data").exists()  # a small report embeds them again
