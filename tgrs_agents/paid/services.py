"""Run-wide services that every paid call shares: limiters per endpoint, the budget, the ledger,
the retry policy, time.

One :class:`Services` per run, handed to whatever makes paid calls (the panel's judges, the
OpenAI-compatible generator, the refiner), so they share one limiter per endpoint, one retry
policy, one budget and one ledger. The retry policy is injected here (tests shorten its back-off
with ``Services(retry=RetryPolicy(initial_s=0.01))``); an adapter's own ``max_attempts`` still
bounds its attempts. Each endpoint also gets one circuit breaker (:mod:`tgrs_agents.paid.breaker`):
``breaker_failures`` attempts in a row without an answer, or one 401/403, halt its calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import Halted
from .breaker import Breaker
from .call import PaidAdapter, PaidJudge
from .cost import Budget
from .ledger import Ledger
from .limits import Clock, LimiterRegistry, SystemClock
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .wrappers import PaidStack, PaidTeacher

Req = TypeVar("Req")
T = TypeVar("T")
Teacher_ = TypeVar("Teacher_")


@dataclass
class Services:
    clock: Clock = field(default_factory=SystemClock)
    budget: Budget = field(default_factory=Budget)
    ledger: Ledger | None = None
    limiters: LimiterRegistry = field(default_factory=LimiterRegistry)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker_failures: int = 20  # attempts in a row without an answer that halt an endpoint
    breakers: dict[str, Breaker] = field(default_factory=dict)
    # makes the ledger layer (default: wrappers.Cached); a cluster worker claims content cluster-wide
    cache_factory: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        self.limiters.clock = self.clock

    def breaker(self, endpoint_key: str) -> Breaker:
        """The circuit breaker of an endpoint, shared by every adapter on it."""
        if endpoint_key not in self.breakers:
            self.breakers[endpoint_key] = Breaker(self.breaker_failures)
        return self.breakers[endpoint_key]

    def halted(self) -> Halted | None:
        """Why paid calls were halted (an endpoint down, a ledger that failed), if they were."""
        for b in self.breakers.values():
            if b.down is not None:
                return b.down
        if self.ledger is not None and self.ledger.failure is not None:
            return Halted(f"{self.ledger.path}: {self.ledger.advice(self.ledger.failure)}")
        return None

    def policy_for(self, adapter: PaidAdapter[Req, T]) -> RetryPolicy:
        """The run's policy, bounded by the adapter's own ``max_attempts`` when it has one."""
        if adapter.max_attempts is None:
            return self.retry
        return dataclasses.replace(self.retry, max_attempts=adapter.max_attempts)

    def stack(self, adapter: PaidAdapter[Req, T]) -> PaidStack[Req, T]:
        """``adapter`` inside the layer: Retrying(Costed(RateLimited(adapter))), never cached."""
        from .wrappers import Costed, PaidStack, RateLimited, Retrying  # tenacity: on first use

        limiter = self.limiters.get(adapter.endpoint_key, adapter.limits)
        limited = RateLimited(adapter, limiter, self.breaker(adapter.endpoint_key))
        outer = Retrying(Costed(limited, self.budget, adapter.price, adapter.estimate),
                         self.policy_for(adapter), sleep=self.clock.sleep, name=adapter.name)
        return PaidStack(adapter, limiter, outer)

    def wrap(self, teacher: Teacher_) -> Teacher_ | PaidTeacher:
        """A paid judge inside the layer, with the ledger outermost when there is one and the
        judge declares a cache identity; any other teacher as it is."""
        if not isinstance(teacher, PaidJudge):
            return teacher
        from .wrappers import Cached, PaidTeacher

        stack = self.stack(teacher)
        identity = teacher.cache_identity()
        cache = None
        if self.ledger is not None and identity is not None:
            cache = (self.cache_factory or Cached)(stack, self.ledger, identity, budget=self.budget,
                                                   name=teacher.name)
        return PaidTeacher(teacher, stack, cache)

    def close(self) -> None:
        if self.ledger is not None:
            self.ledger.close()
