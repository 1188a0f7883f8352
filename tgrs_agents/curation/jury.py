"""What the panel learns and counts as a jury: reliability over the run's verdicts, escalations,
substitutions, and the refits of ``weights = "auto"``.

Every judged candidate is one row (teacher -> passed, for each teacher heard, reserves under their
own name), from the panel as it decides and from the run's verdict journal. Dawid-Skene
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

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .reliability import Reliability, dawid_skene

REFIT_MIN = 32
REFIT_GROWTH = 1.25


@dataclass
class JuryLog:
    """Every judged candidate's verdicts (teacher -> passed, None for an error), by candidate id.

    Rows come from the panel as it decides (:meth:`observe`) and from the run's verdict journal
    (:meth:`follow`, read incrementally), merged by candidate id: a resumed run's report and its
    refits see the verdicts of earlier sessions too, and a rerun reports what the first run did.
    """

    teachers: list[str]
    gold: set[str] = field(default_factory=set)
    auto: bool = False
    rows: dict[str, dict[str, bool | None]] = field(default_factory=dict)
    fits: int = 0
    fitted_at: int = 0
    _est: Reliability | None = None
    _est_key: int = -1
    _changes: int = 0
    _offset: int = 0

    def observe(self, cand_id: str, verdicts: Iterable[tuple[str, bool | None]]) -> None:
        row = self.rows.setdefault(cand_id, {})
        for teacher, passed in verdicts:
            if teacher in self.teachers and row.get(teacher, "?") != passed:
                row[teacher] = passed
                self._changes += 1

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
                    rec = json.loads(raw)
                    passed = None if rec.get("error") else bool(rec["passed"])
                    self.observe(str(rec["id"]), [(rec["teacher"], passed)])
                except (ValueError, KeyError, TypeError):
                    continue  # a damaged line: the store sets those aside

    def _votes(self) -> list[dict[str, bool]]:
        return [{t: p for t, p in r.items() if p is not None} for r in self.rows.values()]

    def refit_due(self) -> bool:
        n = len(self.rows)
        return self.auto and n >= max(REFIT_MIN, math.ceil(REFIT_GROWTH * self.fitted_at))

    def refit(self) -> Reliability:
        rel = self.estimate()
        assert rel is not None
        self.fits += 1
        self.fitted_at = len(self.rows)
        return rel

    def estimate(self) -> Reliability | None:
        """Dawid-Skene over the rows so far (cached until a verdict arrives); None before any."""
        if not self.rows:
            return None
        if self._est_key != self._changes:
            self._est = dawid_skene(self._votes(), self.teachers, gold=self.gold)
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
        out: dict[str, Any] = {
            "candidates": len(self.rows),
            "reliability": rel.to_json() if rel is not None else None,
            "weights_source": source,
            "weights": ({t: round(w, 4) for t, w in policy.reliability.weights().items()}
                        if policy.reliability is not None else dict(policy.weights) or None),
            "judge_errors": sum(p is None for r in self.rows.values() for p in r.values()),
            "substitutions": sum(t not in seats for r in self.rows.values() for t in r),
        }
        if esc:
            out["escalated"] = sum(any(t in esc for t in r) for r in self.rows.values())
            out["not_escalated"] = len(self.rows) - out["escalated"]
        group_stats = {name: st for name, st in groups if st.get("calls")}
        if group_stats:
            out["group"] = group_stats  # this session's calls
        return out
