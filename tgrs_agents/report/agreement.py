"""Agreement and latency statistics for the report: Cohen's kappa, Krippendorff's alpha, the teacher table.

Labels are small integers; ``-1`` (or NaN in float input) means *missing* (the teacher was not
consulted, or it errored). Everything is plain numpy and works on 100,000s of candidates.

Agreement is measured only over verdicts given independently: a candidate the cascade cut short
(a later teacher never asked because an earlier one decided) does not count, since which judges
are asked there depends on what the others said. A pair with too few such candidates, or whose
verdicts do not vary on them, is marked *not comparable* rather than shown as a kappa of 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

MISSING = -1
PERCENTILES = (50, 90, 99)
MIN_PAIRS = 20  # a pair with fewer independent co-judged candidates is "not comparable"


def cohen_kappa(a: Sequence[Any] | np.ndarray, b: Sequence[Any] | np.ndarray) -> float:
    """Cohen's kappa of two raters over the same items; NaN when undefined (no items, or p_e = 1)."""
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        raise ValueError(f"raters judged different numbers of items: {x.shape} vs {y.shape}")
    n = x.size
    if n == 0:
        return math.nan
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":  # labels: a contingency table, no sort, no copies of 8n bytes
        lo = int(min(x.min(), y.min()))
        k = int(max(x.max(), y.max())) - lo + 1
        if k <= 64:
            counts = np.bincount((x.ravel() - lo).astype(np.intp) * k + (y.ravel() - lo), minlength=k * k)
            table = counts.reshape(k, k) / n
            p_o, p_e = float(np.trace(table)), float(table.sum(axis=1) @ table.sum(axis=0))
            return math.nan if math.isclose(p_e, 1.0) else (p_o - p_e) / (1.0 - p_e)
    cats, inv = np.unique(np.concatenate([x.ravel(), y.ravel()]), return_inverse=True)
    xi, yi = inv[:n], inv[n:]
    p_o = float(np.mean(xi == yi))
    pa = np.bincount(xi, minlength=len(cats)) / n
    pb = np.bincount(yi, minlength=len(cats)) / n
    p_e = float(pa @ pb)
    if math.isclose(p_e, 1.0):
        return math.nan
    return (p_o - p_e) / (1.0 - p_e)


def krippendorff_alpha_nominal(data: Sequence[Sequence[Any]] | np.ndarray) -> float:
    """Krippendorff's alpha for nominal data; ``data`` is raters x units, NaN/None = missing.

    Units with fewer than two values are not pairable and are left out. NaN when undefined (fewer
    than two pairable values, or only one category was ever used).
    """
    arr = np.array(data, dtype=float)
    if arr.ndim != 2:
        raise ValueError("data must be a 2-d array: raters x units")
    present = ~np.isnan(arr)
    if not present.any():
        return math.nan
    cats, inv = np.unique(arr[present], return_inverse=True)
    codes = np.full(arr.shape, -1, dtype=np.int64)
    codes[present] = inv
    n_units, n_cats = arr.shape[1], len(cats)
    counts = np.zeros((n_units, n_cats))  # n_uc: how many raters gave unit u category c
    unit_idx = np.broadcast_to(np.arange(n_units), arr.shape)[present]
    np.add.at(counts, (unit_idx, codes[present]), 1.0)
    coinc = _coincidences(counts)
    return math.nan if coinc is None else _alpha(coinc)


def _coincidences(counts: np.ndarray) -> np.ndarray | None:
    """The coincidence matrix of units x categories counts (None: no unit has two values)."""
    m = counts.sum(axis=1)
    keep = m >= 2
    counts, m = counts[keep], m[keep]
    if counts.shape[0] == 0:
        return None
    w = 1.0 / (m - 1.0)
    return np.asarray((counts * w[:, None]).T @ counts - np.diag((counts * w[:, None]).sum(axis=0)))


def _alpha(coinc: np.ndarray) -> float:
    n_c = coinc.sum(axis=1)
    n = n_c.sum()
    disagree_o = coinc.sum() - np.trace(coinc)
    disagree_e = n_c.sum() ** 2 - (n_c**2).sum()
    if n <= 1 or disagree_e == 0:
        return math.nan
    return float(1.0 - (n - 1.0) * disagree_o / disagree_e)


def percentiles(values: Iterable[float] | np.ndarray | Any, qs: Sequence[float] = PERCENTILES) -> list[float | None]:
    """Linear-interpolated percentiles (numpy's default); None for every q when there are no values.
    A :class:`~tgrs_agents.events.Sketch` (constant memory) gives its own, within 1%."""
    if hasattr(values, "quantiles"):
        return list(values.quantiles(tuple(qs)))
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    if arr.size == 0:
        return [None for _ in qs]
    return [float(v) for v in np.percentile(arr, qs)]


def pairwise(labels: np.ndarray, panel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kappa of every teacher pair (and of each teacher with the panel, last column) on shared items.

    ``labels`` is teachers x candidates (0/1, ``MISSING``); ``panel`` the decision (1 accepted,
    0 rejected, ``MISSING``). Returns (kappa, n) arrays of shape T x (T + 1).
    """
    t = labels.shape[0]
    kappa = np.full((t, t + 1), math.nan)
    n = np.zeros((t, t + 1), dtype=np.int64)
    for i in range(t):
        for j, other in enumerate([*labels, panel]):
            both = (labels[i] != MISSING) & (other != MISSING)
            n[i, j] = int(both.sum())
            kappa[i, j] = cohen_kappa(labels[i][both], other[both]) if n[i, j] else math.nan
    return kappa, n


def comparable(labels: np.ndarray, panel: np.ndarray, min_pairs: int = MIN_PAIRS) -> list[list[str | None]]:
    """Per pair (T x (T + 1), the panel last): None where kappa means something, else why not.

    Kappa needs enough candidates both judged (``min_pairs``) and verdicts that vary on them: in a
    cascade a later judge is asked only when an earlier one passed, so on the candidates they share
    the earlier one always says "pass" and kappa is 0 (or undefined) whatever the judges are like."""
    t = labels.shape[0]
    out: list[list[str | None]] = []
    for i in range(t):
        row: list[str | None] = []
        for other in [*labels, panel]:
            both = (labels[i] != MISSING) & (other != MISSING)
            n = int(both.sum())
            row.append(why_not(n, len(np.unique(labels[i][both])) if n >= min_pairs else 0,
                               len(np.unique(other[both])) if n >= min_pairs else 0, min_pairs))
        out.append(row)
    return out


def why_not(n: int, values_a: int, values_b: int, min_pairs: int = MIN_PAIRS) -> str | None:
    """Why a pair's kappa means nothing (None: it does), from how many candidates both judged and how
    many distinct verdicts each gave on them."""
    if n < min_pairs:
        return f"not comparable: {n} independent candidates judged by both (fewer than {min_pairs})"
    if values_a < 2 or values_b < 2:
        return f"not comparable: one of the two gave the same verdict on all {n} shared candidates"
    return None


def panel_alpha(labels: np.ndarray, chunk: int = 1 << 16) -> float:
    """Krippendorff's alpha of teachers x candidates labels (``MISSING`` = not given), as
    :func:`krippendorff_alpha_nominal` gives it, a chunk of candidates at a time: the coincidence
    matrix adds up over units, so memory stays flat however many candidates there are."""
    cats = np.unique(labels[labels != MISSING]) if labels.size else np.zeros(0, labels.dtype)
    if len(cats) == 0:
        return math.nan
    total: np.ndarray | None = None
    for a in range(0, labels.shape[1], chunk):
        part = labels[:, a:a + chunk]
        counts = np.stack([(part == c).sum(axis=0) for c in cats], axis=1).astype(float)
        coinc = _coincidences(counts)
        if coinc is not None:
            total = coinc if total is None else total + coinc
    return math.nan if total is None else _alpha(total)


def teacher_table(teachers: Sequence[str], labels: np.ndarray, panel: np.ndarray,
                  decided_by: Sequence[str | None], latencies: Mapping[str, Any],
                  summaries: Sequence[Mapping[str, Any]], *, independent: np.ndarray | None = None,
                  service: Mapping[str, Any] | None = None, wait: Mapping[str, Any] | None = None,
                  min_pairs: int = MIN_PAIRS) -> dict[str, Any]:
    """Every figure of the report's teacher table for one scope (a run, or one round of a loop).

    ``summaries`` are the scope's summary.json files (calls, cache hits, calls saved and cost come
    from the run's own counters); ``decided_by`` is the deciding teacher of every rejection.
    ``independent`` (a mask over candidates): the agreement statistics (kappa, alpha) count only
    these, the candidates no short-circuit cut short; pass rates count every verdict. ``service``
    and ``wait``: per paid teacher, its calls' service time and time queued in the rate limiter.
    """
    agree_labels, agree_panel = labels, panel
    if independent is not None:
        agree_labels, agree_panel = labels[:, independent], panel[independent]
    kappa, n = pairwise(agree_labels, agree_panel)
    why = comparable(agree_labels, agree_panel, min_pairs)
    vetoes: dict[str, int] = {}
    for name in decided_by:
        key = name or "(none)"
        vetoes[key] = vetoes.get(key, 0) + 1
    rates = []
    for i in range(len(teachers)):
        judged = labels[i] != MISSING
        rates.append(float(labels[i][judged].mean()) if judged.any() else None)
    alpha = panel_alpha(agree_labels) if agree_labels.size else math.nan
    return build_table(teachers, kappa, n, why, rates, vetoes, len(decided_by), alpha,
                       int(labels.shape[1]) if labels.ndim == 2 else 0,
                       int(agree_labels.shape[1]) if agree_labels.ndim == 2 else 0,
                       latencies, summaries, service, wait)


def build_table(teachers: Sequence[str], kappa: np.ndarray, n: np.ndarray, why: list[list[str | None]],
                rates: list[float | None], vetoes: dict[str, int], rejections: int, alpha: float, candidates: int,
                independent: int, latencies: Mapping[str, Any], summaries: Sequence[Mapping[str, Any]],
                service: Mapping[str, Any] | None = None, wait: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The teacher table from its figures (:func:`teacher_table` computes them from arrays,
    :class:`~.stats.ScopeStats` a chunk of candidates at a time)."""
    rows = []
    for i, name in enumerate(teachers):
        st: dict[str, float] = {}
        for s in summaries:
            for k, v in (s.get("teachers", {}).get(name) or {}).items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    st[k] = st.get(k, 0) + v
        rows.append({
            "teacher": name,
            "calls": int(st.get("calls", 0)),
            "cache_hits": int(st.get("cache_hits", 0)),
            "calls_saved": int(st.get("calls_saved", 0)),
            "errors": int(st.get("errors", 0)),
            "pass_rate": rates[i],
            "vetoes": vetoes.get(name, 0),
            "veto_share": vetoes.get(name, 0) / rejections if rejections else None,
            "cost_usd": float(st.get("cost_usd", 0.0)),
            "latency_s": percentiles(latencies.get(name, ())),
            "service_s": percentiles((service or {}).get(name, ())),
            "wait_s": percentiles((wait or {}).get(name, ())),
            "kappa": [None if math.isnan(k) else round(float(k), 4) for k in kappa[i]],
            "kappa_n": [int(x) for x in n[i]],
            "kappa_why": why[i],  # None, or why the pair is not comparable
        })
    others = {k: v for k, v in vetoes.items() if k not in teachers}
    return {"teachers": list(teachers), "rows": rows, "rejections": rejections, "other_vetoes": others,
            "alpha": None if math.isnan(alpha) else round(alpha, 4), "candidates": candidates,
            "independent": independent}
