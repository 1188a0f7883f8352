"""``tgrs report DIR``: one self-contained HTML page to *see* a run (no CDN, no network).

For a curate run directory: headline figures, plots (decisions over time, teacher outcomes, score
distribution), the per-teacher table (calls, cache hits, calls saved, veto share, cost, latency
percentiles, Cohen's kappa with each other teacher and with the panel, Krippendorff's alpha), and
a trajectory browser. For an expert-iteration directory: per-round curves (pass@1, pass@k,
acceptance rate, cost per accepted sample) and the same table and browser over every round's
curate run, with a round filter. The browser's data is gzipped JSON decompressed in the page
(``DecompressionStream``) and rendered one page of rows at a time, so 100,000 candidates open in
a few seconds. :func:`screenshot_report` saves PNGs of the page with headless Chromium.
"""

from __future__ import annotations

import gc
import html
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..curation.store import atomic_write
from ..errors import TgrsError

try:
    import numpy as np

    from .agreement import teacher_table
    from .data import RunData, load_run, payloads
    from .plots import plots_html
except ImportError as e:  # numpy (and matplotlib) come with the [report] extra
    _MISSING: ImportError | None = e
else:
    _MISSING = None

ASSETS = Path(__file__).resolve().parent / "assets"
_SUM_KEYS = ("input_lines", "valid", "accepted", "rejected", "invalid", "failed", "pending", "calls",
             "calls_saved", "cost_usd", "rate_limited", "wall_s")


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


# --- tables ------------------------------------------------------------------------------------
def _fmt_s(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x * 1e6:.0f} µs" if x < 1e-3 else f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def _kcell(k: float | None, n: int) -> str:
    if k is None:
        return f'<td class="k na" title="undefined on {n} shared candidates">–</td>'
    hue = int(max(min(k, 1.0), -1.0) * 60 + 60)
    return f'<td class="k" style="background:hsl({hue} 70% 88%)" title="{n} candidates judged by both">{k:.2f}</td>'


def _scope_html(name: str, label: str, t: dict[str, Any], hidden: bool) -> str:
    head = "".join(f"<th>{_esc(x)}</th>" for x in ("teacher", "calls", "cache hits", "saved by short-circuit",
                   "errors", "pass rate", "veto share", "cost $", "latency p50", "p90", "p99", "κ vs panel"))
    body = ""
    for r in t["rows"]:
        share = "–" if r["veto_share"] is None else f"{r['veto_share']:.0%} ({r['vetoes']})"
        rate = "–" if r["pass_rate"] is None else f"{r['pass_rate']:.0%}"
        body += (f'<tr data-teacher="{_esc(r["teacher"])}"><th>{_esc(r["teacher"])}</th><td>{r["calls"]:,}</td>'
                 f'<td>{r["cache_hits"]:,}</td><td>{r["calls_saved"]:,}</td><td>{r["errors"]:,}</td><td>{rate}</td>'
                 f'<td>{share}</td><td>{r["cost_usd"]:.4f}</td>'
                 + "".join(f"<td>{_fmt_s(x)}</td>" for x in r["latency_s"])
                 + _kcell(r["kappa"][-1], r["kappa_n"][-1]) + "</tr>")
    kh = "".join(f"<th>{_esc(x)}</th>" for x in [*t["teachers"], "panel"])
    kb = "".join(f'<tr><th>{_esc(r["teacher"])}</th>' + "".join(
        '<td class="k self">1</td>' if j == i else _kcell(k, n)
        for j, (k, n) in enumerate(zip(r["kappa"], r["kappa_n"], strict=True))) + "</tr>"
        for i, r in enumerate(t["rows"]))
    other = ", ".join(f"{_esc(k)}: {v}" for k, v in t["other_vetoes"].items())
    alpha = "undefined" if t["alpha"] is None else f"{t['alpha']:.3f}"
    return (f'<div class="scope" data-scope="{_esc(name)}"{" hidden" if hidden else ""}>'
            f'<table class="teacher-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<p class="note">{t["rejections"]:,} rejections{"; also decided by " + other if other else ""}. '
            f"Krippendorff's α (nominal, all teachers, missing verdicts allowed) over {t['candidates']:,} "
            f'candidates: <b class="alpha">{alpha}</b></p>'
            f'<h3>Agreement (Cohen\'s κ on candidates both judged)</h3><table class="kappa"><thead><tr><th></th>{kh}'
            f"</tr></thead><tbody>{kb}</tbody></table></div>")


def _teachers(data: RunData, labels: np.ndarray, panel: np.ndarray) -> str:
    rnd, st, by = np.asarray(data.cols["rnd"]), np.asarray(data.cols["st"]), data.cols["by"]
    names = data.names.values
    scopes: list[tuple[str, str, int | None]] = [("all", "all rounds" if data.kind == "loop" else "this run", None)]
    if data.kind == "loop":
        scopes += [(f"round-{s.round}", f"round {s.round}", s.round) for s in data.sources]
    parts, options = [], []
    for i, (name, label, r) in enumerate(scopes):
        mask = np.ones(data.n, bool) if r is None else rnd == r
        rej = np.flatnonzero(mask & (st == 1))
        lat = {t: [x for (rr, tt), xs in data.latency.items() if tt == t and r in (None, rr) for x in xs]
               for t in data.teachers}
        sums = [s.summary for s in data.sources if r is None or s.round == r]
        t = teacher_table(data.teachers, labels[:, mask], panel[mask],
                          [names[by[j]] if by[j] >= 0 else None for j in rej], lat, sums)
        parts.append(_scope_html(name, label, t, hidden=i > 0))
        options.append(f'<option value="{_esc(name)}">{_esc(label)}</option>')
    pick = f'<label>scope <select id="teacher-scope">{"".join(options)}</select></label>' if len(scopes) > 1 else ""
    return pick + "".join(parts)


def _cards(data: RunData) -> str:
    tot: dict[str, float] = {}
    for s in data.sources:
        for k in _SUM_KEYS:
            if isinstance(s.summary.get(k), int | float):
                tot[k] = tot.get(k, 0) + s.summary[k]
    acc = tot.get("accepted", 0)
    decided = acc + tot.get("rejected", 0)
    budget = [float(b) for s in data.sources if (b := s.summary.get("budget_usd"))]
    items = [("candidates", f"{int(tot.get('valid', data.n)):,}"),
             ("accepted", f"{int(acc):,}" + (f" ({acc / decided:.1%})" if decided else "")),
             ("rejected", f"{int(tot.get('rejected', 0)):,}"), ("invalid lines", f"{int(tot.get('invalid', 0)):,}"),
             ("failed / pending", f"{int(tot.get('failed', 0)):,} / {int(tot.get('pending', 0)):,}"),
             ("teacher calls", f"{int(tot.get('calls', 0)):,} (saved {int(tot.get('calls_saved', 0)):,})"),
             ("cost", f"${tot.get('cost_usd', 0):.4f}" + (f" of ${sum(budget):.2f}" if budget else "")),
             ("cost / accepted", f"${tot.get('cost_usd', 0) / acc:.6f}" if acc else "–"),
             ("429s", f"{int(tot.get('rate_limited', 0)):,}"), ("wall time", f"{tot.get('wall_s', 0):.1f} s")]
    if data.kind == "loop":  # the loop's own wall time, not just its curate stages'
        items[-1] = ("wall time", f"{float(data.summary.get('wall_s', tot.get('wall_s', 0))):.1f} s")
        rounds = data.summary["rounds"]
        k = data.summary.get("eval_k", 1)
        items = [("rounds", str(len(rounds) - 1)), ("arm", str(data.summary.get("arm", ""))),
                 ("pass@1", " → ".join(f"{r['pass@1']:.3f}" for r in (rounds[0], rounds[-1]))),
                 (f"pass@{k}", " → ".join(f"{r.get(f'pass@{k}', 0):.3f}" for r in (rounds[0], rounds[-1]))), *items]
    policy = {s.summary.get("policy") for s in data.sources} - {None}
    if policy:
        items.append(("policy", ", ".join(sorted(map(str, policy)))))
    return "".join(f'<div class="card"><div class="v">{_esc(v)}</div><div class="l">{_esc(k)}</div></div>'
                   for k, v in items)


def render(data: RunData, run_dir: Path) -> str:
    labels, panel = data.labels(), data.panel()
    index, details = payloads(data)
    kind = f"expert iteration, {len(data.summary['rounds']) - 1} rounds" if data.kind == "loop" else "curate run"
    parts = {
        "title": _esc(f"tgrs report: {run_dir.name}"), "heading": _esc(str(run_dir)), "kind": _esc(kind),
        "generated": _esc(time.strftime("%Y-%m-%d %H:%M:%S")), "cards": _cards(data),
        "plots": plots_html(data, labels), "teachers": _teachers(data, labels, panel),
        "css": (ASSETS / "report.css").read_text(), "js": (ASSETS / "report.js").read_text(),
        "index": index, "details": details, "meta": _esc(json.dumps({"kind": data.kind, "n": data.n})),
    }
    template = (ASSETS / "report.html").read_text()
    return re.sub(r"@@([a-z]+)@@", lambda m: parts[m.group(1)], template)


def write_report(run_dir: str | Path) -> Path:
    """Write ``DIR/report.html`` for a curate run or an expert-iteration directory; returns its path."""
    if _MISSING is not None:
        raise TgrsError(f"the report needs numpy and matplotlib ({_MISSING}): pip install 'tgrs-agents[report]'")
    run_dir = Path(run_dir)
    out = run_dir / "report.html"
    was_enabled = gc.isenabled()
    gc.disable()  # millions of small, long-lived lists: the cyclic GC would double the time
    try:
        page = render(load_run(run_dir), run_dir.resolve())
    finally:
        if was_enabled:
            gc.enable()
    atomic_write(out, page)
    return out


def maybe_write_report(run_dir: str | Path, log: Callable[[str], None] = print) -> Path | None:
    """For the end of a run: write the report, or say why not. Never fails the run, which is saved."""
    try:
        path = write_report(run_dir)
    except Exception as e:  # the report is a by-product; `tgrs report DIR` can always retry
        log(f"[tgrs] no report for {run_dir}: {e}")
        return None
    log(f"[tgrs] report: {path}")
    return path


# --- screenshots -------------------------------------------------------------------------------
VIEWS = {"overview": "", "rejected": "#view=browser&status=rejected",
         "trajectory": "#view=browser&status=rejected&open=first"}


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        if path := shutil.which(name):
            return path
    return None


def screenshot_report(run_dir: str | Path, *, views: dict[str, str] | None = None, size: tuple[int, int] = (1400, 2000),
                      wait_ms: int = 15000, chromium: str | None = None) -> list[Path]:
    """Save ``DIR/report-screenshots/<view>.png`` (writing the report first if it is missing)."""
    run_dir = Path(run_dir)
    report = run_dir / "report.html"
    if not report.exists():
        write_report(run_dir)
    exe = chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium found: apt-get install chromium (or set chromium=...)")
    out_dir = run_dir / "report-screenshots"
    out_dir.mkdir(exist_ok=True)
    shots = []
    for name, frag in (views or VIEWS).items():
        png = out_dir / f"{name}.png"
        subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={png}", f"--window-size={size[0]},{size[1]}",
                        f"--virtual-time-budget={wait_ms}", report.resolve().as_uri() + frag],
                       check=True, capture_output=True, timeout=180)
        shots.append(png)
    return shots
