"""The one retry policy (tenacity): bounded attempts, exponential jitter, Retry-After honoured.

Adapters *classify* (a :class:`~tgrs_agents.errors.TeacherError` with ``retryable`` and
``retry_after``); this module alone decides to retry. Output that does not parse (``kind ==
"malformed"``) is asked for once more, not more. The SDKs' own retries are switched off, so there
is exactly one layer, and every attempt goes back through the limiter and the budget.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from ..errors import TeacherError

if TYPE_CHECKING:
    from tenacity import RetryCallState

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a run retries (one per run, on :class:`~tgrs_agents.paid.services.Services`); an
    adapter's own ``max_attempts`` replaces this one's for its calls."""

    max_attempts: int = 5
    initial_s: float = 0.1  # an isolated 5xx is retried soon: the last calls of a run wait on it
    max_wait_s: float = 30.0
    jitter_s: float = 0.25
    max_malformed_retries: int = 1
    overloaded_min_s: float = 1.0  # a server that says it is overloaded (529) gets at least this


def _retryable(policy: RetryPolicy, malformed_seen: list[int]) -> Callable[[BaseException], bool]:
    def check(exc: BaseException) -> bool:
        if not isinstance(exc, TeacherError) or not exc.retryable:
            return False
        if exc.kind == "malformed":
            malformed_seen[0] += 1
            return malformed_seen[0] <= policy.max_malformed_retries
        return True

    return check


@functools.cache
def _first_wait_name() -> str:
    from tenacity.wait import wait_exponential_jitter

    params = inspect.signature(wait_exponential_jitter.__init__).parameters  # once, not per call
    return "multiplier" if "multiplier" in params else "initial"


def _first_wait(seconds: float) -> dict[str, float]:
    """tenacity renamed ``initial`` to ``multiplier`` (9.1); speak whichever it understands."""
    return {_first_wait_name(): seconds}


def _wait(policy: RetryPolicy) -> Callable[[RetryCallState], float]:
    from tenacity.wait import wait_exponential_jitter

    expo = wait_exponential_jitter(max=policy.max_wait_s, jitter=policy.jitter_s,
                                   **_first_wait(policy.initial_s))

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, TeacherError) and exc.kind == "malformed":
            return 0.0  # ask again at once: the server is fine, the answer was not
        if isinstance(exc, TeacherError) and exc.retry_after is not None:
            # the limiter already pauses the endpoint until then; waiting here too keeps this
            # attempt from jumping the queue when the limiter is shared
            return min(max(exc.retry_after, 0.0), policy.max_wait_s)
        if isinstance(exc, TeacherError) and exc.kind == "overloaded":
            return min(max(float(expo(state)), policy.overloaded_min_s), policy.max_wait_s)
        return float(expo(state))

    return wait


async def call_with_retries(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    on_failure: Callable[[int, TeacherError], None] | None = None,
) -> T:
    """Run ``attempt(n)`` (n = 1, 2, ...) until it succeeds or the policy gives up.

    The last error is re-raised with ``attempt`` set to the number of attempts made.

    Most calls succeed at once, so the first attempt runs bare and the retry machinery (a
    tenacity ``AsyncRetrying`` per call: CPU that a client-bound run feels) is built only when it
    fails; tenacity then starts from that first failure, replayed, so what follows is the same.
    """
    try:
        return await attempt(1)
    except TeacherError as e:
        e.attempt = 1
        if on_failure is not None:
            on_failure(1, e)
        first: TeacherError = e
    return await _retry_after(first, attempt, policy, sleep=sleep, on_failure=on_failure)


async def _retry_after(
    first: TeacherError,
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], Awaitable[None]],
    on_failure: Callable[[int, TeacherError], None] | None,
) -> T:
    """The policy from attempt 2 on, after ``first`` (attempt 1's error, already reported)."""
    from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt  # on first use

    malformed_seen = [0]
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=_wait(policy),
        retry=retry_if_exception(_retryable(policy, malformed_seen)),
        sleep=sleep,
        reraise=True,
    )
    n = 0
    try:
        async for att in retrying:
            with att:
                n = att.retry_state.attempt_number
                if n == 1:
                    raise first  # the bare attempt's outcome, for tenacity to judge
                try:
                    return await attempt(n)
                except TeacherError as e:
                    e.attempt = n
                    if on_failure is not None:
                        on_failure(n, e)
                    raise
    except TeacherError as e:
        e.attempt = n
        raise
    raise AssertionError("unreachable")  # pragma: no cover
