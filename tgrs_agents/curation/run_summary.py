"""The curate run's figures (``summary.json``), as a part of :class:`~tgrs_agents.curation.run.CurateRun`:
the counts, the input's format and set-aside share, per teacher calls, cost and saved calls, the jury
(Dawid-Skene over the verdict journal), the limits that bound each paid teacher, the budget, and the
wall time over every invocation of the directory. Written every few seconds while the run goes (the
jury section is refitted only for the final one) and once at its end.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..events import WallTime
from ..paid.services import Services
from .batching import BatchStage
from .memo import add_counts
from .panel import Panel
from .panel_file import PanelConfig
from .store import RunStore

if TYPE_CHECKING:
    from .run import CurateOptions


class RunFigures:
    """``summary()`` and its parts; :class:`~tgrs_agents.curation.run.CurateRun` holds the state."""

    store: RunStore
    opts: CurateOptions
    cfg: PanelConfig
    panel: Panel | None
    services: Services
    counts: dict[str, int]
    stopped: str | None
    format: Any
    format_why: str
    _jury_last: dict[str, Any] | None
    _journal_fresh: bool
    _batches: BatchStage | None
    _wall: WallTime
    _cost_before: float
    _memo_before: dict[str, int]

    def _previous_summary(self) -> dict[str, Any] | None:
        """The summary an earlier invocation left (its wall time per invocation); None if unreadable."""
        try:
            doc = json.loads(self.store.files.summary.read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def limits(self) -> dict[str, Any]:
        """Per paid teacher: the share of its call time spent waiting for the endpoint's limiter, the
        limit that binds and whose it is (tgrs_agents.paid.wrappers.limit_report)."""
        assert self.panel is not None
        out = {}
        for t in [*self.panel.teachers, *self.panel.reserves]:
            rep = t.limit_report() if hasattr(t, "limit_report") else None
            if rep is not None:
                out[t.name] = rep
        return out

    def _jury(self, final: bool) -> dict[str, Any] | None:
        assert self.panel is not None
        if final:  # the journal adds earlier sessions' verdicts, and those of candidates left undecided
            fresh = self._journal_fresh and not self.stopped
            self._jury_last = self.panel.jury_report(None if fresh else self.store.path("verdicts"))
        return self._jury_last

    def summary(self, final: bool = True) -> dict[str, Any]:
        """The run's figures. An interim summary (``final=False``, written every few seconds while the
        run goes) keeps the jury section of the last final one: re-fitting Dawid-Skene over the whole
        verdict journal each time cost a fifth of a verifier-only run."""
        c = dict(self.counts)
        assert self.panel is not None
        teachers = {name: st.to_json() for name, st in self.panel.stats.items()}
        cost = sum(st.cost_usd for st in self.panel.stats.values())
        spent = max(cost - self._cost_before, 0.0)
        limit = self.services.budget.limit_usd
        limits = self.limits()
        decided = c["accepted"] + c["rejected"] + c["passed"]
        share = c["invalid"] / (c["valid"] + c["invalid"]) if c["valid"] + c["invalid"] else 0.0
        return {
            **c,
            "input_format": self.format.name if self.format is not None else None,
            "input_format_why": self.format_why,
            "set_aside_share": round(share, 4),
            "set_aside_warning": (
                f"{c['invalid']} of {c['valid'] + c['invalid']} records ({share:.0%}) were set aside, more "
                f"than {self.opts.max_set_aside:.0%}: is the input format right? (read as "
                f"{self.format.name if self.format is not None else '?'}; see invalid.jsonl)"
            ) if share > self.opts.max_set_aside else None,
            "pending": c["valid"] - decided,
            "policy": self.panel.policy.describe(),
            "best_k": self.cfg.best_k,
            "finalized": self.cfg.best_k is None or self.store.finalized(),
            "stopped": self.stopped,
            "warnings": list(self.store.warnings),  # what recovery set aside or rebuilt
            "teachers": teachers,
            "calls": sum(st.calls for st in self.panel.stats.values()),
            "calls_saved": sum(st.saved for st in self.panel.stats.values()),
            "memo_hits": add_counts(self._memo_before, self.panel.memo_hits),  # see curation.memo
            "jury": self._jury(final),
            "sandbox": {t.name: t.isolation() for t in self.panel.teachers if hasattr(t, "isolation")},
            "cost_usd": round(cost, 6),  # the run's, every invocation: what the budget caps
            "cost_usd_invocation": round(spent, 6),  # this invocation's
            "budget_usd": limit,  # as given to this invocation
            "budget_used": round(cost / limit, 4) if limit else None,
            "limits": limits,
            "batches": self._batches.report() if self._batches is not None else None,
            "limit_notes": [r["note"] for r in limits.values() if r.get("note")],
            "rate_limited": sum(lim.stats.rate_limited for lim in self.services.limiters.all().values()),
            "cost_per_accepted_usd": round(cost / c["accepted"], 6) if c["accepted"] else None,
            **self._wall.to_json(),  # wall_s: every invocation of this directory; and this one's
        }


