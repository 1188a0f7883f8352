"""``repeats = k``: one seat judged k times with distinct seeds; its verdict is their majority.

Why: a sampled judge (temperature > 0, or an API whose seed is only best effort) can flip its
verdict from one call to the next. Asking it k times and taking the majority turns a coin-flip
verdict into a stable one, at k times the price at most.

The k copies differ only in ``seed`` (``seed``, ``seed + 1``, ...), which is part of each copy's
identity, so each repeat has its own ledger key: a re-run is served from the cache, repeat by
repeat, and repeats are never answered by one another's cache entry.

The seat's verdict: passed iff more than half of its *successful* repeats passed (an even split
fails); score = the mean of the successful repeats' scores; usage = the sum of every repeat's.
With no successful repeat the seat fails (a :class:`~tgrs_agents.errors.TeacherError`).

Early stop (``early_stop``, used when the policy reads passed flags only): once one side holds a
strict majority of k, the remaining repeats cannot change ``passed`` and are not called. This is
exact for ``passed``: at least k//2 + 1 passes out of k means more than half of any set of
successful repeats that contains them. The score would depend on which repeats were called, so
policies that read scores (mean_score, weighted_mean with fixed weights, escalation margins,
best_k) call all k.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from ..errors import CallsStopped, TeacherError
from ..types import Candidate, Usage, Verdict


class Repeated:
    """A seat whose teacher is called up to k times (copies that differ by seed)."""

    inline = False

    def __init__(self, copies: Sequence[Any], *, early_stop: bool) -> None:
        if not copies:
            raise ValueError("repeats needs at least one copy")
        self.copies = list(copies)
        self.k = len(self.copies)
        self.need = self.k // 2 + 1
        self.early_stop = early_stop
        self.calls = 0  # repeat calls made (for the jury report)

    @property
    def name(self) -> str:
        return str(self.copies[0].name)

    @property
    def cost_rank(self) -> int:
        return int(self.copies[0].cost_rank)

    @property
    def config(self) -> Any:
        return self.copies[0].config

    @property
    def paid(self) -> bool:
        return bool(getattr(self.copies[0], "paid", False))

    def estimate(self, candidate: Candidate) -> tuple[int, int]:
        i, o = self.copies[0].estimate(candidate)
        return i * self.k, o * self.k

    @property
    def price(self) -> Any:
        return self.copies[0].price

    def lookup(self, candidate: Candidate) -> Verdict | None:
        return None  # a dry run counts every repeat as a call

    async def _one(self, copy: Any, cand: Candidate) -> Verdict | TeacherError | CallsStopped:
        """One repeat; a failure or a budget stop comes back as a value, so siblings finish."""
        try:
            return await copy.judge(cand)  # type: ignore[no-any-return]
        except (TeacherError, CallsStopped) as e:
            return e

    async def judge(self, candidate: Candidate) -> Verdict:
        got: list[Verdict] = []
        failed: list[TeacherError] = []
        stops: list[CallsStopped] = []
        i = 0
        while i < self.k and not stops:
            n_pass = sum(v.passed for v in got)
            if self.early_stop and max(n_pass, len(got) - n_pass) >= self.need:
                break
            batch = self.k - i if not self.early_stop else min(
                self.k - i, self.need - max(n_pass, len(got) - n_pass))
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._one(c, candidate)) for c in self.copies[i:i + batch]]
            i += batch
            self.calls += batch
            for t in tasks:
                r = t.result()
                if isinstance(r, CallsStopped):
                    stops.append(r)
                elif isinstance(r, TeacherError):
                    failed.append(r)
                else:
                    got.append(r)
        if stops:  # the repeats that did run were paid for: their usage goes on the record
            stop = stops[0]
            stop.usage = self._usage(got, failed) + sum((s.usage or Usage() for s in stops), Usage())
            raise stop
        usage = self._usage(got, failed)
        if not got:
            last = failed[-1]
            raise TeacherError(f"all {len(failed)} repeats failed: {last}", teacher=self.name,
                               kind=last.kind, usage=usage)
        n_pass = sum(v.passed for v in got)
        passed = 2 * n_pass > len(got)
        side = next(v for v in got if v.passed == passed) if any(v.passed == passed for v in got) else got[0]
        why = f"{n_pass} of {len(got)} repeats passed" + (f", {len(failed)} failed" if failed else "")
        return Verdict(teacher=self.name, passed=passed, score=sum(v.score for v in got) / len(got),
                       rationale=f"{why}; {side.rationale}"[:2000], usage=usage,
                       cached=all(v.cached for v in got) and not failed)

    @staticmethod
    def _usage(got: list[Verdict], failed: list[TeacherError]) -> Usage:
        return sum((v.usage for v in got), Usage()) + sum(
            (e.usage for e in failed if isinstance(e.usage, Usage)), Usage())

    def settle(self, candidate: Candidate) -> None:
        """The run journaled this seat's verdict: every repeat's ledger entry is settled."""
        for c in self.copies:
            if hasattr(c, "settle"):
                c.settle(candidate)

    async def aclose(self) -> None:
        for c in self.copies:
            await c.aclose()
