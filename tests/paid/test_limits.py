"""Limiter tests on virtual time: they run in milliseconds and are deterministic."""

import asyncio
import contextvars
import math
import time

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


# --- no tuning: first-second pacing, banks learned from headers, calls in flight ------------------
PER_MINUTE = {"x-ratelimit-limit-requests": "3000", "x-ratelimit-remaining-requests": "2990",
              "x-ratelimit-reset-requests": "200ms"}  # 10 used, whole again in 0.2 s at 50/s: a minute's bank
PER_SECOND = {"x-ratelimit-limit-requests": "3000", "x-ratelimit-remaining-requests": "2940",
              "x-ratelimit-reset-requests": "20ms"}  # remaining scaled to the minute, but a 1 s bucket


class ManualClock:
    """Time moves only when the test says so; sleepers wake when their time comes."""

    def __init__(self) -> None:
        self.t = 0.0
        self.timers: list[tuple[float, asyncio.Future]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        self.timers.append((self.t + seconds, fut))
        await fut

    def advance(self, dt: float) -> None:
        self.t += dt
        for due, fut in self.timers:
            if due <= self.t + 1e-12 and not fut.done():
                fut.set_result(None)


async def starts(lim: EndpointLimiter, n: int) -> list[float]:
    out = []
    for _ in range(n):
        out.append(await lim.acquire())
        lim.release(permit=out[-1])
    return out


def test_first_second_is_paced_until_the_provider_states_its_bank():
    # no burst_s: one token to start, then the rate -- no herd at start-up
    paced = run(starts(EndpointLimiter("e", EndpointLimits(rpm=600), FakeClock()), 10))
    assert paced == pytest.approx([0.1 * i for i in range(10)])
    # a stated burst_s is a bank the provider grants: spent at once
    banked = run(starts(EndpointLimiter("e", EndpointLimits(rpm=600, burst_s=1.0), FakeClock()), 10))
    assert banked == [0.0] * 10


def test_a_minutes_bank_learned_from_openai_headers_is_spent():
    async def main(headers):
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=3000), clock)  # 50/s
        lim.learn(headers)
        await starts(lim, 1000)
        return clock.now(), lim

    t, lim = run(main(PER_MINUTE))
    assert lim.stats.bank_s["requests"] == pytest.approx(60.0)  # 0.2 s * 3000 / 10
    assert lim.requests.capacity == pytest.approx(3000)
    assert t == 0.0  # 1,000 requests at once: the server holds 2,990 for us
    assert lim.stats.lifted == pytest.approx(2990 - 0.5 * 50 - 1)  # less the reserve, less the token held

    # the same remaining/limit from a server enforcing over one second: no bank beyond a second's
    t, lim = run(main(PER_SECOND))
    assert lim.stats.bank_s["requests"] == pytest.approx(1.0)
    assert lim.requests.capacity == pytest.approx(50)
    assert t == pytest.approx((1000 - 0.75 * 50) / 50, abs=0.05)  # 3/4 of its second spent, then the rate


def test_a_bank_is_not_spent_past_the_users_own_lower_rpm():
    """The server allows 3,000 a minute with a minute's bank; the teacher file says 600. What the
    server has left says nothing about the user's cap: 120 calls still take (120 - 10) / 10 s."""
    async def main(rpm):
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=rpm), clock)
        lim.learn(PER_MINUTE)
        for _ in range(120):
            p = await lim.acquire()
            lim.learn(PER_MINUTE, permit=p)  # every answer says the minute's bank is nearly whole
            lim.release(permit=p)
        return clock.now(), lim.stats.lifted

    t, lifted = run(main(600))
    assert lifted == 0 and t >= (120 - 10) / 10 - 1e-6  # paced at the user's 10/s after its own second
    t, lifted = run(main(3000))  # the server's limit is the user's: its bank is spent
    assert lifted > 0 and t == 0.0


def test_bank_counts_what_started_since_the_call_the_headers_answer():
    async def main(which):
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=3000, burst_s=60), clock)
        permits = []
        for _ in range(60):  # in flight, maybe not counted in the server's ``remaining`` yet
            permits.append(await lim.acquire())
            clock.t += 0.01
        lim.requests.tokens = 0.0
        lim._window["requests"] = 60.0
        headers = {**PER_MINUTE, "x-ratelimit-remaining-requests": "1000"}
        if which is None:  # no permit (another task): any call since the oldest in flight may be uncounted
            contextvars.Context().run(lim.learn, headers)
        elif which == "task":  # by default, the call this task has under way (its last acquire)
            lim.learn(headers)
        else:
            lim.learn(headers, permit=permits[which])
        level = lim.requests.tokens
        for p in permits:
            lim.release(permit=p)
        return level

    assert run(main(None)) == pytest.approx(1000 - 60 - 25, abs=0.01)  # less the 0.5 s reserve
    # the 51st call (begun at 0.5 s, answered at 0.6 s): the 10 calls since it, and 0.1 s of refill
    assert run(main(50)) == pytest.approx(1000 + 0.1 * 50 - 10 - 25, abs=0.01)
    assert run(main("task")) == pytest.approx(1000 + 0.01 * 50 - 1 - 25, abs=0.01)  # the 60th call


def test_anthropic_reset_times_are_read_against_the_servers_date():
    clock = FakeClock()
    lim = EndpointLimiter("e", EndpointLimits(rpm=3000), clock)
    date = "Sun, 15 Jun 2025 12:00:00 GMT"
    lim.learn({"date": date, "anthropic-ratelimit-requests-limit": "3000",
               "anthropic-ratelimit-requests-remaining": "2800",
               "anthropic-ratelimit-requests-reset": "2025-06-15T12:00:04Z"})  # 200 used, back in 4 s
    assert lim.stats.bank_s["requests"] == pytest.approx(60.0)
    assert lim.requests.tokens == pytest.approx(2800 - 25)
    # a reset one second away, to the second, cannot tell a minute's bank from a second's
    lim2 = EndpointLimiter("e", EndpointLimits(rpm=3000), clock)
    lim2.learn({"date": date, "anthropic-ratelimit-requests-limit": "3000",
                "anthropic-ratelimit-requests-remaining": "2990",
                "anthropic-ratelimit-requests-reset": "2025-06-15T12:00:01Z"})
    assert "requests" not in lim2.stats.bank_s and lim2.requests.tokens <= 1


def test_a_lifted_bank_wakes_the_callers_already_waiting():
    async def main():
        clock = ManualClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=600), clock)  # 10/s, one token to start
        tasks = [asyncio.create_task(lim.acquire()) for _ in range(5)]
        for _ in range(5):
            await asyncio.sleep(0)
        assert sum(t.done() for t in tasks) == 1  # the others sleep until 0.1 .. 0.4
        lim.learn({"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "590",
                   "x-ratelimit-reset-requests": "1s"})  # a minute's bank
        for _ in range(5):
            await asyncio.sleep(0)
        return [t.result() for t in tasks if t.done()]

    assert run(main()) == [0.0] * 5


def test_a_429_stops_spending_learned_banks_for_a_while():
    clock = FakeClock()
    lim = EndpointLimiter("e", EndpointLimits(rpm=3000), clock)
    lim.on_rate_limited(0.1)
    lim.learn(PER_MINUTE)
    assert lim.stats.bank_s["requests"] == pytest.approx(60.0) and lim.stats.lifted == 0
    clock.t += lim.DISTRUST_S  # (the bucket refilled meanwhile, at the cut rate)
    lim.learn(PER_MINUTE)
    assert lim.stats.lifted > 0 and lim.requests.tokens == pytest.approx(2990 - 25)


def test_calls_in_flight_follow_rate_times_latency_under_the_ceiling():
    async def main(ceiling, latencies):
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=12000, max_concurrency=ceiling), clock)  # 200/s
        first = lim.slots.target
        for latency in latencies:
            p = await lim.acquire()
            clock.t += latency
            lim.release(permit=p)
        return first, lim.slots.latency_s, lim.slots.target

    first, latency, target = run(main(512, [0.4] * 60))
    assert first == 150  # 200/s x 0.5 s assumed x 1.5 headroom, before any call ended
    assert latency == pytest.approx(0.4) and target == 120  # 200/s x 0.4 s x 1.5
    assert run(main(100, [0.4] * 60))[2] == 100  # the ceiling
    assert run(main(512, [0.1] * 60))[2] == 64  # never below what a fixed cap used to allow
    # the latency jumps 25-fold: Little's law counts at most 1.5 times its floor (0.4 s, creeping
    # up 2% a second), since calls queued in our own process would not go faster with more in flight
    first, latency, target = run(main(512, [0.4] * 60 + [10.0] * 3))
    floor = 0.4 * 1.2**3  # three calls of 10 s each
    assert latency > 1.5 * floor
    assert target == math.ceil(200 * 1.5 * floor * 1.5)


def test_calls_in_flight_grow_while_latency_bound_and_are_cut_by_429s():
    async def main():
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(max_concurrency=128), clock)  # no rate known
        permits = [await lim.acquire() for _ in range(64)]
        assert lim.slots.target == 64
        waiters = [asyncio.create_task(lim.acquire()) for _ in range(8)]
        await asyncio.sleep(0)
        assert lim.slots.waiting == 8
        clock.t += 0.3
        for p in permits[:4]:  # each call that ends while others wait (and no bucket is in debt)
            lim.release(permit=p)
        await asyncio.sleep(0)
        grown = lim.slots.target, sum(w.done() for w in waiters)
        lim.on_rate_limited(1.0)
        return grown, lim.slots.target

    (grown, admitted), cut = run(main())
    assert grown == 68 and admitted == 8  # 4 slots freed + 4 grown; a fixed cap admits 4
    assert cut == 47  # 68 x 0.7


def test_calls_in_flight_stop_growing_once_the_latency_is_our_own_queue():
    async def main(latency):
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(max_concurrency=128), clock)
        for _ in range(20):  # a floor of 0.1 s
            p = await lim.acquire()
            clock.t += 0.1
            lim.release(permit=p)
        permits = [await lim.acquire() for _ in range(64)]
        waiters = [asyncio.create_task(lim.acquire()) for _ in range(16)]
        await asyncio.sleep(0)
        clock.t += latency
        for p in permits[:8]:
            lim.release(permit=p)
        await asyncio.sleep(0)
        for w in waiters:
            w.cancel()
        return lim.slots.target

    assert run(main(0.12)) == 72  # within 1.5 times the floor: grown by 8
    assert run(main(2.0)) == 64  # twenty times the floor: the calls queue here, not at the server


def test_a_saturated_event_loop_sets_littles_law_aside():
    async def main():
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=12000), clock)  # 200/s
        for latency in [0.4] * 20 + [0.8] * 8:  # a floor of 0.4 s; the average rises past it
            p = await lim.acquire()
            clock.t += latency
            lim.release(permit=p)
        calm = lim.slots.target
        lim.slots.lag_s = 0.05  # callbacks run 50 ms late: this process is the bottleneck
        return calm, lim.slots.latency_s, lim.slots.floor_s, lim.slots.target

    calm, latency, floor, saturated = run(main())
    assert 0.4 < latency < 1.5 * floor
    assert calm == math.ceil(200 * latency * 1.5)
    assert saturated == 64  # more in flight would only queue here: what a fixed cap allowed


def test_event_loop_lag_is_measured_on_real_time_only():
    async def main(clock):
        lim = EndpointLimiter("e", EndpointLimits(max_concurrency=8), clock)
        for _ in range(6):
            p = await lim.acquire()  # schedules a probe callback...
            time.sleep(0.06)  # ...which this busy loop runs 60 ms late
            await asyncio.sleep(0)
            lim.release(permit=p)
        return lim.slots

    slots = run(main(None))  # the system clock
    assert slots.lag_s > slots.LAG_LIMIT_S and slots.saturated
    assert run(main(FakeClock())).lag_s == 0.0  # virtual time: no probe


@pytest.mark.parametrize("order", ["cancel, then release", "release, then cancel"])
def test_a_cancelled_waiter_neither_leaks_nor_keeps_a_slot(order):
    async def main():
        lim = EndpointLimiter("e", EndpointLimits(max_concurrency=1), FakeClock())
        p = await lim.acquire()
        waiter = asyncio.create_task(lim.acquire())
        await asyncio.sleep(0)
        if order == "cancel, then release":
            waiter.cancel()
            lim.release(permit=p)  # drops the cancelled waiter before it has run again
        else:
            lim.release(permit=p)  # hands the waiter the slot...
            waiter.cancel()  # ...which it gives back
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert lim.slots.active == 0 and lim.slots.waiting == 0
        lim.release(permit=await asyncio.wait_for(lim.acquire(), 1))

    run(main())


def test_release_without_a_permit_still_frees_the_slot():
    async def main():
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=6000, max_concurrency=2), clock)
        await lim.acquire()
        p2 = await lim.acquire()
        clock.t += 0.2
        lim.release()  # an older caller: no permit, so no latency; the oldest call is taken as ended
        assert lim.slots.active == 1 and lim.slots.latency_s is None
        assert lim.slots.since("requests") == 1
        lim.release(permit=12345.0)  # a permit this limiter never gave: the same
        assert lim.slots.active == 0 and lim.slots.since("requests") == 0
        p3 = await asyncio.wait_for(lim.acquire(), 1)
        clock.t += 0.3
        lim.release(permit=p3)
        return p2, p3, lim.slots.latency_s

    p2, p3, latency = run(main())
    assert p3 > p2 and latency == pytest.approx(0.3)


def test_per_minute_allowance_on_the_stand_in_is_spent_without_429s():
    openai = pytest.importorskip("openai")
    from tgrs_agents.testing.standin import FaultPlan, StandIn

    async def main(url):
        lim = EndpointLimiter("e", EndpointLimits(rpm=600))  # 10/s: 300 calls are 30 s paced
        async with openai.AsyncOpenAI(api_key="sk-test", base_url=url, max_retries=0) as c:
            async def one():
                p = await lim.acquire()
                try:
                    raw = await c.chat.completions.with_raw_response.create(
                        model="m", messages=[{"role": "user", "content": "hi"}])
                    lim.learn(raw.headers)
                finally:
                    lim.release(permit=p)

            t0 = asyncio.get_running_loop().time()
            await asyncio.gather(*(one() for _ in range(300)))
            return asyncio.get_running_loop().time() - t0, lim

    with StandIn(FaultPlan(rpm=600, burst_s=60, latency_mean_s=0.05)) as s:
        wall, lim = run(main(s.url_openai))
        assert s.stats["429"] == 0 and s.stats["ok"] == 300
    assert lim.stats.bank_s["requests"] == pytest.approx(60, rel=0.1)
    assert wall < 10  # the minute's 600 are there to spend



# --- moved from tests/teachers/test_api_judges.py: limiter behaviour the API judges rely on ---------------
def test_a_429_spends_the_bank_so_the_released_callers_are_paced():
    from tgrs_agents.paid.limits import EndpointLimiter, EndpointLimits, FakeClock

    async def main():
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=600), clock)  # 10/s, a bank of 10
        lim.on_rate_limited(0.5)
        starts = []
        for _ in range(5):
            await lim.acquire()
            starts.append(clock.now())
            lim.release()
        return starts

    starts = run(main())
    assert starts[0] == pytest.approx(0.5)  # the pause
    import itertools

    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([1 / 7] * 4)  # paced (at the cut rate: 0.7 x 10/s), no herd


def test_rate_cut_only_when_the_server_has_not_vouched_for_our_rate():
    from tgrs_agents.paid.limits import EndpointLimiter, EndpointLimits, FakeClock

    stated = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "590"}
    clock = FakeClock()
    unknown = EndpointLimiter("u", EndpointLimits(rpm=600), clock)
    unknown.on_rate_limited(0.01)
    assert unknown.factor == pytest.approx(0.7)  # no word from the server: find the limit

    vouched = EndpointLimiter("v", EndpointLimits(rpm=600), clock)
    vouched.learn(stated)
    for _ in range(10):  # one episode (a burst that outran the server's bank): no cut
        vouched.on_rate_limited(0.01)
    assert vouched.factor == 1.0 and vouched.stats.rate_limited == 10
    clock.t += 2.0  # a second episode soon after: sustained, so cut
    vouched.on_rate_limited(0.01)
    assert vouched.factor == pytest.approx(0.7)

    over = EndpointLimiter("o", EndpointLimits(rpm=1200), clock)
    over.learn({**stated, "x-ratelimit-limit-requests": "600"})  # learned: base drops to 600
    assert over.requests.rate == pytest.approx(10) and over.requests.capacity == pytest.approx(10)
    over.on_rate_limited(0.01)
    assert over.factor == 1.0  # now within the stated limit

