import asyncio

import pytest

from tgrs_agents.errors import TeacherError
from tgrs_agents.paid.retry import RetryPolicy, call_with_retries


class Sleeps:
    def __init__(self):
        self.calls = []

    async def __call__(self, s):
        self.calls.append(s)


def flaky(errors, result="ok"):
    seen = []

    async def attempt(n):
        seen.append(n)
        if errors:
            raise errors.pop(0)
        return result

    return attempt, seen


def test_retries_retryable_errors_then_succeeds():
    sleep = Sleeps()
    attempt, seen = flaky([TeacherError("503", retryable=True, kind="server"),
                           TeacherError("timeout", retryable=True, kind="timeout")])
    assert asyncio.run(call_with_retries(attempt, RetryPolicy(max_attempts=5), sleep=sleep)) == "ok"
    assert seen == [1, 2, 3]
    assert len(sleep.calls) == 2 and all(0 < s <= 30 for s in sleep.calls)


def test_does_not_retry_permanent_errors():
    attempt, seen = flaky([TeacherError("401", retryable=False, kind="auth")])
    with pytest.raises(TeacherError) as ei:
        asyncio.run(call_with_retries(attempt, RetryPolicy(), sleep=Sleeps()))
    assert seen == [1] and ei.value.attempt == 1


def test_attempts_are_bounded():
    attempt, seen = flaky([TeacherError("500", retryable=True, kind="server") for _ in range(10)])
    with pytest.raises(TeacherError) as ei:
        asyncio.run(call_with_retries(attempt, RetryPolicy(max_attempts=3), sleep=Sleeps()))
    assert seen == [1, 2, 3] and ei.value.attempt == 3


def test_retry_after_is_honoured_and_capped():
    sleep = Sleeps()
    attempt, _ = flaky([TeacherError("429", retryable=True, kind="rate_limit", retry_after=2.5),
                        TeacherError("429", retryable=True, kind="rate_limit", retry_after=999)])
    asyncio.run(call_with_retries(attempt, RetryPolicy(max_wait_s=30), sleep=sleep))
    assert sleep.calls == [2.5, 30]


def test_malformed_output_is_asked_for_once_more_only():
    attempt, seen = flaky([TeacherError("bad json", retryable=True, kind="malformed"),
                           TeacherError("bad json", retryable=True, kind="malformed")])
    with pytest.raises(TeacherError) as ei:
        asyncio.run(call_with_retries(attempt, RetryPolicy(max_attempts=5), sleep=Sleeps()))
    assert seen == [1, 2] and ei.value.kind == "malformed"


def test_exponential_backoff_grows():
    sleep = Sleeps()
    attempt, _ = flaky([TeacherError("500", retryable=True, kind="server") for _ in range(4)])
    asyncio.run(call_with_retries(attempt, RetryPolicy(max_attempts=5, initial_s=1, jitter_s=0),
                                  sleep=sleep))
    assert sleep.calls == [1, 2, 4, 8]


def test_a_first_attempt_that_succeeds_builds_no_retry_machinery(monkeypatch):
    # the per-call tenacity objects are CPU a client-bound run feels: built only after a failure
    import tenacity

    built = []
    real = tenacity.AsyncRetrying

    def counting(*a, **k):
        built.append(1)
        return real(*a, **k)

    monkeypatch.setattr(tenacity, "AsyncRetrying", counting)
    attempt, seen = flaky([])
    assert asyncio.run(call_with_retries(attempt, RetryPolicy(), sleep=Sleeps())) == "ok"
    assert seen == [1] and built == []
    failures = []
    attempt, seen = flaky([TeacherError("503", retryable=True)])
    out = asyncio.run(call_with_retries(attempt, RetryPolicy(), sleep=Sleeps(),
                                        on_failure=lambda n, e: failures.append((n, e.attempt))))
    assert out == "ok" and seen == [1, 2] and built == [1] and failures == [(1, 1)]


def test_an_isolated_5xx_is_retried_soon_and_an_overloaded_server_is_given_a_second():
    # the last calls of a run wait on their retries: the default first back-off is short...
    sleep = Sleeps()
    attempt, _ = flaky([TeacherError("500", retryable=True, kind="server")])
    asyncio.run(call_with_retries(attempt, RetryPolicy(), sleep=sleep))
    (wait,) = sleep.calls
    assert 0.1 <= wait <= 0.1 + 0.25
    # ...but a 529 (the server says it is overloaded) is not hammered: at least a second each
    sleep = Sleeps()
    attempt, _ = flaky([TeacherError("529", retryable=True, kind="overloaded") for _ in range(3)])
    asyncio.run(call_with_retries(attempt, RetryPolicy(jitter_s=0), sleep=sleep))
    assert sleep.calls == [1.0, 1.0, 1.0]
    sleep = Sleeps()
    attempt, _ = flaky([TeacherError("529", retryable=True, kind="overloaded") for _ in range(4)])
    asyncio.run(call_with_retries(attempt, RetryPolicy(initial_s=0.5, jitter_s=0), sleep=sleep))
    assert sleep.calls == [1.0, 1.0, 2.0, 4.0]
