"""The report's plots (matplotlib, no pyplot state): per-round curves of an expert-iteration run, and
a run's decisions over time, teacher outcomes and panel scores, as base64 PNGs for the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import numpy as np

from .columns import CHUNK, RecordFile
from .data import RunData
from .stats import Scan


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()


def _fig(title: str) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return fig, ax


def round_curves(data: RunData) -> list[tuple[str, str]]:
    rounds = data.summary["rounds"]
    k = data.summary.get("eval_k", 1)
    xs = [r["round"] for r in rounds]
    costs = {s.round: s.summary for s in data.sources}
    out = []

    def rfig(title: str) -> tuple[Any, Any]:
        fig, ax = _fig(title)
        ax.set_xticks(xs)
        return fig, ax

    for key, title in (("pass@1", "pass@1 (held-out)"), (f"pass@{k}", f"pass@{k} (held-out)")):
        fig, ax = rfig(title)
        ax.plot(xs, [r.get(key, np.nan) for r in rounds], marker="o")
        ax.set_xlabel("round")
        ax.set_ylim(0, 1.02)
        out.append((title, _png(fig)))
    judged = [r for r in rounds if r["round"] > 0]
    fig, ax = rfig("candidates per round")  # what the round trained on, beside what it kept
    for key, name, color in (("samples", "generated", "0.6"), ("accepted", "accepted", "C2"),
                             ("pooled", "pooled", "C0"), ("sft_rows", "trained on (rows)", "C1")):
        ax.plot([r["round"] for r in judged], [r.get(key, np.nan) for r in judged], marker="o", label=name, color=color)
    ax.set_xlabel("round")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    out.append(("candidates per round", _png(fig)))
    fig, ax = rfig("acceptance rate")
    ax.plot([r["round"] for r in judged], [r.get("acceptance_rate", np.nan) for r in judged], marker="o", color="C2")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("round")
    out.append(("acceptance rate", _png(fig)))
    fig, ax = rfig("cost per accepted sample (USD)")
    cpa = []
    for r in judged:
        s = costs.get(r["round"], {})
        acc = s.get("accepted") or r.get("accepted") or 0
        if "cost_usd" in r:  # the round's whole cost (judge, refine, ...: tgrs_agents.loop.budget)
            cpa.append(r.get("cost_per_accepted_usd") or 0.0)
            continue
        cpa.append(s.get("cost_usd", 0.0) / acc if acc else 0.0)
    ax.plot([r["round"] for r in judged], cpa, marker="o", color="C3")
    ax.set_xlabel("round")
    ax.set_ylim(bottom=0)
    out.append(("cost per accepted sample", _png(fig)))
    return out


def _decision_curve(decided: RecordFile) -> tuple[np.ndarray, list[np.ndarray]]:
    """Seconds since the first decision and how many were accepted / rejected by then, at up to 4000
    points (not 1M) of the decisions in time order. They were logged in that order: then a chunk at a
    time; otherwise sorted in memory."""
    n = len(decided)
    shown = np.unique(np.linspace(0, n - 1, min(n, 4000)).astype(np.int64))
    t, counts, carry = np.empty(len(shown)), [np.empty(len(shown), np.int32) for _ in range(2)], [0, 0]
    last: tuple[Any, Any] | None = None
    first = 0.0
    for a in range(0, n, CHUNK):
        rec = decided.rows(a, a + CHUNK)
        when, s = rec["t"], rec["s"]
        if last is not None:
            when, s = np.concatenate([[last[0]], when]), np.concatenate([[last[1]], s])
        later = (when[1:] > when[:-1]) | ((when[1:] == when[:-1]) & (s[1:] >= s[:-1]))
        if not later.all() or np.isnan(when).any():  # not in time order: sort them all, as before
            return _decision_curve_sorted(decided, shown)
        when, s = rec["t"], rec["s"]
        last = (when[-1], s[-1])
        if a == 0:
            first = when[0]
        pick = (shown >= a) & (shown < a + len(rec))
        t[pick] = when[shown[pick] - a] - first
        for status in (0, 1):
            cs = np.cumsum(s == status, dtype=np.int32) + np.int32(carry[status])
            counts[status][pick] = cs[shown[pick] - a]
            carry[status] = int(cs[-1])
    return t, counts


def _decision_curve_sorted(decided: RecordFile, shown: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    when, s = decided.field("t"), decided.field("s")
    order = np.lexsort((s, when))
    s = s[order]
    return when[order[shown]] - when[order[0]], [np.cumsum(s == status, dtype=np.int32)[shown] for status in (0, 1)]


def run_plots(data: RunData, scan: Scan) -> list[tuple[str, str]]:
    out = []
    if len(data.decided) and data.kind == "curate":  # a loop's rounds are hours apart
        fig, ax = _fig("decisions over time")
        t, counts = _decision_curve(data.decided)
        for status, name, color in ((0, "accepted", "C2"), (1, "rejected", "C3")):
            ax.plot(t, counts[status], label=name, color=color)
        ax.set_xlabel("seconds since the first decision")
        ax.legend()
        out.append(("decisions over time", _png(fig)))
    if data.teachers:
        fig, ax = _fig("teacher outcomes")
        per_set = scan.per_set[:len(data.saved_sets)]
        sets = [json.loads(names) for names in data.saved_sets.values]
        saved = [sum(int(c) for c, names in zip(per_set, sets, strict=False) if t in names) for t in data.teachers]
        err = [data.errors.get(t, 0) for t in data.teachers]
        bottom = np.zeros(len(data.teachers))
        every = scan.scopes[None]
        for vals, name, color in ((every.passed, "passed", "C2"), (every.judged - every.passed, "failed", "C3"),
                                  (err, "error", "C1"), (saved, "saved (not called)", "0.75")):
            ax.bar(data.teachers, vals, bottom=bottom, label=name, color=color)
            bottom = bottom + np.asarray(vals)
        fig.legend(loc="outside lower center", ncols=4, fontsize=8)
        out.append(("teacher outcomes", _png(fig)))
    if data.n:
        fig, ax = _fig("panel score by decision")
        bins, acc, rej = scan.bins, scan.acc, scan.rej  # counts: no copy of every score in matplotlib
        ax.stairs(acc, bins, fill=True, label="accepted", color="C2")
        ax.stairs(acc + rej, bins, baseline=acc, fill=True, label="rejected", color="C3")
        ax.legend()
        out.append(("panel score by decision", _png(fig)))
    return out


def plots_html(data: RunData, scan: Scan) -> str:
    """The report's plots as ``<figure>`` elements with embedded PNGs (or a note without matplotlib)."""
    try:
        plots = (round_curves(data) if data.kind == "loop" else []) + run_plots(data, scan)
    except ImportError:
        return '<p class="note">Install matplotlib (<code>pip install tgrs-agents[report]</code>) for plots.</p>'
    return "".join(f'<figure><img class="plot" alt="{_esc(t)}" title="{_esc(t)}" src="data:image/png;base64,{b}">'
                   "</figure>" for t, b in plots)
