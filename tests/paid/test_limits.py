"""Limiter tests on virtual time: they run in milliseconds and are deterministic."""

import asyncio

import pytest

from tgrs_agents.paid.limits import (
    EndpointLimiter,
    EndpointLimits,
    FakeClock,
    LimiterRegistry,
    TokenBucket,
    endpoint_key,
    parse_reset,
)


def run(coro):
    return asyncio.run(coro)


def test_bucket_paces_exactly_after_the_burst():
    b = TokenBucket(rate=10, capacity=5, now=0.0)
    waits = [b.reserve(1, 0.0) for _ in range(8)]
    assert waits[:5] == [0.0] * 5
    assert waits[5:] == pytest.approx([0.1, 0.2, 0.3])


def test_bucket_credit_returns_unused_estimate_but_not_past_capacity():
    b = TokenBucket(rate=1, capacity=100, now=0.0)
    b.reserve(80, 0.0)
    b.credit(50, 0.0)  # the call used 30 of the 80 estimated
    assert b.tokens == pytest.approx(70)
    b.credit(1000, 0.0)
    assert b.tokens == 100


def test_request_rate_is_respected_on_virtual_time():
    async def main():
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=600, burst_s=1.0), clock)  # 10/s, burst 10
        for _ in range(40):
            await lim.acquire()
            lim.release()
        return clock.now()

    # 40 requests at 10/s with 10 banked: the last starts at 3.0 s
    assert run(main()) == pytest.approx(3.0)


def test_token_buckets_use_estimates_and_reconcile():
    async def main():
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(tpm=6000, burst_s=1.0), clock)  # 100 tok/s
        await lim.acquire(est_in=80, est_out=20)
        lim.release(80, 20, used_in=30, used_out=10)  # 60 tokens come back
        t0 = clock.now()
        await lim.acquire(est_in=60, est_out=0)  # 60 banked: no wait
        return clock.now() - t0, lim.tokens.tokens

    waited, left = run(main())
    assert waited == 0.0
    assert left == pytest.approx(0.0)


def test_separate_input_and_output_buckets():
    async def main():
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(input_tpm=60_000, output_tpm=600, burst_s=1.0), clock)
        await lim.acquire(est_in=10, est_out=10)  # output bucket: 10/s, capacity 10 -> empty now
        lim.release()
        await lim.acquire(est_in=10, est_out=10)  # must wait 1 s for output tokens
        return clock.now()

    assert run(main()) == pytest.approx(1.0)


def test_retry_after_pauses_everyone_and_cuts_the_rate():
    async def main():
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=600), clock)
        lim.on_rate_limited(2.5)
        assert lim.factor == pytest.approx(0.7)
        lim.on_rate_limited(2.5)  # a burst of 429s in the same second cuts only once
        assert lim.factor == pytest.approx(0.7)
        await lim.acquire()
        lim.release()
        started = clock.now()
        for _ in range(100):
            lim.on_success()
        return started, lim.factor, lim.requests.rate

    started, factor, rate = run(main())
    assert started >= 2.5
    assert factor == 1.0  # recovered additively
    assert rate == pytest.approx(10.0)


def test_concurrency_cap():
    async def main():
        lim = EndpointLimiter("e", EndpointLimits(max_concurrency=3))
        live = peak = 0

        async def one():
            nonlocal live, peak
            await lim.acquire()
            live += 1
            peak = max(peak, live)
            await asyncio.sleep(0.001)
            live -= 1
            lim.release()

        await asyncio.gather(*(one() for _ in range(20)))
        return peak

    assert run(main()) == 3


def test_learns_lower_limits_from_openai_headers():
    clock = FakeClock()
    lim = EndpointLimiter("e", EndpointLimits(rpm=6000), clock)
    lim.learn({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "3",
               "x-ratelimit-limit-tokens": "60000", "x-ratelimit-remaining-tokens": "59000"})
    assert lim.requests.rate == pytest.approx(10.0)
    assert lim.requests.tokens <= 3
    assert lim.tokens is not None and lim.tokens.rate == pytest.approx(1000.0)  # adopted


def test_learns_from_anthropic_headers():
    lim = EndpointLimiter("e", EndpointLimits(), FakeClock())
    lim.learn({"anthropic-ratelimit-input-tokens-limit": "120000",
               "anthropic-ratelimit-input-tokens-remaining": "100000",
               "anthropic-ratelimit-output-tokens-limit": "6000",
               "anthropic-ratelimit-output-tokens-remaining": "6000"})
    assert lim.input.rate == pytest.approx(2000.0)
    assert lim.output.rate == pytest.approx(100.0)


def test_registry_shares_one_limiter_per_endpoint_and_key():
    reg = LimiterRegistry(FakeClock())
    a = reg.get(endpoint_key("http://h/v1", "k1"), EndpointLimits(rpm=60))
    b = reg.get(endpoint_key("http://h/v1/", "k1"), EndpointLimits(rpm=60))
    c = reg.get(endpoint_key("http://h/v1", "k2"), EndpointLimits(rpm=60))
    assert a is b and a is not c
    assert "k1" not in endpoint_key("http://h/v1", "k1")


@pytest.mark.parametrize("text,seconds", [("1s", 1.0), ("6m0s", 360.0), ("120ms", 0.12),
                                          ("1h2m3s", 3723.0), ("0.5", 0.5), ("bogus", None)])
def test_parse_reset(text, seconds):
    assert parse_reset(text) == (pytest.approx(seconds) if seconds is not None else None)
