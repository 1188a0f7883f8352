"""The report's statistics a chunk of candidates at a time: each scope's teacher table (:class:`ScopeStats`)
and the plots' counts, from the run's records on disk (:func:`scan`), so memory holds one chunk.

The figures are those :func:`~.agreement.teacher_table` computes from whole arrays, to the bit: kappa
from each pair's contingency table (counts add up over chunks), pass rates from counts, and
Krippendorff's alpha from its coincidence matrices over the same blocks of candidates as
:func:`~.agreement.panel_alpha` (a second pass, once the categories are known).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .agreement import MIN_PAIRS, MISSING, _alpha, _coincidences, build_table, why_not

ALPHA_BLOCK = 1 << 16  # candidates per coincidence matrix, as panel_alpha sums them


class ScopeStats:
    """What one scope's teacher table needs, added up a chunk at a time (labels 0/1 or ``MISSING``)."""

    def __init__(self, teachers: int) -> None:
        self.t = teachers
        self.pair = np.zeros((teachers, teachers + 1, 2, 2), np.int64)  # independent, both given
        self.judged = np.zeros(teachers, np.int64)
        self.passed = np.zeros(teachers, np.int64)
        self.vetoes: dict[str, int] = {}
        self.rejections = self.n = self.n_ind = 0
        self.seen = np.zeros(2, bool)  # which labels the independent candidates got
        self.cats: np.ndarray | None = None  # set for the second pass (alpha)
        self.coinc: np.ndarray | None = None
        self.held: list[np.ndarray] = []  # independent labels not yet in a block

    def add(self, labels: np.ndarray, panel: np.ndarray, decided_by: list[str | None],
            independent: np.ndarray) -> None:
        al, ap = labels[:, independent], panel[independent]
        if self.cats is not None:
            self._alpha(al)
            return
        self.n += labels.shape[1]
        self.n_ind += al.shape[1]
        self.rejections += len(decided_by)
        for name in decided_by:
            key = name or "(none)"
            self.vetoes[key] = self.vetoes.get(key, 0) + 1
        self.judged += (labels != MISSING).sum(axis=1)
        self.passed += (labels == 1).sum(axis=1)
        self.seen |= np.array([(al == 0).any(), (al == 1).any()])
        for i in range(self.t):
            for j, other in enumerate([*al, ap]):
                both = (al[i] != MISSING) & (other != MISSING)
                code = al[i][both].astype(np.intp) * 2 + other[both]
                self.pair[i, j] += np.bincount(code, minlength=4).reshape(2, 2)

    def second_pass(self) -> bool:
        """Ready the alpha pass; False when alpha is undefined without it."""
        cats = np.flatnonzero(self.seen).astype(np.int8)
        if len(cats) and self.n_ind:
            self.cats = cats
            return True
        return False

    def _alpha(self, al: np.ndarray, last: bool = False) -> None:
        if al.shape[1]:
            self.held.append(al)
        while self.held and (last or sum(h.shape[1] for h in self.held) >= ALPHA_BLOCK):
            part = np.concatenate(self.held, axis=1)
            block, rest = part[:, :ALPHA_BLOCK], part[:, ALPHA_BLOCK:]
            self.held = [rest] if rest.shape[1] else []
            cats = self.cats if self.cats is not None else ()
            counts = np.stack([(block == c).sum(axis=0) for c in cats], axis=1).astype(float)
            coinc = _coincidences(counts)
            if coinc is not None:
                self.coinc = coinc if self.coinc is None else self.coinc + coinc

    def alpha(self) -> float:
        if self.cats is None or not len(self.cats) or not self.n_ind:
            return math.nan
        self._alpha(np.zeros((self.t, 0), np.int8), last=True)
        return math.nan if self.coinc is None else _alpha(self.coinc)

    def kappa(self, i: int, j: int) -> float:
        """Cohen's kappa as :func:`~.agreement.cohen_kappa` gives it on the pair's shared candidates."""
        c = self.pair[i, j]
        n = int(c.sum())
        if not n:
            return math.nan
        present = np.flatnonzero((c.sum(axis=1) > 0) | (c.sum(axis=0) > 0))
        lo, hi = int(present[0]), int(present[-1]) + 1
        table = c[lo:hi, lo:hi].ravel().reshape(hi - lo, hi - lo) / n
        p_o, p_e = float(np.trace(table)), float(table.sum(axis=1) @ table.sum(axis=0))
        return math.nan if math.isclose(p_e, 1.0) else (p_o - p_e) / (1.0 - p_e)

    def table(self, teachers: list[str], latencies: Any, summaries: Any, service: Any = None, wait: Any = None,
              min_pairs: int = MIN_PAIRS) -> dict[str, Any]:
        t = self.t
        kappa = np.full((t, t + 1), math.nan)
        n = self.pair.sum(axis=(2, 3))
        why = []
        for i in range(t):
            for j in range(t + 1):
                kappa[i, j] = self.kappa(i, j) if n[i, j] else math.nan
            why.append([why_not(int(n[i, j]), int((self.pair[i, j].sum(axis=1) > 0).sum()),
                                int((self.pair[i, j].sum(axis=0) > 0).sum()), min_pairs) for j in range(t + 1)])
        rates = [float(self.passed[i] / self.judged[i]) if self.judged[i] else None for i in range(t)]
        return build_table(teachers, kappa, n, why, rates, self.vetoes, self.rejections, self.alpha(), self.n,
                           self.n_ind, latencies, summaries, service, wait)


class Scan:
    """One pass (two, for alpha and the score histogram) over a run's records in input order: the
    teacher table's figures per scope (None: every candidate; else a round) and the plots' counts."""

    def __init__(self, data: Any, rounds: list[int | None], chunk: int = 1 << 15) -> None:
        t = len(data.teachers)
        self.scopes = {r: ScopeStats(t) for r in rounds}
        self.per_set = np.zeros(max(len(data.saved_sets), 1), np.int64)
        self.lo, self.hi = math.inf, -math.inf  # scores
        self.bins = np.zeros(21)  # the score histogram's (set by the second pass)
        self.acc, self.rej = np.zeros(20, np.int64), np.zeros(20, np.int64)
        empty = np.array([s == "[]" for s in data.saved_sets.values] or [True])
        names = data.names.values
        for second in (False, True):
            if second:
                live = [s.second_pass() for s in self.scopes.values()]
                if not any(live) and not data.n:
                    break
                self.bins = np.linspace(min(0.0, self.lo), max(1.0, self.hi), 21)
            for a in range(0, data.n, chunk):
                rows = data.rows(a, a + chunk)
                st, rnd = rows["st"], rows["rnd"]
                raw = [rows[f"l{i}"] for i in range(t)]
                labels = (np.stack([np.where(x <= 1, x, MISSING).astype(np.int8) for x in raw]) if t
                          else np.zeros((0, len(rows)), np.int8))
                panel = np.select([st == 0, st == 1, st == 2], [1, 0, 1], MISSING).astype(np.int8)
                independent = empty[rows["saved"].astype(np.int64)]
                if second:
                    score = rows["score"].astype(float)
                    self.acc += np.histogram(score[(st == 0) | (st == 2)], bins=self.bins)[0]
                    self.rej += np.histogram(score[st == 1], bins=self.bins)[0]
                else:
                    self.per_set[:len(data.saved_sets)] += np.bincount(rows["saved"].astype(np.int64),
                                                                       minlength=len(data.saved_sets))
                    self.lo = min(self.lo, float(rows["score"].min()))
                    self.hi = max(self.hi, float(rows["score"].max()))
                by = rows["by"]
                for r, scope in self.scopes.items():
                    if second and scope.cats is None:
                        continue
                    mask = np.ones(len(rows), bool) if r is None else rnd == r
                    rej = [] if second else [names[b] if b >= 0 else None for b in by[mask & (st == 1)].tolist()]
                    scope.add(labels[:, mask], panel[mask], rej, independent[mask])
