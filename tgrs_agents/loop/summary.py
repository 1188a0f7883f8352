"""What the loop says and keeps as it goes, as a part of :class:`~tgrs_agents.loop.rounds.ExpertIteration`:
``summary.json`` rewritten after every round (the arm, one entry per round, the cost, the wall time over
every invocation), the HTML report beside it, and one line per round (pass@1 and pass@k with their
standard errors, what was accepted and pooled, what it paid).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..curation.layout import LoopDir
from ..curation.store import atomic_write
from .budget import RunBudgetGuard, spend_by_round, total_spent
from .config import LoopConfig
from .stages import Round


def _pm(value: float, se: float | None) -> str:
    """``0.941 ± 0.012`` (the value alone when its standard error is unknown)."""
    return f"{value:.3f}" if se is None else f"{value:.3f} ± {se:.3f}"


def _paid(r: Round) -> str:
    """``, paid $0.0123 ($0.0004 per accepted)`` for a round that paid for something."""
    total = sum((r.cost or {}).values())
    if total <= 0:
        return ""
    per = f" (${total / r.judged.accepted:.4f} per accepted)" if r.judged and r.judged.accepted else ""
    return f", paid ${total:.4f}{per}"


class RunSummary:
    """``summary.json``, the report and the round lines; :class:`~tgrs_agents.loop.rounds.ExpertIteration`
    holds the state."""

    cfg: LoopConfig
    dir: Path
    layout: LoopDir
    guard: RunBudgetGuard | None
    _limit: float | None
    log: Callable[[str], None]
    arm: Any  # ExpertIteration's property: "filtered" or "accept_all"

    def _cost(self, rnd: int) -> dict[str, float]:
        return spend_by_round(self.dir).get(rnd, {})

    def summary(self, rounds: list[Round], t0: float, stopped: str | None = None) -> dict[str, Any]:
        """``summary.json``: the arm, k, one entry per round, the cost and the wall time so far;
        ``stopped``: why the run stopped before its last round (the budget), else None."""
        spent = total_spent(self.dir)
        before = self.guard.spent_before if self.guard is not None else 0.0
        accepted = sum(r.judged.accepted for r in rounds if r.judged is not None)
        s = {"arm": self.arm, "method": self.cfg.train.method, "eval_k": self.cfg.eval_k,
             "rounds": [r.to_json() for r in rounds], "cost_usd": round(spent, 6),
             "cost_usd_invocation": round(max(spent - before, 0.0), 6), "budget_usd": self._limit,
             "cost_per_accepted_usd": round(spent / accepted, 6) if accepted else None, "stopped": stopped,
             **self._walls(t0).to_json()}
        atomic_write(self.layout.summary, json.dumps(s, indent=2))
        return s

    def _walls(self, t0: float) -> Any:
        """Wall time over every invocation on this directory (a re-run adds to it, never resets it):
        the earlier invocations' come from the summary.json they left, read once per invocation."""
        from ..events import WallTime

        if getattr(self, "_wall", None) is None:
            try:
                prev = json.loads(self.layout.summary.read_text())
            except (OSError, ValueError):
                prev = None
            self._wall = WallTime.resume(prev if isinstance(prev, dict) else None)
            self._wall.t0 -= time.perf_counter() - t0  # this invocation began at t0
        return self._wall

    def _report(self, rounds: list[Round], t0: float) -> None:
        from ..report.html import maybe_write_report

        self.summary(rounds, t0)
        maybe_write_report(self.dir, log=self.log)
        r, k = rounds[-1], self.cfg.eval_k
        extra = ""
        if r.generated and r.judged and r.pooled:
            extra = (f", accepted {r.judged.accepted}/{r.generated.samples} ({r.judged.acceptance_rate:.0%})"
                     f", pool {r.pooled.pooled}")
        if r.trained and r.trained.carried_over:
            extra += ", nothing to train on: the student carries over"
        if r.paired is not None and r.preferred is not None:
            extra += (f", {r.paired.pairs} pairs" + (": no pairs, DPO carries the model over"
                                                    if r.preferred.carried_over else ""))
        self.log(f"[tgrs] round {r.round}: pass@1 {_pm(r.eval.pass1, r.eval.pass1_se)}, "
                 f"pass@{k} {_pm(r.eval.passk, r.eval.passk_se)}{extra}{_paid(r)} ({time.perf_counter() - t0:.0f}s)")
