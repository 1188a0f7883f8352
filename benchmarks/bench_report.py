"""How long ``tgrs report`` takes on a large curate run, how much memory it needs, how big the page is,
and how soon headless Chromium shows the first page of the trajectory browser.

For each size, generates the input (``write_synthetic``), curates it with the shipped verifier panel
(``tgrs curate --quiet``; reused when already curated), then writes the report in a child process and
prints its wall time, CPU time and peak RSS (the child's own ``ru_maxrss``, from ``wait4``), with the
size of ``report.html`` and of ``report-data/`` beside it, and the last run's peak over the first's.
Memory should not grow with the run: the candidates' records, their sort to input order and the
statistics are on disk or a chunk at a time, and above ``PAGED_ABOVE`` candidates the browser's
index and details are written to ``report-data/`` a page at a time. Then it opens the first size's
report in headless Chromium (Selenium) and reads the page's own clocks: first page of rows shown,
one search over every candidate, one trajectory opened. With
``--screenshots`` it also saves ``DIR/report-screenshots/*.png``::

    python benchmarks/bench_report.py [--sizes 100k,1M] [--dir runs/bench-report] [--screenshots]
    python benchmarks/bench_report.py --run runs/my-curate-run      # an existing run directory
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tgrs_agents.report.html import find_chromium, screenshot_report
from tgrs_agents.tasks.arithmetic_data import write_synthetic

ROOT = Path(__file__).resolve().parents[1]
CHILD = "import sys; from tgrs_agents.report.html import write_report; write_report(sys.argv[1])"


def parse_size(text: str) -> int:
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def make_run(work: Path, n: int) -> Path:
    data, out = work / "input.jsonl", work / "curate"
    if not (out / "summary.json").exists():
        t0 = time.perf_counter()
        if not data.exists():
            write_synthetic(data, n, seed=0, bad_every=97)
        subprocess.run([sys.executable, "-m", "tgrs_agents", "curate", str(data), "--panel",
                        str(ROOT / "teachers" / "panel-verifiers.toml"), "--out", str(out), "--quiet", "--json",
                        "--no-cache"], check=True, stdout=subprocess.DEVNULL)
        print(f"curated {n:,} generated candidates in {time.perf_counter() - t0:.1f}s -> {out}")
    return out


def measure(run: Path) -> dict[str, float]:
    """Write ``run``'s report in a child process: wall s, CPU s and peak RSS MB of that child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(run)])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the report of {run} failed")
    rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    data = run / "report-data"
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": rss,
            "page_mb": (run / "report.html").stat().st_size / 1e6,
            "data_mb": sum(p.stat().st_size for p in data.iterdir()) / 1e6 if data.is_dir() else 0.0,
            "data_files": len(list(data.iterdir())) if data.is_dir() else 0}


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
        if d.execute_script("return document.body.dataset.details") != "paged":
            wait(d, "return document.body.dataset.details === '1'")
            out["details_ms"] = d.execute_script("return window.tgrsDetailsMs")
        d.execute_script("const e = document.querySelector('#f-q'); e.value = arguments[0];"
                         "e.dispatchEvent(new Event('input'))", query)
        wait(d, "return document.querySelector('#f-q').value && location.hash.includes('q=')")
        out["search_ms"] = d.execute_script("return window.tgrsLastApplyMs")
        out["rows_in_dom"] = d.execute_script("return document.querySelectorAll('#rows tbody tr').length")
        t1 = time.perf_counter()
        d.execute_script("document.querySelector('#rows tbody tr').click()")
        wait(d, "return document.querySelector('#detail').dataset.loaded === '1'")
        out["open_row_ms"] = (time.perf_counter() - t1) * 1e3
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
    ap.add_argument("--sizes", default="100k", help="comma-separated candidate counts (default: 100k)")
    ap.add_argument("--n", type=int, default=None, help="one size (the older spelling of --sizes)")
    ap.add_argument("--run", action="append", default=[], help="an existing curate run directory (repeatable)")
    ap.add_argument("--dir", default=None, help="work directory (kept; runs reused if already curated)")
    ap.add_argument("--no-browser", action="store_true", help="skip the headless Chromium timings")
    ap.add_argument("--screenshots", action="store_true", help="also save report-screenshots/*.png")
    args = ap.parse_args()
    runs = [Path(r) for r in args.run]
    if not runs:
        work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-report-"))
        sizes = [args.n] if args.n else [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        runs = [make_run(work / f"n{n}", n) for n in sizes]
    print(f"{'run':<40} {'wall s':>8} {'cpu s':>7} {'peak RSS MB':>12} {'page MB':>8} {'report-data':>18}")
    peaks = []
    for run in runs:
        m = measure(run)
        peaks.append(m["peak_rss_mb"])
        print(f"{str(run)[-40:]:<40} {m['wall_s']:>8.2f} {m['cpu_s']:>7.2f} {m['peak_rss_mb']:>12.0f} "
              f"{m['page_mb']:>8.2f} {m['data_mb']:>8.1f} MB, {m['data_files']:>4} files")
    if len(peaks) > 1:  # flat memory: the last (largest) run's peak over the first's
        print(f"peak RSS, last run / first run: {peaks[-1] / peaks[0]:.2f}x")
    if not args.no_browser:
        times = browser_times(runs[0] / "report.html", query="task-2499")
        if isinstance(times, str):
            print(f"browser: {times}")
        else:
            details = f", details inflated at {times['details_ms']:.0f} ms" if "details_ms" in times else ""
            print(f"browser ({runs[0]}): first page of rows shown {times['first_page_ms']:.0f} ms after navigation "
                  f"start (wall {times['wall_s_to_first_page']:.2f}s incl. driver){details}, a search over every "
                  f"candidate {times['search_ms']:.0f} ms, a trajectory opened in {times['open_row_ms']:.0f} ms; "
                  f"{times['rows_in_dom']} rows in the DOM")
    if args.screenshots:
        for p in screenshot_report(runs[0]):
            print(f"screenshot: {p}")


if __name__ == "__main__":
    main()
