"""How long ``tgrs report`` takes on a 100,000-candidate curate run, how big the page is, and how soon
headless Chromium shows the first page of the trajectory browser.

Generates the input (``synth.write_synthetic``), curates it with the shipped verifier panel
(``tgrs curate --quiet``), writes the report, then opens it in headless Chromium (Selenium) and
reads the page's own clocks: ``tgrs-first-page`` (navigation start to the first page of rows in
the DOM, the data inflated), ``details`` (messages and verdicts inflated in the background) and
one search over every candidate's text. With ``--screenshots`` it also saves
``DIR/report-screenshots/*.png``::

    python benchmarks/bench_report.py [--n 100000] [--dir runs/bench-report] [--screenshots]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tgrs_agents.report.html import find_chromium, screenshot_report, write_report
from tgrs_agents.tasks.arithmetic_data import write_synthetic

ROOT = Path(__file__).resolve().parents[1]


def make_run(work: Path, n: int) -> Path:
    data, out = work / "input.jsonl", work / "curate"
    if not (out / "summary.json").exists():
        t0 = time.perf_counter()
        write_synthetic(data, n, seed=0, bad_every=97)
        subprocess.run([sys.executable, "-m", "tgrs_agents", "curate", str(data), "--panel",
                        str(ROOT / "teachers" / "panel-verifiers.toml"), "--out", str(out), "--quiet", "--json",
                        "--no-cache"], check=True, stdout=subprocess.DEVNULL)
        print(f"curated {n:,} generated candidates in {time.perf_counter() - t0:.1f}s -> {out}")
    return out


def browser_times(report: Path, query: str) -> dict[str, float] | str:
    exe, drv = find_chromium(), shutil.which("chromedriver")
    if exe is None or drv is None:
        return "skipped: apt-get install chromium chromium-driver"
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return "skipped: pip install selenium"
    opts = webdriver.ChromeOptions()
    opts.binary_location = exe
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2000"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(drv), options=opts)
    try:
        t0 = time.perf_counter()
        d.get(report.resolve().as_uri())
        wait(d, "return document.body.dataset.ready === '1'")
        out = {"wall_s_to_first_page": time.perf_counter() - t0,
               "first_page_ms": d.execute_script("return window.tgrsFirstPageMs")}
        wait(d, "return document.body.dataset.details === '1'")
        out["details_ms"] = d.execute_script("return window.tgrsDetailsMs")
        d.execute_script("const e = document.querySelector('#f-q'); e.value = arguments[0];"
                         "e.dispatchEvent(new Event('input'))", query)
        wait(d, "return document.querySelector('#f-q').value && location.hash.includes('q=')")
        out["search_ms"] = d.execute_script("return window.tgrsLastApplyMs")
        out["rows_in_dom"] = d.execute_script("return document.querySelectorAll('#rows tbody tr').length")
        return out
    finally:
        d.quit()


def wait(driver: object, js: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if driver.execute_script(js):  # type: ignore[attr-defined]
            return
        time.sleep(0.01)
    raise TimeoutError(js)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="candidates to generate and curate")
    ap.add_argument("--dir", default=None, help="work directory (kept; reused if already curated)")
    ap.add_argument("--screenshots", action="store_true", help="also save report-screenshots/*.png")
    args = ap.parse_args()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-report-"))
    work.mkdir(parents=True, exist_ok=True)
    run = make_run(work, args.n)
    t0 = time.perf_counter()
    report = write_report(run)
    wrote = time.perf_counter() - t0
    print(f"report: {report} ({report.stat().st_size / 1e6:.1f} MB) written in {wrote:.2f}s")
    times = browser_times(report, query="task-2499")
    if isinstance(times, str):
        print(f"browser: {times}")
    else:
        print(f"browser: first page of rows shown {times['first_page_ms']:.0f} ms after navigation start "
              f"(wall {times['wall_s_to_first_page']:.2f}s incl. driver), messages and verdicts inflated at "
              f"{times['details_ms']:.0f} ms, a search over every candidate {times['search_ms']:.0f} ms; "
              f"{times['rows_in_dom']} rows in the DOM")
    if args.screenshots:
        for p in screenshot_report(run):
            print(f"screenshot: {p}")


if __name__ == "__main__":
    main()
