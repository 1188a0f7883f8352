"""The run report: the written page, and the page itself in headless Chromium (Selenium): plots shown,
teacher table, filters, search, one trajectory. (The agreement statistics are in test_agreement.py.)
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.cli import main
from tgrs_agents.report.html import find_chromium, screenshot_report, write_report

ROOT = Path(__file__).resolve().parents[2]
TEACHERS = ["format", "answer", "consistent"]


# --- a small real run -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo-curate", "--n", "300", "--out", str(out)]) == 0
    d = out / "curate"
    assert main(["report", str(d)]) == 0
    return d


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _blob(page: str, name: str) -> Any:
    b64 = re.search(rf'<script type="application/octet-stream" id="data-{name}">([^<]*)</script>', page)
    assert b64 is not None
    return json.loads(gzip.decompress(base64.b64decode(b64.group(1))))


def test_report_is_written_and_self_contained(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<link\b|@import|url\(\s*['\"]?https?:", page, re.I)
    assert page.count('<img class="plot"') >= 3
    for t in TEACHERS:
        assert f'<tr data-teacher="{t}">' in page
    index, details = _blob(page, "index"), _blob(page, "details")
    acc, rej = _jsonl(run_dir / "accepted.jsonl"), _jsonl(run_dir / "rejected.jsonl")
    assert sorted(index["id"]) == sorted(r["id"] for r in acc + rej)
    assert index["teachers"] == TEACHERS
    status = dict(zip(index["id"], (index["status"][s] for s in index["st"]), strict=True))
    assert all(status[r["id"]] == "accepted" for r in acc) and all(status[r["id"]] == "rejected" for r in rej)
    verdicts = _jsonl(run_dir / "verdicts.jsonl")
    assert sum(len(v) for v in details["v"]) == len(verdicts)
    i = index["id"].index(rej[0]["id"])
    assert json.loads(details["msgs"][i]) == rej[0]["messages"]


@pytest.fixture(scope="module")
def loop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An expert-iteration directory: summary.json with rounds, and round-K/curate run directories."""
    from tgrs_agents.curation.panel_file import load_panel
    from tgrs_agents.curation.run import CurateOptions, curate
    from tgrs_agents.tasks.arithmetic_data import write_synthetic

    top = tmp_path_factory.mktemp("loop")
    panel = load_panel(ROOT / "teachers" / "panel-verifiers.toml")
    rounds: list[dict[str, Any]] = [{"round": 0, "pass@1": 0.2, "pass@4": 0.4}]
    for r in (1, 2):
        d = top / f"round-{r}"
        d.mkdir()
        write_synthetic(d / "candidates.jsonl", 120, seed=r)
        s = asyncio.run(curate(d / "candidates.jsonl", panel, d / "curate", options=CurateOptions(cache=False)))
        rounds.append({"round": r, "pass@1": 0.2 + r / 10, "pass@4": 0.4 + r / 10, "samples": 120,
                       "accepted": s["accepted"], "acceptance_rate": s["accepted"] / s["valid"]})
    (top / "summary.json").write_text(json.dumps({"arm": "filtered", "eval_k": 4, "rounds": rounds}))
    write_report(top)
    return top


def test_report_of_an_expert_iteration_dir(loop_dir: Path) -> None:
    page = (loop_dir / "report.html").read_text()
    for alt in ("pass@1 (held-out)", "pass@4 (held-out)", "acceptance rate", "cost per accepted sample"):
        assert f'alt="{alt}' in page
    assert '<option value="round-1">' in page and '<option value="round-2">' in page
    index = _blob(page, "index")
    assert index["rounds"] == [1, 2] and sorted(set(index["rnd"])) == [1, 2]
    assert index["id"].count("cand-0") == 2  # the same id in two rounds is two candidates


def test_report_cli_refuses_a_directory_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


# --- in the browser ----------------------------------------------------------------------------------
def _ensure_chromium() -> tuple[str, str]:
    exe, drv = find_chromium(), shutil.which("chromedriver")
    if exe and drv:
        return exe, drv
    if not shutil.which("apt-get") or os.geteuid() != 0:
        pytest.skip("headless Chromium is needed: apt-get install chromium chromium-driver (no apt-get/root here)")
    cmd = ("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
           "chromium chromium-driver")
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=1200)
    exe, drv = find_chromium(), shutil.which("chromedriver")
    if r.returncode or not (exe and drv):
        pytest.skip(f"could not install chromium + chromium-driver with apt-get: {r.stderr.strip()[-300:]}")
    return exe, drv


@pytest.fixture(scope="module")
def chromium() -> tuple[str, str]:
    return _ensure_chromium()


@pytest.fixture(scope="module")
def browser(chromium: tuple[str, str]) -> Any:
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the dev extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium[0]
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1600"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(chromium[1]), options=opts)
    yield driver
    driver.quit()


def _wait(driver: Any, js: str, timeout: float = 30.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(js)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for: {js}")


def _rows(driver: Any) -> list[dict[str, str]]:
    return list(driver.execute_script(
        "return [...document.querySelectorAll('#rows tbody tr')].map(r => ({...r.dataset}))"))


def _set(driver: Any, sel: str, value: str) -> None:
    driver.execute_script("""const e = document.querySelector(arguments[0]); e.value = arguments[1];
        e.dispatchEvent(new Event(e.tagName === 'SELECT' ? 'change' : 'input'));""", sel, value)
    time.sleep(0.4)  # the inputs are debounced by 150 ms


@pytest.mark.slow
def test_report_in_headless_chromium(run_dir: Path, browser: Any, tmp_path: Path) -> None:
    d = browser
    d.get((run_dir / "report.html").resolve().as_uri())
    _wait(d, "return document.body.dataset.ready === '1' && document.body.dataset.details === '1'")
    imgs = d.execute_script("return [...document.querySelectorAll('img.plot')].map(i => [i.complete, i.naturalWidth])")
    assert len(imgs) >= 3 and all(ok and w > 0 for ok, w in imgs)
    shown = d.execute_script("return [...document.querySelectorAll('#teachers .scope:not([hidden]) "
                             "table.teacher-table tbody tr')].map(r => r.dataset.teacher)")
    assert shown == TEACHERS
    acc, rej = _jsonl(run_dir / "accepted.jsonl"), _jsonl(run_dir / "rejected.jsonl")
    assert f"{len(acc) + len(rej)} of {len(acc) + len(rej)}" in d.find_element("id", "count").text.replace(",", "")
    assert len(_rows(d)) == 50

    _set(d, "#f-status", "rejected")
    rows = _rows(d)
    assert rows and all(r["status"] == "rejected" for r in rows)
    assert d.find_element("id", "count").text.startswith(f"{len(rej)} of")
    _set(d, "#f-by", "answer")
    vetoed = {r["id"] for r in rej if r["decided_by"] == "answer"}
    assert {r["id"] for r in _rows(d)} <= vetoed and d.find_element("id", "count").text.startswith(f"{len(vetoed)} of")
    _set(d, "#f-by", "any")

    task = rej[3]["task_id"]
    _set(d, "#f-q", task)
    rows = _rows(d)
    expect = [r for r in rej if task in r["task_id"] or task in r["id"] or task in r["reason"]]
    assert 0 < len(rows) == len(expect) < len(rej)
    assert all(task in r["task"] for r in rows)

    target = next(r for r in rej if r["task_id"] == task)
    d.execute_script("document.querySelector(`#rows tbody tr[data-id='${arguments[0]}']`).click()", target["id"])
    _wait(d, "return document.querySelector('#detail').dataset.loaded === '1'")
    assert d.find_element("id", "detail").is_displayed()
    texts = d.execute_script("return [...document.querySelectorAll('#detail .msg pre')].map(e => e.textContent)")
    assert len(d.find_elements("css selector", "#detail .msg")) == len(target["messages"])
    for m in target["messages"]:
        if m.get("content"):
            assert m["content"] in texts
    calls = [tc for m in target["messages"] for tc in m.get("tool_calls") or []]
    fns = d.execute_script("return [...document.querySelectorAll('#detail .tool-call .fn')].map(e => e.textContent)")
    assert len(fns) == len(calls) and all(tc["function"]["name"] in f for tc, f in zip(calls, fns, strict=True))
    verdicts = {v["teacher"]: v for v in _jsonl(run_dir / "verdicts.jsonl") if v["id"] == target["id"]}
    vrows = d.execute_script("return [...document.querySelectorAll('#detail .verdict-row')].map(r => "
                             "[r.dataset.teacher, r.querySelector('td.o').textContent, r.textContent])")
    assert [r[0] for r in vrows] == TEACHERS
    for name, outcome, text in vrows:
        if name in verdicts:
            assert outcome == ("passed" if verdicts[name]["passed"] else "failed")
            assert verdicts[name]["rationale"] in text
        else:
            assert name in target["saved"] and "saved by short-circuit" in text

    png = tmp_path / "report.png"
    assert d.save_screenshot(str(png)) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "open=" in d.current_url  # the state is in the URL: a link reopens this trajectory


@pytest.mark.slow
def test_screenshot_helper(run_dir: Path, chromium: tuple[str, str]) -> None:
    shots = screenshot_report(run_dir, chromium=chromium[0])
    assert [p.name for p in shots] == ["overview.png", "rejected.png", "trajectory.png"]
    for p in shots:
        assert p.parent == run_dir / "report-screenshots"
        assert p.read_bytes()[:4] == b"\x89PNG" and p.stat().st_size > 10_000


@pytest.mark.slow
def test_loop_report_round_filter_in_headless_chromium(loop_dir: Path, browser: Any) -> None:
    d = browser
    d.get((loop_dir / "report.html").resolve().as_uri())
    _wait(d, "return document.body.dataset.ready === '1'")
    loaded = d.execute_script("return [...document.querySelectorAll('img.plot')].filter(i => i.naturalWidth > 0)")
    assert len(loaded) >= 5
    _set(d, "#f-round", "2")
    rows = _rows(d)
    n2 = len(_jsonl(loop_dir / "round-2" / "curate" / "accepted.jsonl")) + len(
        _jsonl(loop_dir / "round-2" / "curate" / "rejected.jsonl"))
    assert rows and d.find_element("id", "count").text.startswith(f"{n2} of")
    assert all(d.execute_script(f"return document.querySelector(`tr[data-row='{r['row']}'] td.rcol`).textContent")
               == "2" for r in rows)
    _set(d, "#teacher-scope", "round-2")
    visible = d.execute_script("return [...document.querySelectorAll('#teachers .scope')].filter(s => !s.hidden)"
                               ".map(s => s.dataset.scope)")
    assert visible == ["round-2"]
    calls = d.execute_script("return document.querySelector("
                             "'.scope[data-scope=\"round-2\"] tr[data-teacher=\"format\"] td').textContent")
    summary = json.loads((loop_dir / "round-2" / "curate" / "summary.json").read_text())
    assert int(calls.replace(",", "")) == summary["teachers"]["format"]["calls"]


def test_failed_candidates_show_their_input_and_the_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A teacher error leaves a candidate undecided (failed): no decision line, so the report reads its
    messages back from the run's input and shows the error verdict."""
    from tgrs_agents.tasks.arithmetic_data import write_synthetic

    (tmp_path / "flakycheck.py").write_text(
        "def check(c):\n    n = int(c.id.split('-')[1])\n    if n % 7 == 0:\n        raise RuntimeError('boom')\n"
        "    return True, 'ok'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "panel.toml").write_text(
        'policy = "unanimous"\n[[teacher]]\nname = "flaky"\nkind = "python"\nfunction = "flakycheck:check"\n'
        '[[teacher]]\nname = "answer"\nkind = "final_answer"\ncost_rank = 1\n')
    write_synthetic(tmp_path / "in.jsonl", 60, seed=3)
    run = tmp_path / "run"
    assert main(["curate", str(tmp_path / "in.jsonl"), "--panel", str(tmp_path / "panel.toml"), "--out", str(run),
                 "--quiet", "--json", "--no-cache"]) == 0
    page = write_report(run).read_text()
    index, details = _blob(page, "index"), _blob(page, "details")
    failed = [i for i, s in enumerate(index["st"]) if index["status"][s] == "failed"]
    expect = [e["candidate_id"] for e in _jsonl(run / "events.jsonl") if e["type"] == "failed"]
    assert expect and set(expect) <= {f"cand-{n}" for n in range(0, 60, 7)}  # the others were rejected anyway
    assert [index["id"][i] for i in failed] == expect
    source = {r["id"]: r for r in _jsonl(tmp_path / "in.jsonl")}
    for i in failed:
        assert json.loads(details["msgs"][i]) == source[index["id"][i]]["messages"]
        assert index["tasks"][index["task"][i]] == source[index["id"][i]]["task_id"]
        assert index["marks"][i][0] == "E"
        assert any(v[0] == 0 and "boom" in v[7] for v in details["v"][i])
    assert '<tr data-teacher="flaky">' in page


@pytest.mark.slow
def test_a_paged_report_loads_a_trajectory_from_its_details_file(run_dir: Path, browser: Any, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``PAGED_ABOVE`` candidates the details live in report-data/ beside the page (issue 11, item 7)."""
    from tgrs_agents.report import html as report_html

    run = tmp_path / "paged"
    shutil.copytree(run_dir, run)
    monkeypatch.setattr(report_html, "PAGED_ABOVE", 100)
    monkeypatch.setattr(report_html, "PAGE_ROWS", 64)
    write_report(run)
    assert len(list((run / "report-data").glob("details-*.js"))) >= 2
    d = browser
    d.get((run / "report.html").resolve().as_uri())
    _wait(d, "return document.body.dataset.ready === '1' && document.body.dataset.details === 'paged'")
    rej = _jsonl(run / "rejected.jsonl")
    target = max(rej, key=lambda r: r["line"])  # on a later page than the first
    _set(d, "#f-status", "rejected")
    _set(d, "#f-q", target["id"])
    d.execute_script("document.querySelector(`#rows tbody tr[data-id='${arguments[0]}']`).click()", target["id"])
    _wait(d, "return document.querySelector('#detail').dataset.loaded === '1'")
    texts = d.execute_script("return [...document.querySelectorAll('#detail .msg pre')].map(e => e.textContent)")
    assert len(d.find_elements("css selector", "#detail .msg")) == len(target["messages"])
    assert all(m["content"] in texts for m in target["messages"] if m.get("content"))
    names = d.execute_script(
        "return [...document.querySelectorAll('#detail .verdict-row')].map(r => r.dataset.teacher)")
    assert names == TEACHERS


@pytest.mark.slow
def test_a_paged_index_lists_filters_and_opens_candidates_from_its_files(run_dir: Path, browser: Any, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Above ``PAGED_ABOVE`` the index's columns live in report-data/index-K.js too (issue 11, item 7g):
    the list pages through them, a filter reads them all, and a row opens with its details."""
    from tgrs_agents.report import html as report_html

    run = tmp_path / "paged-index"
    shutil.copytree(run_dir, run)
    monkeypatch.setattr(report_html, "PAGED_ABOVE", 100)
    monkeypatch.setattr(report_html, "PAGE_ROWS", 64)
    monkeypatch.setattr(report_html, "INDEX_ROWS", 70)  # a page of 50 rows straddles two index files
    write_report(run)
    assert len(list((run / "report-data").glob("index-*.js"))) >= 3
    acc, rej = _jsonl(run / "accepted.jsonl"), _jsonl(run / "rejected.jsonl")
    by_line = sorted(acc + rej, key=lambda r: r["line"])
    d = browser
    d.get((run / "report.html").resolve().as_uri())
    _wait(d, "return document.body.dataset.ready === '1' && document.body.dataset.index === 'paged'")
    assert [r["id"] for r in _rows(d)] == [r["id"] for r in by_line[:50]]
    assert f"{len(by_line)} of {len(by_line)}" in d.find_element("id", "count").text.replace(",", "")
    d.execute_script("document.querySelector('#next').click()")
    _wait(d, "return document.querySelector('#page-info').textContent.startsWith('page 2')")
    _wait(d, f"return document.querySelector('#rows tbody tr').dataset.id === '{by_line[50]['id']}'")
    assert [r["id"] for r in _rows(d)] == [r["id"] for r in by_line[50:100]]
    target = max(rej, key=lambda r: r["line"])  # in the last index file
    _set(d, "#f-status", "rejected")
    _wait(d, "return document.querySelector('#count').textContent.includes('trajectories match')")
    assert f"{len(rej)} of {len(by_line)}" in d.find_element("id", "count").text.replace(",", "")
    _set(d, "#f-task", target["task_id"])
    _wait(d, f"return !!document.querySelector(`#rows tbody tr[data-id='{target['id']}']`)")
    assert all(r["status"] == "rejected" and r["task"] == target["task_id"] for r in _rows(d))
    d.execute_script("document.querySelector(`#rows tbody tr[data-id='${arguments[0]}']`).click()", target["id"])
    _wait(d, "return document.querySelector('#detail').dataset.loaded === '1'")
    assert len(d.find_elements("css selector", "#detail .msg")) == len(target["messages"])
    d.get((run / "report.html").resolve().as_uri() + f"#open={target['id']}")  # a link to one candidate
    d.refresh()
    _wait(d, "return document.querySelector('#detail').dataset.loaded === '1'")
    assert d.find_element("id", "d-title").text == target["id"]
