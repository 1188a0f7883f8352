"""What the panel learns and counts as a jury: reliability over the run's verdicts, escalations,
substitutions, and the refits of ``weights = "auto"``.

Every judged candidate is one verdict pattern (teacher -> passed, failed, error or not heard,
reserves under their own name), from the panel as it decides or from the run's verdict journal,
kept as counts of patterns (at most 4^n for n teachers), never one row per candidate. Dawid-Skene
(:mod:`.reliability`) over those rows gives each teacher's sensitivity and specificity with an
interval; the run's summary reports them (``jury`` in summary.json).

``weights = "auto"``: the policy's reliability is refit from the rows so far whenever the number of
decided candidates has grown by a quarter since the last fit, the first time at 32 (so 32, 40, 50,
63, ...: O(log n) fits, each over distinct verdict patterns, so a fit takes milliseconds whatever
the run's size). Before the first fit every teacher counts as right 4 times in 5 (a majority vote).
Each candidate is judged with the policy of the moment it started (the short-circuit stays exact
for it). Why adaptive rather than fixed: the first run of a new panel has no labels, and the run's
own verdicts are the only evidence of which judge to trust. Its costs, stated plainly: decisions
depend on the order candidates were judged; a resumed run relearns from the journal (merged at its
first summary); and the verdicts a cascade leaves behind do not identify every rate (a judge asked
only when the others disagree is seen only on hard cases), so a share of the candidates
(``audit``, 0.1 by default with "auto") is judged by every seat (see :mod:`.panel`). For a
reproducible run, freeze the weights: ``tgrs calibrate PANEL LABELLED.jsonl --out
calibration.json`` and ``weights = "calibration.json"``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from .reliability import Reliability, dawid_skene

REFIT_MIN = 32
REFIT_GROWTH = 1.25


_NOT_HEARD, _FAIL, _PASS, _ERROR = -1, 0, 1, 2
_CODE = {None: _ERROR, False: _FAIL, True: _PASS}  # a verdict as it is kept
_BYTE = {_ERROR: 1, _FAIL: 2, _PASS: 3}  # ... and in the journal's per-line arrays (0: not heard)
_DECODE = {0: _NOT_HEARD, 1: _ERROR, 2: _FAIL, 3: _PASS}
EXACT_UP_TO = 4096  # candidates kept one by one (by id); past this, counts of patterns only


@dataclass
class JuryLog:
    """The judged candidates' verdict patterns (per teacher: passed, failed, error or not heard).

    Rows come from the panel as it decides (:meth:`observe`) and from the run's verdict journal
    (:meth:`follow`, read incrementally), merged by candidate id: a resumed run's report and its
    refits see the verdicts of earlier sessions too, and a rerun reports what the first run did.

    Memory does not grow with the run: up to ``EXACT_UP_TO`` candidates are kept by id (one shared
    pattern tuple each); past that only the count of each pattern is kept, and a journal followed
    then is read as one byte per teacher and input line and taken as the whole record -- the run
    journals every verdict before the panel observes it, so the journal covers what was observed.
    """

    teachers: list[str]
    gold: set[str] = field(default_factory=set)
    auto: bool = False
    rows: dict[str, tuple[int, ...]] | None = field(default_factory=dict)  # None: past EXACT_UP_TO
    observed: Counter[tuple[int, ...]] = field(default_factory=Counter)
    fits: int = 0
    fitted_at: int = 0
    _est: Reliability | None = None
    _est_key: int = -1
    _changes: int = 0
    _offset: int = 0
    _lines: list[bytearray] | None = None  # the journal, per teacher and line (0 or a _BYTE code)
    _count_key: int = -1
    _count: int = 0

    def __post_init__(self) -> None:
        self._index = {t: j for j, t in enumerate(self.teachers)}
        self._shared: dict[tuple[int, ...], tuple[int, ...]] = {}

    def _pattern(self, pat: list[int]) -> tuple[int, ...]:
        t = tuple(pat)
        return self._shared.setdefault(t, t)

    def _merge(self, cand_id: str, heard: Iterable[tuple[int, int]]) -> None:
        assert self.rows is not None
        old = self.rows.get(cand_id)
        pat = list(old) if old is not None else [_NOT_HEARD] * len(self.teachers)
        for j, code in heard:
            pat[j] = code
        new = self._pattern(pat)
        if new != old:
            self.rows[cand_id] = new
            self._changes += 1

    def observe(self, cand_id: str, verdicts: Iterable[tuple[str, bool | None]]) -> None:
        heard = [(self._index[t], _CODE[p]) for t, p in verdicts if t in self._index]
        pat = [_NOT_HEARD] * len(self.teachers)
        for j, code in heard:
            pat[j] = code
        self.observed[self._pattern(pat)] += 1
        self._changes += 1
        if self.rows is not None:
            self._merge(cand_id, heard)
            if len(self.rows) > EXACT_UP_TO and self._lines is None:
                self.rows = None  # large: the observed counts (and later the journal) stand for them

    def follow(self, path: Path) -> None:
        """Read the verdict records appended to ``path`` since the last call (whole lines only)."""
        try:
            f = path.open("rb")
        except OSError:
            return
        with f:
            f.seek(self._offset)
            for raw in f:
                if not raw.endswith(b"\n"):
                    break  # being written: read it next time
                self._offset += len(raw)
                try:
                    rec = orjson.loads(raw)
                    j = self._index.get(rec["teacher"])
                    code = _ERROR if rec.get("error") else _PASS if rec["passed"] else _FAIL
                    key, line = str(rec["id"]), rec.get("line")
                except (ValueError, KeyError, TypeError):
                    continue  # a damaged line: the store sets those aside
                if j is None:
                    continue
                if self.rows is not None:
                    self._merge(key, [(j, code)])
                    if len(self.rows) <= EXACT_UP_TO:
                        continue
                    self.rows = None  # large: from here on the journal alone, read again from its start
                    self._offset, self._lines = 0, [bytearray() for _ in self.teachers]
                    return self.follow(path)
                if isinstance(line, int) and line >= 0:
                    self._put(j, line, code)

    def _put(self, j: int, line: int, code: int) -> None:
        if self._lines is None:
            self._lines = [bytearray() for _ in self.teachers]
        arr = self._lines[j]
        if len(arr) <= line:
            arr.extend(bytes(line + 1 - len(arr)))
        arr[line] = _BYTE[code]  # a later verdict (a resumed session's) replaces it
        self._changes += 1

    def patterns(self) -> Counter[tuple[int, ...]]:
        """How many candidates had each pattern (per teacher: 1 passed, 0 failed, 2 error, -1 not heard)."""
        if self.rows is not None:
            return Counter(self.rows.values())
        if self._lines is None:
            return self.observed
        n = max((len(a) for a in self._lines), default=0)
        cols = [bytes(a) + bytes(n - len(a)) for a in self._lines]
        raw: Counter[tuple[int, ...]] = Counter(zip(*cols, strict=True))
        raw.pop(tuple(0 for _ in cols), None)  # lines no teacher judged
        return Counter({tuple(_DECODE[b] for b in pat): k for pat, k in raw.items()})

    @property
    def candidates(self) -> int:
        if self.rows is not None:
            return len(self.rows)
        if self._lines is None:
            return sum(self.observed.values())
        if self._count_key != self._changes:
            self._count, self._count_key = sum(self.patterns().values()), self._changes
        return self._count

    def refit_due(self) -> bool:
        return self.auto and self.candidates >= max(REFIT_MIN, math.ceil(REFIT_GROWTH * self.fitted_at))

    def refit(self) -> Reliability:
        rel = self.estimate()
        assert rel is not None
        self.fits += 1
        self.fitted_at = self.candidates
        return rel

    def estimate(self) -> Reliability | None:
        """Dawid-Skene over the patterns so far (cached until a verdict arrives); None before any."""
        if self._est_key == self._changes:
            return self._est
        pats = self.patterns()
        if not pats:
            return None
        votes: Counter[tuple[int, ...]] = Counter()
        for pat, k in pats.items():
            votes[tuple(_NOT_HEARD if v == _ERROR else v for v in pat)] += k
        self._est = dawid_skene((), self.teachers, gold=self.gold, patterns=votes)
        self._est_key = self._changes
        return self._est

    def report(self, policy: Any, groups: Iterable[tuple[str, Mapping[str, Any]]] = ()) -> dict[str, Any]:
        """The ``jury`` section of summary.json (every count is read off the rows)."""
        rel = self.estimate()
        if policy.reliability is not None and self.auto:
            source = (f"auto: refit {self.fits} times in this session (last at {self.fitted_at} "
                      f"candidates; whenever the judged candidates grow by a quarter, first at {REFIT_MIN})")
        elif policy.reliability is not None:
            source = f"calibration: {policy.reliability.source}"
        elif policy.name == "weighted_mean":
            source = "fixed (panel file)"
        else:
            source = None
        esc, seats = set(policy.escalate), set(policy.teachers)
        pats = self.patterns()
        heard = [(k, [t for t, v in zip(self.teachers, pat, strict=True) if v != _NOT_HEARD], pat)
                 for pat, k in pats.items()]
        n = sum(pats.values())
        out: dict[str, Any] = {
            "candidates": n,
            "reliability": rel.to_json() if rel is not None else None,
            "weights_source": source,
            "weights": ({t: round(w, 4) for t, w in policy.reliability.weights().items()}
                        if policy.reliability is not None else dict(policy.weights) or None),
            "judge_errors": sum(k * pat.count(_ERROR) for k, _, pat in heard),
            "substitutions": sum(k * sum(t not in seats for t in ts) for k, ts, _ in heard),
        }
        if esc:
            out["escalated"] = sum(k for k, ts, _ in heard if any(t in esc for t in ts))
            out["not_escalated"] = n - out["escalated"]
        group_stats = {name: st for name, st in groups if st.get("calls")}
        if group_stats:
            out["group"] = group_stats  # this session's calls
        return out
