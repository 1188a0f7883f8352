"""``tgrs report DIR``: one self-contained HTML page to *see* a run (no CDN, no network).

For a curate run directory: headline figures, plots (decisions over time, teacher outcomes, score
distribution), the per-teacher table (calls, cache hits, calls saved, veto share, cost, latency
percentiles, Cohen's kappa with each other teacher and with the panel, Krippendorff's alpha), and
a trajectory browser. For an expert-iteration directory: per-round curves (pass@1, pass@k,
acceptance rate, cost per accepted sample) and the same table and browser over every round's
curate run, with a round filter. The browser's data is gzipped JSON decompressed in the page
(``DecompressionStream``) and rendered one page of rows at a time; above ``PAGED_ABOVE`` candidates
it is not in the page but beside it, in ``report-data/`` files the page loads as it needs them
(:mod:`.pages`), so the page stays small and writing it holds one page of candidates at a time.
:func:`screenshot_report` saves PNGs of the page with headless Chromium.
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
    from ..events import Sketch
    from .data import RunData, load_run
    from .pages import DATA_DIR, INDEX_ROWS, PAGE_ROWS, PAGED_ABOVE, details_json, index_head, index_json, pack
    from .pages import write_pages as _write_pages
    from .plots import plots_html
    from .stats import Scan
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


def _kcell(k: float | None, n: int, why: str | None = None) -> str:
    if why is not None:
        return f'<td class="k na nc" title="{_esc(why)}">not comparable</td>'
    if k is None:
        return f'<td class="k na" title="undefined on {n} shared candidates">–</td>'
    hue = int(max(min(k, 1.0), -1.0) * 60 + 60)
    return f'<td class="k" style="background:hsl({hue} 70% 88%)" title="{n} candidates judged by both">{k:.2f}</td>'


def _scope_html(name: str, label: str, t: dict[str, Any], hidden: bool) -> str:
    head = "".join(f"<th>{_esc(x)}</th>" for x in ("teacher", "calls", "cache hits", "saved by short-circuit",
                   "errors", "pass rate", "veto share", "cost $", "latency p50", "p90", "p99", "service p50", "p99",
                   "limiter wait p50", "p99", "κ vs panel"))
    body = ""
    for r in t["rows"]:
        share = "–" if r["veto_share"] is None else f"{r['veto_share']:.0%} ({r['vetoes']})"
        rate = "–" if r["pass_rate"] is None else f"{r['pass_rate']:.0%}"
        split = [r.get("service_s") or [None] * 3, r.get("wait_s") or [None] * 3]
        body += (f'<tr data-teacher="{_esc(r["teacher"])}"><th>{_esc(r["teacher"])}</th><td>{r["calls"]:,}</td>'
                 f'<td>{r["cache_hits"]:,}</td><td>{r["calls_saved"]:,}</td><td>{r["errors"]:,}</td><td>{rate}</td>'
                 f'<td>{share}</td><td>{r["cost_usd"]:.4f}</td>'
                 + "".join(f"<td>{_fmt_s(x)}</td>" for x in r["latency_s"])
                 + "".join(f'<td class="{c}">{_fmt_s(q[j])}</td>' for c, q in zip(("service", "wait"), split,
                                                                                    strict=True) for j in (0, 2))
                 + _kcell(r["kappa"][-1], r["kappa_n"][-1], (r.get("kappa_why") or [None])[-1]) + "</tr>")
    kh = "".join(f"<th>{_esc(x)}</th>" for x in [*t["teachers"], "panel"])
    kb = "".join(f'<tr><th>{_esc(r["teacher"])}</th>' + "".join(
        '<td class="k self">1</td>' if j == i else _kcell(k, n, w)
        for j, (k, n, w) in enumerate(zip(r["kappa"], r["kappa_n"], r.get("kappa_why") or [None] * len(r["kappa"]),
                                          strict=True))) + "</tr>"
        for i, r in enumerate(t["rows"]))
    other = ", ".join(f"{_esc(k)}: {v}" for k, v in t["other_vetoes"].items())
    alpha = "undefined" if t["alpha"] is None else f"{t['alpha']:.3f}"
    return (f'<div class="scope" data-scope="{_esc(name)}"{" hidden" if hidden else ""}>'
            f'<table class="teacher-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
            f'<p class="note">{t["rejections"]:,} rejections{"; also decided by " + other if other else ""}. '
            f"Krippendorff's α (nominal, all teachers, missing verdicts allowed) over the "
            f"{t.get('independent', t['candidates']):,} of {t['candidates']:,} candidates judged independently "
            f'(no teacher saved by the short-circuit): <b class="alpha">{alpha}</b>. Service is the remote call '
            "itself; limiter wait is time queued for a rate-limit slot in this process.</p>"
            "<h3>Agreement (Cohen's κ on candidates both judged independently)</h3>"
            f'<table class="kappa"><thead><tr><th></th>{kh}'
            f"</tr></thead><tbody>{kb}</tbody></table></div>")


def _merged(data: RunData, teacher: str, rnd: int | None, key: str) -> Sketch:
    out = Sketch()
    for (rr, tt), sk in data.latency.items():
        if tt == teacher and rnd in (None, rr) and key in sk:
            out.merge(sk[key])
    return out


def _scopes(data: RunData) -> list[int | None]:
    return [None] + ([s.round for s in data.sources] if data.kind == "loop" else [])


def _teachers(data: RunData, scan: Scan) -> str:
    scopes: list[tuple[str, str, int | None]] = [("all", "all rounds" if data.kind == "loop" else "this run", None)]
    if data.kind == "loop":
        scopes += [(f"round-{s.round}", f"round {s.round}", s.round) for s in data.sources]
    parts, options = [], []
    for i, (name, label, r) in enumerate(scopes):
        lat, service, wait = ({t: _merged(data, t, r, key) for t in data.teachers}
                              for key in ("latency_s", "service_s", "wait_s"))
        sums = [s.summary for s in data.sources if r is None or s.round == r]
        t = scan.scopes[r].table(data.teachers, lat, sums, service=service, wait=wait)
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
    items = [("candidates", f"{int(tot.get('valid', data.n)):,}"),
             ("accepted", f"{int(acc):,}" + (f" ({acc / decided:.1%})" if decided else "")),
             ("rejected", f"{int(tot.get('rejected', 0)):,}"), ("invalid lines", f"{int(tot.get('invalid', 0)):,}"),
             ("failed / pending", f"{int(tot.get('failed', 0)):,} / {int(tot.get('pending', 0)):,}"),
             ("teacher calls", f"{int(tot.get('calls', 0)):,} (saved {int(tot.get('calls_saved', 0)):,})"),
             ("cost (all invocations)", f"${tot.get('cost_usd', 0):.4f}"), *_budget_cards(data),
             ("cost / accepted", f"${tot.get('cost_usd', 0) / acc:.6f}" if acc else "–"),
             ("429s", f"{int(tot.get('rate_limited', 0)):,}"), ("wall time", _wall(tot.get("wall_s", 0), data.summary))]
    if data.kind == "loop":  # the loop's own wall time, not just its curate stages'
        items[-1] = ("wall time", _wall(float(data.summary.get("wall_s", tot.get("wall_s", 0))), data.summary))
        rounds = data.summary["rounds"]
        if not data.sources:  # no panel ran (the accept-all control): what it trained on, from the rounds
            gen = sum(int(r.get("samples") or 0) for r in rounds)
            items[0] = ("candidates", f"{gen:,} generated, {sum(int(r.get('accepted') or 0) for r in rounds):,} "
                        "kept (no panel)")
            items[1] = ("trained on", " / ".join(f"{int(r.get('sft_rows') or 0):,}" for r in rounds[1:]) + " rows")
        k = data.summary.get("eval_k", 1)
        items = [("rounds", str(len(rounds) - 1)), ("arm", str(data.summary.get("arm", ""))),
                 ("pass@1", " → ".join(f"{r['pass@1']:.3f}" for r in (rounds[0], rounds[-1]))),
                 (f"pass@{k}", " → ".join(f"{r.get(f'pass@{k}', 0):.3f}" for r in (rounds[0], rounds[-1]))), *items]
    policy = {s.summary.get("policy") for s in data.sources} - {None}
    if policy:
        items.append(("policy", ", ".join(sorted(map(str, policy)))))
    return "".join(f'<div class="card"><div class="v">{_esc(v)}</div><div class="l">{_esc(k)}</div></div>'
                   for k, v in items)


def _wall(total: float, summary: dict[str, Any]) -> str:
    """Wall time over every invocation of the directory, and how many there were."""
    inv = summary.get("invocations_wall_s") or []
    more = f" ({len(inv)} invocations; this one {float(inv[-1]):.1f} s)" if len(inv) > 1 else ""
    return f"{float(total):.1f} s{more}"


def _usd(x: float) -> str:
    return f"{x:.2f}" if x >= 0.01 or x == 0 else f"{x:.2g}"


def _budget_cards(data: RunData) -> list[tuple[str, str]]:
    """The run's spend (every invocation) against the budget the last invocation was given -- the
    budget caps that total -- with what the last invocation itself spent."""
    out = []
    for s in data.sources:
        b, spent = s.summary.get("budget_usd"), s.summary.get("cost_usd_invocation")
        if not b:
            continue
        total = float(s.summary.get("cost_usd") or 0.0)
        now = f"; this invocation ${float(spent):.4f}" if spent is not None and spent != total else ""
        where = f" (round {s.round})" if s.round is not None else ""
        out.append((f"budget{where}", f"${total:.4f} of ${_usd(float(b))} ({total / float(b):.0%}){now}"))
    return out


def _notes(data: RunData) -> str:
    """The limiter's word on what held paid teachers back (summary ``limit_notes``)."""
    notes = [(s.round, n) for s in data.sources for n in s.summary.get("limit_notes") or []]
    if not notes:
        return ""
    return '<ul class="limit-notes">' + "".join(
        f"<li>{_esc(n)}{f' (round {r})' if r is not None else ''}</li>" for r, n in notes) + "</ul>"


def _rounds_table(data: RunData) -> str:
    """Per round of a loop: what was generated, kept, pooled and trained on (the control arm too)."""
    if data.kind != "loop":
        return ""
    cols: tuple[tuple[str, str], ...] = (("round", "round"), ("samples", "generated"), ("accepted", "accepted"),
            ("acceptance_rate", "acceptance"), ("pooled", "pooled"), ("sft_rows", "trained on (rows)"),
            ("pass@1", "pass@1"))
    if any("cost_usd" in r for r in data.summary.get("rounds", [])):  # what each round paid (tgrs_agents.loop.budget)
        cols += (("cost_usd", "paid $"), ("cost_per_accepted_usd", "$ / accepted"))
    head = "".join(f"<th>{_esc(h)}</th>" for _, h in cols)

    def cell(r: dict[str, Any], k: str) -> str:
        v = r.get(k)
        if v is None:
            return "–"
        if k == "sft_rows" and r.get("carried_over"):
            return "0 (student carried over)"
        if k in ("cost_usd", "cost_per_accepted_usd"):
            return f"{v:.6f}"
        return f"{v:.0%}" if k == "acceptance_rate" else f"{v:.3f}" if k == "pass@1" else f"{v:,}"

    body = "".join("<tr>" + "".join(f"<td>{cell(r, k)}</td>" for k, _ in cols) + "</tr>"
                   for r in data.summary.get("rounds", []))
    arm = data.summary.get("arm", "")
    return (f'<h3>What each round trained on ({_esc(arm)})</h3><table class="rounds-table"><thead><tr>{head}'
            f"</tr></thead><tbody>{body}</tbody></table>")


def render(data: RunData, run_dir: Path, paged: dict[str, Any] | None = None,
           paged_index: dict[str, Any] | None = None) -> str:
    """The page; ``paged`` / ``paged_index`` (pages, page size, folder): the details / the index's
    columns are in files beside it, not inline (the index's shared tables always are)."""
    scan = Scan(data, _scopes(data))  # the statistics, a chunk of candidates at a time
    index = pack(index_head(data) if paged_index else index_json(data, 0, data.n))
    details = "" if paged else pack(details_json(data, 0, data.n))
    kind = f"expert iteration, {len(data.summary['rounds']) - 1} rounds" if data.kind == "loop" else "curate run"
    parts = {
        "title": _esc(f"tgrs report: {run_dir.name}"), "heading": _esc(str(run_dir)), "kind": _esc(kind),
        "generated": _esc(time.strftime("%Y-%m-%d %H:%M:%S")),
        "cards": _cards(data), "notes": _notes(data) + _rounds_table(data),
        "plots": plots_html(data, scan), "teachers": _teachers(data, scan),
        "css": (ASSETS / "report.css").read_text(), "js": (ASSETS / "report.js").read_text(),
        "index": index, "details": details,
        # JSON in a script element: not HTML-escaped (the page reads it), only "</" kept out
        "meta": json.dumps({"kind": data.kind, "n": data.n, **({"paged": paged} if paged else {}),
                            **({"index": paged_index} if paged_index else {})})
        .replace("</", "<\\/"),
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
    data = None
    try:
        data = load_run(run_dir)
        paged, index = write_pages(data, run_dir / DATA_DIR) if data.n > PAGED_ABOVE else (None, None)
        if paged is None:
            shutil.rmtree(run_dir / DATA_DIR, ignore_errors=True)  # an earlier, larger report's
        page = render(data, run_dir.resolve(), paged, index)
    finally:
        if data is not None:
            data.close()
        if was_enabled:
            gc.enable()
    atomic_write(out, page)
    return out


def write_pages(data: RunData, folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The browser's details in files of ``PAGE_ROWS`` candidates and its index in files of
    ``INDEX_ROWS`` (see :func:`.pages.write_pages`)."""
    return _write_pages(data, folder, PAGE_ROWS, INDEX_ROWS)


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
