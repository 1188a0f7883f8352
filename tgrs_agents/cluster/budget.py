"""The worker's side of the run's one budget: a :class:`~tgrs_agents.paid.cost.Budget` whose room
comes from the run's :class:`~.leases.BudgetBook` in allowances.

The wrappers reserve each call's estimate and settle its actual cost on the worker's
:class:`SharedBudget` as on any budget; only when its allowance cannot hold the next estimate does it
ask the book for more (``CHUNK_SHARE`` of the limit, or the estimate if larger), so the book is
asked rarely. When the book has nothing left the call is refused with
:class:`~tgrs_agents.errors.BudgetExhausted`, exactly as a single process refuses it. A worker's
allowance is settled (what it spent, the rest returned) when its shard ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ..errors import BudgetExhausted
from ..paid.cost import Budget


class BookClient(Protocol):
    def reserve(self, usd: float) -> float: ...

    def settle(self, granted: float, spent: float) -> None: ...


@dataclass
class SharedBudget(Budget):
    book: BookClient | None = None
    chunk_share: float = 0.02  # of the limit, per allowance
    allowance_usd: float = 0.0  # granted by the book to this worker, not yet settled
    _base: float | None = field(default=None, repr=False)  # spent_usd before this worker's first call

    def _used(self) -> float:
        return self.spent_usd - (self._base or 0.0) + self.reserved_usd

    def reserve(self, estimate_usd: float) -> int:
        if self.book is None or self.limit_usd is None:
            return super().reserve(estimate_usd)
        if self._base is None:
            self._base = self.spent_usd  # what earlier invocations spent is the book's to know
        short = self._used() + estimate_usd - self.allowance_usd
        if short > 1e-12:
            self.allowance_usd += self.book.reserve(max(short, self.chunk_share * self.limit_usd))
        if self._used() + estimate_usd > self.allowance_usd + 1e-12:
            self.refused += 1
            raise BudgetExhausted(
                f"budget ${self.limit_usd:.4f} (cluster): this worker spent ${self._used():.4f} of its "
                f"${self.allowance_usd:.4f}, none left to grant; next call estimated ${estimate_usd:.4f}")
        self._next += 1
        self._held[self._next] = estimate_usd
        self.reserved_usd += estimate_usd
        return self._next

    def close(self) -> None:
        """Settle the allowance with the book: what was spent, the rest back."""
        if self.book is not None and self.allowance_usd > 0:
            self.book.settle(self.allowance_usd, self.spent_usd - (self._base or 0.0))
            self.allowance_usd = 0.0
            self._base = self.spent_usd
