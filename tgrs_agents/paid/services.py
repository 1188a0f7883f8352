"""Run-wide services that paid teachers share: limiters per endpoint, the budget, the ledger, time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cost import Budget
from .ledger import Ledger
from .limits import Clock, LimiterRegistry, SystemClock


@dataclass
class Services:
    clock: Clock = field(default_factory=SystemClock)
    budget: Budget = field(default_factory=Budget)
    ledger: Ledger | None = None
    limiters: LimiterRegistry = field(default_factory=LimiterRegistry)

    def __post_init__(self) -> None:
        self.limiters.clock = self.clock

    def wrap(self, teacher: Any) -> Any:
        """Wrap a paid teacher: Cached(Retrying(Costed(RateLimited(adapter)))); others as they are."""
        if not getattr(teacher, "paid", False):
            return teacher
        from .wrappers import Cached, Costed, RateLimited, Retrying

        limiter = self.limiters.get(teacher.endpoint_key, teacher.limits)
        t: Any = Retrying(Costed(RateLimited(teacher, limiter), self.budget), self.clock)
        return Cached(t, self.ledger) if self.ledger is not None else t

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
