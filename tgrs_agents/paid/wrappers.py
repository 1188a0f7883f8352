"""The paid-call layer: cross-cutting concerns as wrappers around an adapter, never code inside it.

    Cached(Retrying(Costed(RateLimited(adapter))))      Cached only for judges with a ledger

Each layer is a :class:`~tgrs_agents.paid.call.PaidCall` (``await layer.call(request) -> Paid``):

* :class:`RateLimited` takes a concurrency slot, a request token and the estimated tokens from the
  endpoint's shared limiter for *each attempt*, reconciles with the reported usage, and hands the
  response's headers (a 429's too) and any 429 to the limiter. With the endpoint's
  :class:`~tgrs_agents.paid.breaker.Breaker` it sends nothing once the endpoint refused the key or
  stopped answering (:class:`~tgrs_agents.errors.Halted`). It times each attempt on the limiter's
  clock: the wait for the permit apart from the remote call (:class:`Timing`), so a judge's latency
  reads as service time plus time queued in this process, and :func:`limit_report` can say which
  limit held the calls back and whether it was the user's own ``rpm``/``tpm`` or the provider's.
* :class:`Costed` reserves the estimate on the budget before each attempt (a refusal raises
  :class:`~tgrs_agents.errors.BudgetExhausted`) and prices what each attempt used, malformed
  output included.
* :class:`Retrying` runs the one retry policy and adds up the usage of every attempt.
* :class:`Cached` answers a judge from the verdict ledger: a hit makes no call, takes no rate
  token and costs nothing (except the run's own verdict that its journal never got: its cost is
  counted once, see :mod:`~tgrs_agents.paid.ledger`); identical candidates in flight share one
  call. A ledger that fails halts the calls (a paid verdict it could not store is still returned).

:class:`PaidStack` is an adapter inside the layer (what :meth:`Services.stack` builds), and
:class:`PaidTeacher` shows a paid judge to the panel as a teacher (``judge(candidate)``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Generic, TypeVar

from ..errors import BudgetExhausted, CallsStopped, Halted, TeacherError
from ..types import Candidate, Usage, Verdict
from .breaker import Breaker, Endpoint
from .call import CacheIdentity, Paid, PaidAdapter, PaidCall, PaidJudge
from .cost import Budget, Price
from .ledger import Ledger, content_hash, teacher_key
from .limits import EndpointLimiter
from .retry import RetryPolicy, call_with_retries
from .timing import _TIMING, Timing, limit_report, record

Req = TypeVar("Req")
T = TypeVar("T")


def _tokens(usage: Usage | None) -> tuple[int | None, int | None]:
    return (None, None) if usage is None else (usage.input_tokens, usage.output_tokens)


class RateLimited(Generic[Req, T]):
    """The innermost layer: the endpoint's limiter around each attempt of ``adapter``."""

    def __init__(self, adapter: PaidAdapter[Req, T], limiter: EndpointLimiter,
                 breaker: Breaker | None = None) -> None:
        self.adapter = adapter
        self.limiter = limiter
        self.breaker = breaker
        self.who = Endpoint.of(adapter)
        self.timing = Timing()  # every attempt of this adapter, for the limit report

    async def call(self, request: Req) -> Paid[T]:
        if self.breaker is not None:
            self.breaker.check()
        est_in, est_out = self.adapter.estimate(request)
        clock = self.limiter.clock  # virtual in tests, so the split is exact there
        t0 = clock.now()
        permit = await self.limiter.acquire(est_in, est_out)
        t1 = clock.now()
        used: Usage | None = None
        try:
            if self.breaker is not None:
                self.breaker.check()  # it may have tripped while this attempt waited for a permit
            result = await self.adapter.call(request)
        except TeacherError as e:
            used = e.usage
            if e.headers:
                self.limiter.learn(e.headers)  # a 429 states the limit it enforces
            if e.kind == "rate_limit":
                self.limiter.on_rate_limited(e.retry_after)
            if self.breaker is not None:
                self.breaker.failed(e, self.who)  # a 401, or too many attempts without an answer
            raise
        else:
            used = result.usage
            if result.headers:
                self.limiter.learn(result.headers)
            self.limiter.on_success()
            if self.breaker is not None:
                self.breaker.ok()
            return result
        finally:
            self.limiter.release(est_in, est_out, *_tokens(used), permit=permit)
            self._timed(t1 - t0, clock.now() - t1, est_in, est_out, used)

    def _timed(self, wait: float, service: float, est_in: int, est_out: int, used: Usage | None) -> None:
        n_in, n_out = (used.input_tokens, used.output_tokens) if used is not None else (est_in, est_out)
        record(self.timing, self.limiter, wait, service, n_in, n_out)

    def limit_report(self, name: str) -> dict[str, Any] | None:
        """Which limit this adapter's calls waited on, and whose it is (see :func:`limit_report`)."""
        return limit_report(name, self.timing, self.limiter, self.adapter.limits)


class Costed(Generic[Req, T]):
    """The budget around each attempt: reserve the estimate before, settle with the real cost after."""

    def __init__(self, inner: PaidCall[Req, T], budget: Budget, price: Price,
                 estimate: Callable[[Req], tuple[int, int]]) -> None:
        self.inner = inner
        self.budget = budget
        self.price = price
        self.estimate = estimate

    async def call(self, request: Req) -> Paid[T]:
        token = self.budget.reserve(self.price.cost(*self.estimate(request)))
        actual = 0.0
        try:
            result = await self.inner.call(request)
            actual = self.price.cost(result.usage.input_tokens, result.usage.output_tokens)
            return dataclasses.replace(result, usage=result.usage.model_copy(update={"cost_usd": actual}))
        except TeacherError as e:
            if e.usage is not None:  # malformed output, say: billed, so priced
                actual = self.price.cost(e.usage.input_tokens, e.usage.output_tokens)
                e.usage = e.usage.model_copy(update={"cost_usd": actual})
            raise
        finally:
            self.budget.settle(token, actual)


class Retrying(Generic[Req, T]):
    """The one retry policy; the result (or the error) carries the usage of every attempt."""

    def __init__(self, inner: PaidCall[Req, T], policy: RetryPolicy, *,
                 sleep: Callable[[float], Awaitable[None]], name: str) -> None:
        self.inner = inner
        self.policy = policy
        self.sleep = sleep
        self.name = name

    async def call(self, request: Req) -> Paid[T]:
        spent: list[Usage] = []

        def failed(n: int, e: TeacherError) -> None:
            spent.append(e.usage if e.usage is not None else Usage(requests=1))

        try:
            result = await call_with_retries(lambda n: self.inner.call(request), self.policy,
                                             sleep=self.sleep, on_failure=failed)
        except CallsStopped as e:
            # a stop keeps what the earlier attempts were billed (and the halting attempt's own
            # request, a 401 say): it goes on the record
            e.usage = sum(spent, e.usage or Usage())
            e.teacher = self.name
            raise
        except TeacherError as e:
            e.usage = sum(spent, Usage())
            e.teacher = self.name
            raise
        return dataclasses.replace(result, usage=sum(spent, result.usage))


class Cached:
    """A judge's verdicts from the ledger, keyed by what decides them and the candidate's content."""

    def __init__(self, inner: PaidCall[Candidate, Verdict], ledger: Ledger,
                 identity: CacheIdentity, *, budget: Budget | None = None, name: str = "") -> None:
        self.inner = inner
        self.ledger = ledger
        self.budget = budget
        self.name = name
        self._tkey = teacher_key(identity.identity, identity.prompt_hash)
        self._inflight: dict[str, asyncio.Future[Paid[Verdict]]] = {}

    def key(self, candidate: Candidate) -> str:
        return f"{self._tkey[:32]}:{content_hash(candidate)}"

    def lookup(self, candidate: Candidate) -> Verdict | None:
        return self.ledger.get(self.key(candidate))

    def settle(self, candidate: Candidate) -> None:
        """The run's journal holds this candidate's verdict now: the ledger owes nothing for it."""
        try:
            self.ledger.settle(self.key(candidate))
        except sqlite3.Error as e:
            raise self._halt(e) from None

    def _halt(self, e: BaseException) -> Halted:
        return Halted(f"{self.ledger.path}: {self.ledger.advice(e)}", teacher=self.name)

    async def call(self, candidate: Candidate) -> Paid[Verdict]:
        key = self.key(candidate)
        shared = self._inflight.get(key)
        if shared is not None:
            try:
                leader = await asyncio.shield(shared)
            except TeacherError as e:
                # the leader's error carries what its attempts cost; the follower paid nothing
                raise TeacherError(str(e), teacher=e.teacher, attempt=e.attempt, status=e.status,
                                   retryable=e.retryable, retry_after=e.retry_after,
                                   kind=e.kind) from None
            except Halted as e:
                raise e.again() from None
            except BudgetExhausted as e:
                raise BudgetExhausted(str(e), teacher=e.teacher) from None
            return Paid(leader.value, Usage(), cached=True)
        if self.ledger.failure is not None:  # a put failed earlier: stop before paying for more
            raise self._halt(self.ledger.failure)
        try:
            hit = self.ledger.take(key)
        except sqlite3.Error as e:  # before any call: nothing was paid, the candidate stays pending
            raise self._halt(e) from None
        if hit is not None:
            verdict, owed = hit
            if not owed:
                return Paid(verdict, Usage(), cached=True)
            # this run paid for it and was killed before its journal got it: count it once, now
            if self.budget is not None:
                self.budget.spent_usd += verdict.usage.cost_usd
            return Paid(verdict, verdict.usage)
        fut: asyncio.Future[Paid[Verdict]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            result = await self.inner.call(candidate)
        except BaseException as e:
            fut.set_exception(e if isinstance(e, Exception) else TeacherError("cancelled"))
            fut.exception()  # mark retrieved: followers re-raise it themselves
            raise
        finally:
            self._inflight.pop(key, None)
        fut.set_result(result)
        try:
            self.ledger.put(key, result.value.model_copy(update={"usage": result.usage}))
        except sqlite3.Error as e:  # paid, so kept: the verdict goes on, the next call halts
            self.ledger.failure = e
        return result


@dataclasses.dataclass(frozen=True, slots=True)
class PaidStack(Generic[Req, T]):
    """An adapter inside the layer: ``call`` goes through ``outer``; ``limiter`` is its endpoint's."""

    adapter: PaidAdapter[Req, T]
    limiter: EndpointLimiter
    outer: PaidCall[Req, T]

    async def call(self, request: Req) -> Paid[T]:
        return await self.outer.call(request)


class PaidTeacher:
    """A paid judge as the panel sees it: a teacher whose ``judge`` crosses the paid-call layer.

    The verdict carries the usage and cost of every attempt, ``cached`` for a ledger hit, and the
    wall time of the whole call. ``lookup``, ``estimate`` and ``price`` serve the dry run.
    """

    paid: ClassVar[bool] = True
    inline: ClassVar[bool] = False

    def __init__(self, adapter: PaidJudge, stack: PaidStack[Candidate, Verdict],
                 cache: Cached | None = None) -> None:
        self.adapter = adapter
        self.stack = stack
        self.cache = cache
        self._outer: PaidCall[Candidate, Verdict] = cache if cache is not None else stack

    @property
    def name(self) -> str:
        return self.adapter.name

    @property
    def cost_rank(self) -> int:
        return self.adapter.cost_rank

    @property
    def config(self) -> Any:
        return self.adapter.config

    @property
    def limiter(self) -> EndpointLimiter:
        return self.stack.limiter

    @property
    def price(self) -> Price:
        return self.adapter.price

    def estimate(self, candidate: Candidate) -> tuple[int, int]:
        return self.adapter.estimate(candidate)

    def lookup(self, candidate: Candidate) -> Verdict | None:
        return self.cache.lookup(candidate) if self.cache is not None else None

    def settle(self, candidate: Candidate) -> None:
        """The run journaled this candidate's paid verdict (see :meth:`Cached.settle`)."""
        if self.cache is not None:
            self.cache.settle(candidate)

    def limit_report(self) -> dict[str, Any] | None:
        """The teacher's limiter wait share and the limit that binds (:func:`limit_report`)."""
        inner = self.stack.outer
        while not isinstance(inner, RateLimited) and hasattr(inner, "inner"):
            inner = inner.inner
        return inner.limit_report(self.name) if isinstance(inner, RateLimited) else None

    async def judge(self, candidate: Candidate) -> Verdict:
        t0 = time.perf_counter()
        timing = Timing()
        token = _TIMING.set(timing)  # the rate-limit layer adds each attempt's wait and service
        try:
            r = await self._outer.call(candidate)
        finally:
            _TIMING.reset(token)
        if r.cached:
            return r.value.model_copy(update={"teacher": self.name, "usage": r.usage, "cached": True,
                                              "latency_s": 0.0, "service_s": 0.0, "wait_s": 0.0})
        return r.value.model_copy(update={
            "teacher": self.name, "usage": r.usage, "cached": False, "latency_s": time.perf_counter() - t0,
            "service_s": timing.service_s, "wait_s": timing.wait_s})

    async def aclose(self) -> None:
        await self.adapter.aclose()
