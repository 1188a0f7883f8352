"""What a ``tgrs run`` has paid for, and the one budget over all of it (``[budget] usd``, ``--budget-usd``).

Everything a run pays for counts against one cap, across rounds and invocations: the panel's API judges
(each round's curate run), the refiner, a served student and the ``[eval] panel``'s API judges. What
was spent is read back from the run directory, never kept in memory alone:

* a round's judge stage is a curate run (``round-K/curate/``) that journals its own cost; the loop
  gives it what is left of the budget (``tgrs curate --budget-usd`` caps a directory's total over its
  invocations), so it stops itself at the cap and resumes inside itself with a larger one;
* every other paid call settles on a :class:`RunBudget`, which appends the call's cost, with its
  round and stage, to ``spend.jsonl`` the moment the call ends (so a stage killed mid-way still counts
  what it paid); with services of the caller's own, each stage's spend goes there in one line as it ends.

A stage that could pay and cannot be resumed inside itself (refine, a served student's sampling, an API
eval panel) starts only when its upper bound (:mod:`tgrs_agents.loop.dryrun`) fits in what is left;
otherwise the run stops before it (:class:`BudgetStop`), at a stage boundary, and the same command with
a larger budget resumes there. The judge stage starts whenever it might be free (verdicts in the
ledger cost nothing) and stops itself at the cap. The budget is operational: it stays out of the
run's fingerprint (:mod:`tgrs_agents.loop.config`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BudgetExhausted, TgrsError
from ..paid.cost import Budget

SPEND_FILE = "spend.jsonl"  # one line per paid call outside the judge stage: round, stage, usd
EPS = 1e-9
RESUMABLE = frozenset({"judge"})  # stages that resume inside themselves (the judge stage is a curate run)
T = TypeVar("T")


class BudgetStop(TgrsError):
    """The run's budget is reached: the run stopped at a stage boundary (its directory resumes)."""

    def __init__(self, message: str, *, round: int, stage: str) -> None:
        self.round = round
        self.stage = stage
        super().__init__(message)


@dataclass
class RunBudget(Budget):
    """The run's :class:`~tgrs_agents.paid.cost.Budget` whose settled costs go to ``journal`` as they
    happen, labelled with the stage now running (``where``: round, stage)."""

    journal: Path | None = None
    where: tuple[int, str] = (0, "")
    _file: Any = field(default=None, repr=False)

    def settle(self, token: int, actual_usd: float) -> None:
        super().settle(token, actual_usd)
        if self.journal is None or actual_usd <= 0:
            return
        if self._file is None:
            self.journal.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.journal.open("a", encoding="utf-8")
        rnd, stage = self.where
        self._file.write(json.dumps({"round": rnd, "stage": stage, "usd": actual_usd}) + "\n")
        self._file.flush()  # written as it is paid: a kill loses none of it

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def curate_cost(curate_dir: Path) -> float:
    """What a round's judge stage (a curate run) has paid in all, from its ``summary.json``."""
    try:
        doc = json.loads((curate_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return 0.0
    return float(doc.get("cost_usd") or 0.0) if isinstance(doc, dict) else 0.0


def spend_by_round(run_dir: Path) -> dict[int, dict[str, float]]:
    """Cost per round and stage so far: ``spend.jsonl`` plus each round's curate run (stage ``judge``)."""
    out: dict[int, dict[str, float]] = {}
    journal = run_dir / SPEND_FILE
    if journal.exists():
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                rnd, stage, usd = int(rec["round"]), str(rec["stage"]), float(rec["usd"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
            st = out.setdefault(rnd, {})
            st[stage] = st.get(stage, 0.0) + usd
    for rd in sorted(run_dir.glob("round-*")):
        num = rd.name.removeprefix("round-")
        if num.isdigit() and (cost := curate_cost(rd / "curate")) > 0:
            st = out.setdefault(int(num), {})
            st["judge"] = st.get("judge", 0.0) + cost
    return out


def total_spent(run_dir: Path) -> float:
    return sum(sum(st.values()) for st in spend_by_round(run_dir).values())


def usd(x: float | None) -> str:
    return "no cap" if x is None else f"${x:.4f}"


class RunBudgetGuard:
    """The loop's side of the budget: what is left, and whether a stage may start."""

    def __init__(self, run_dir: Path, limit_usd: float | None, budget: Budget) -> None:
        self.dir = Path(run_dir)
        self.limit = limit_usd
        self.budget = budget
        budget.limit_usd = limit_usd
        self.spent_before = total_spent(self.dir)  # what earlier invocations paid

    def refresh(self, rnd: int, stage: str) -> float:
        """Point the run's budget at what the directory says was spent; label what follows."""
        self.budget.spent_usd = total_spent(self.dir)
        if isinstance(self.budget, RunBudget):
            self.budget.where = (rnd, stage)
        return self.budget.spent_usd

    def left(self) -> float | None:
        return None if self.limit is None else max(self.limit - self.budget.spent_usd, 0.0)

    def check(self, rnd: int, stage: str, bound_usd: float) -> None:
        """Refuse to start a stage that cannot resume inside itself when its bound does not fit."""
        spent = self.refresh(rnd, stage)
        left = self.left()
        if left is None or bound_usd <= EPS or bound_usd <= left + EPS:
            return
        raise BudgetStop(self.line(rnd, stage, spent, f"its upper bound ${bound_usd:.4f} does not fit in the "
                                   f"${left:.4f} left"), round=rnd, stage=stage)

    def line(self, rnd: int, stage: str, spent: float, why: str, *, during: bool = False) -> str:
        """The one line a budget stop prints."""
        where = "in" if during else "before"
        room = " (the rest is held for calls under way or too little for the next)" if during else ""
        return (f"budget {usd(self.limit)} reached: spent ${spent:.4f}{room}; stopped {where} round {rnd}'s {stage} "
                f"stage ({why}). Run the same command with a larger budget (--budget-usd or [budget] usd) "
                "to resume: nothing paid for is paid again")

    def run(self, rnd: int, stage: str, fn: Callable[[], T], bound: Callable[[], float]) -> T:
        """Run a stage within the budget. One that cannot resume inside itself starts only if its
        upper bound (``bound()``, computed only under a cap) fits in what is left; a call the budget
        refuses during the stage stops the run there, the stage's marker unwritten (its spend stays
        counted in ``spend.jsonl``)."""
        if self.limit is not None and stage not in RESUMABLE:
            self.check(rnd, stage, bound())
        start = self.refresh(rnd, stage)
        refused = self.budget.refused
        try:
            out = fn()
        except BudgetExhausted as e:
            raise BudgetStop(self.line(rnd, stage, self.budget.spent_usd, str(e), during=True),
                             round=rnd, stage=stage) from None
        finally:  # a budget of the caller's own (not a RunBudget): the stage's spend in one line
            if not isinstance(self.budget, RunBudget) and self.budget.spent_usd - start > EPS:
                with (self.dir / SPEND_FILE).open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"round": rnd, "stage": stage, "usd": self.budget.spent_usd - start}) + "\n")
        if self.budget.refused > refused:  # a call was refused and the stage went on without it
            raise BudgetStop(self.line(rnd, stage, self.budget.spent_usd, "a call did not fit", during=True),
                             round=rnd, stage=stage)
        return out
