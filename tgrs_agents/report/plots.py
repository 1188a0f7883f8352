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

from .data import RunData


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
        cpa.append(s.get("cost_usd", 0.0) / acc if acc else 0.0)
    ax.plot([r["round"] for r in judged], cpa, marker="o", color="C3")
    ax.set_xlabel("round")
    ax.set_ylim(bottom=0)
    out.append(("cost per accepted sample", _png(fig)))
    return out


def run_plots(data: RunData, labels: np.ndarray) -> list[tuple[str, str]]:
    out = []
    if data.timeline and data.kind == "curate":  # a loop's rounds are hours apart
        fig, ax = _fig("decisions over time")
        tl = np.array(sorted(data.timeline))
        t = tl[:, 0] - tl[0, 0]
        for status, name, color in ((0, "accepted", "C2"), (1, "rejected", "C3")):
            ax.plot(t, np.cumsum(tl[:, 1] == status), label=name, color=color)
        ax.set_xlabel("seconds since the first decision")
        ax.legend()
        out.append(("decisions over time", _png(fig)))
    if data.teachers:
        fig, ax = _fig("teacher outcomes")
        per_set = np.bincount(np.asarray(data.cols["saved"], dtype=np.int64), minlength=len(data.saved_sets.values))
        sets = [json.loads(names) for names in data.saved_sets.values]
        saved = [sum(int(c) for c, names in zip(per_set, sets, strict=False) if t in names) for t in data.teachers]
        err = [data.errors.get(t, 0) for t in data.teachers]
        bottom = np.zeros(len(data.teachers))
        for vals, name, color in (((labels == 1).sum(axis=1), "passed", "C2"), ((labels == 0).sum(axis=1), "failed",
                                  "C3"), (err, "error", "C1"), (saved, "saved (not called)", "0.75")):
            ax.bar(data.teachers, vals, bottom=bottom, label=name, color=color)
            bottom = bottom + np.asarray(vals)
        fig.legend(loc="outside lower center", ncols=4, fontsize=8)
        out.append(("teacher outcomes", _png(fig)))
    st, score = np.asarray(data.cols["st"]), np.asarray(data.cols["score"], dtype=float)
    if data.n:
        fig, ax = _fig("panel score by decision")
        bins = np.linspace(min(0.0, score.min()), max(1.0, score.max()), 21)
        ax.hist([score[np.isin(st, (0, 2))], score[st == 1]], bins=bins, label=["accepted", "rejected"],
                color=["C2", "C3"], stacked=True)
        ax.legend()
        out.append(("panel score by decision", _png(fig)))
    return out


def plots_html(data: RunData, labels: np.ndarray) -> str:
    """The report's plots as ``<figure>`` elements with embedded PNGs (or a note without matplotlib)."""
    try:
        plots = (round_curves(data) if data.kind == "loop" else []) + run_plots(data, labels)
    except ImportError:
        return '<p class="note">Install matplotlib (<code>pip install tgrs-agents[report]</code>) for plots.</p>'
    return "".join(f'<figure><img class="plot" alt="{_esc(t)}" title="{_esc(t)}" src="data:image/png;base64,{b}">'
                   "</figure>" for t, b in plots)
