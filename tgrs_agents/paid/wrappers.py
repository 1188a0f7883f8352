"""Cross-cutting concerns as wrappers around a paid teacher, never code inside it.

    Cached(Retrying(Costed(RateLimited(adapter))))

* :class:`RateLimited` takes a concurrency slot, a request token and the estimated tokens from the
  endpoint's shared limiter for *each attempt*, reconciles with the reported usage, and tells the
  limiter about 429s and headers.
* :class:`Costed` checks the budget before each attempt and prices what each attempt used
  (a malformed answer is paid for too).
* :class:`Retrying` runs the one retry policy and adds up the usage of every attempt.
* :class:`Cached` answers from the verdict ledger: a hit makes no call, takes no rate token and
  costs nothing; identical candidates in flight share one call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..errors import BudgetExhausted, TeacherError
from ..types import Candidate, Usage, Verdict
from .cost import Budget
from .ledger import Ledger, content_hash, teacher_key
from .limits import Clock, EndpointLimiter, SystemClock
from .retry import call_with_retries


class Wrapper:
    """Delegates everything but ``judge`` to the wrapped teacher."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def cost_rank(self) -> int:
        return int(self.inner.cost_rank)

    @property
    def inline(self) -> bool:
        return False

    async def aclose(self) -> None:
        await self.inner.aclose()


class RateLimited(Wrapper):
    def __init__(self, inner: Any, limiter: EndpointLimiter) -> None:
        super().__init__(inner)
        self.limiter = limiter
        inner.on_headers = limiter.learn

    async def judge(self, candidate: Candidate) -> Verdict:
        est_in, est_out = self.inner.estimate(candidate)
        await self.limiter.acquire(est_in, est_out)
        used: tuple[int | None, int | None] = (None, None)
        try:
            v: Verdict = await self.inner.judge(candidate)
            used = (v.usage.input_tokens, v.usage.output_tokens)
            self.limiter.on_success()
            return v
        except TeacherError as e:
            if e.kind == "rate_limit":
                self.limiter.on_rate_limited(e.retry_after)
            if isinstance(e.usage, Usage):
                used = (e.usage.input_tokens, e.usage.output_tokens)
            raise
        finally:
            self.limiter.release(est_in, est_out, *used)


class Costed(Wrapper):
    def __init__(self, inner: Any, budget: Budget) -> None:
        super().__init__(inner)
        self.budget = budget

    async def judge(self, candidate: Candidate) -> Verdict:
        price = self.inner.price
        token = self.budget.reserve(price.cost(*self.inner.estimate(candidate)))
        actual = 0.0
        try:
            v: Verdict = await self.inner.judge(candidate)
            actual = price.cost(v.usage.input_tokens, v.usage.output_tokens)
            return v.model_copy(update={"usage": v.usage.model_copy(update={"cost_usd": actual})})
        except TeacherError as e:
            if isinstance(e.usage, Usage):
                actual = price.cost(e.usage.input_tokens, e.usage.output_tokens)
                e.usage = e.usage.model_copy(update={"cost_usd": actual})
            raise
        finally:
            self.budget.settle(token, actual)


class Retrying(Wrapper):
    def __init__(self, inner: Any, clock: Clock | None = None) -> None:
        super().__init__(inner)
        self.clock = clock or SystemClock()
        self.attempts = 0
        self.retries = 0

    async def judge(self, candidate: Candidate) -> Verdict:
        spent: list[Usage] = []
        t0 = time.perf_counter()

        def failed(n: int, e: TeacherError) -> None:
            spent.append(e.usage if isinstance(e.usage, Usage) else Usage(requests=1))

        async def attempt(n: int) -> Verdict:
            self.attempts += 1
            self.retries += n > 1
            return await self.inner.judge(candidate)  # type: ignore[no-any-return]

        try:
            v = await call_with_retries(attempt, self.inner.retry_policy, sleep=self.clock.sleep,
                                        on_failure=failed)
        except TeacherError as e:
            e.usage = sum(spent, Usage())
            e.teacher = self.name
            raise
        except BudgetExhausted as e:
            if not spent:
                raise  # nothing was paid for this candidate: it stays pending
            # earlier attempts were paid: keep their cost on an error verdict (the run still stops,
            # the pipeline sees the refusal on the budget)
            raise TeacherError(f"stopped by the budget after {len(spent)} failed attempt(s): {e}",
                               teacher=self.name, kind="budget", usage=sum(spent, Usage())) from e
        total = sum(spent, v.usage)
        return v.model_copy(update={"usage": total, "latency_s": time.perf_counter() - t0})


class Cached(Wrapper):
    def __init__(self, inner: Any, ledger: Ledger) -> None:
        super().__init__(inner)
        self.ledger = ledger
        identity, prompt_text = inner.cache_identity()
        self._tkey = teacher_key(identity, prompt_text)
        self._inflight: dict[str, asyncio.Future[Verdict]] = {}
        self.hits = 0

    def key(self, candidate: Candidate) -> str:
        return f"{self._tkey[:32]}:{content_hash(candidate)}"

    def lookup(self, candidate: Candidate) -> Verdict | None:
        return self.ledger.get(self.key(candidate))

    async def judge(self, candidate: Candidate) -> Verdict:
        key = self.key(candidate)
        shared = self._inflight.get(key)
        if shared is not None:
            try:
                v = await asyncio.shield(shared)
            except TeacherError as e:
                # the leader's error carries what its attempts cost; the follower paid nothing
                raise TeacherError(str(e), teacher=e.teacher, attempt=e.attempt, status=e.status,
                                   retryable=e.retryable, retry_after=e.retry_after,
                                   kind=e.kind) from None
            self.hits += 1
            return v.model_copy(update={"cached": True, "usage": Usage(), "latency_s": 0.0})
        hit = self.ledger.get(key)
        if hit is not None:
            self.hits += 1
            return hit.model_copy(update={"teacher": self.name, "cached": True, "usage": Usage(),
                                          "latency_s": 0.0})
        fut: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            v = await self.inner.judge(candidate)
        except BaseException as e:
            fut.set_exception(e if isinstance(e, Exception) else TeacherError("cancelled"))
            fut.exception()  # mark retrieved: followers re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(v)
        self.ledger.put(key, v)
        return v
