"""The paid-call layer (``tgrs_agents.paid.wrappers``): limiter, budget, retries and ledger around an adapter.

First with a scripted adapter and virtual time (each attempt takes a rate token and a budget
reservation, headers reach the limiter through the layer, a cache hit skips both, every attempt is
costed, a budget refusal keeps what was paid); then the API judges through the real SDKs against the
loopback stand-in (retries, 429s, the ledger's in-flight sharing).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from api_judge_kit import KEYS, KINDS, build, cand, judge1, limiter, price, prompt_of, run, set_keys, table

from tgrs_agents.errors import BudgetExhausted, CallsStopped, Halted, TeacherError
from tgrs_agents.paid.call import CacheIdentity, Paid, PaidAdapter, PaidJudge
from tgrs_agents.paid.cost import Budget, Price
from tgrs_agents.paid.ledger import Ledger
from tgrs_agents.paid.limits import EndpointLimiter, EndpointLimits, FakeClock
from tgrs_agents.paid.retry import RetryPolicy
from tgrs_agents.paid.services import Services
from tgrs_agents.paid.wrappers import Cached, PaidTeacher, RateLimited
from tgrs_agents.testing.standin import FaultPlan, StandIn
from tgrs_agents.types import Usage, Verdict

pytest.importorskip("openai")
pytest.importorskip("anthropic")

USED = Usage(requests=1, input_tokens=100, output_tokens=10)
PRICE = Price(1.0, 2.0)
EST_COST = PRICE.cost(100, 10)  # what each attempt reserves (the estimate equals the usage here)


@pytest.fixture(autouse=True)
def env(monkeypatch):
    set_keys(monkeypatch)


@pytest.fixture
def srv():
    with StandIn() as s:
        yield s


# --- a scripted adapter, virtual time ------------------------------------------------------------
class Scripted:
    """A PaidJudge whose attempts follow a script: a TeacherError is raised, anything else returned."""

    name = "scripted"
    endpoint_key = "http://scripted#0"
    limits = EndpointLimits()
    price = PRICE
    cost_rank = 10
    config = None

    def __init__(self, *script: Any, max_attempts: int | None = None) -> None:
        self.script = list(script)
        self.max_attempts = max_attempts
        self.calls = 0

    def estimate(self, request: Any) -> tuple[int, int]:
        return 100, 10

    def cache_identity(self) -> CacheIdentity | None:
        return CacheIdentity({"kind": "scripted"}, "prompt-hash")

    async def call(self, request: Any) -> Paid[Verdict]:
        self.calls += 1
        await asyncio.sleep(0)
        step = self.script.pop(0)
        if isinstance(step, TeacherError):
            raise step
        return step

    async def aclose(self) -> None:
        return None


def ok(headers: dict[str, str] | None = None) -> Paid[Verdict]:
    return Paid(Verdict(teacher="scripted", passed=True, score=1.0, usage=USED), USED, headers or {})


def err(kind: str = "server", **kw: Any) -> TeacherError:
    return TeacherError(kind, retryable=True, kind=kind, **kw)  # type: ignore[arg-type]


class CountingBudget(Budget):
    def __init__(self, limit_usd: float | None = None) -> None:
        super().__init__(limit_usd)
        self.reservations = 0

    def reserve(self, estimate_usd: float) -> int:
        self.reservations += 1
        return super().reserve(estimate_usd)


def services(**kw: Any) -> Services:
    kw.setdefault("budget", CountingBudget())
    return Services(clock=FakeClock(), retry=RetryPolicy(initial_s=0.5, jitter_s=0.0), **kw)


def test_the_scripted_adapter_and_the_api_judges_fulfil_the_protocol():
    assert isinstance(Scripted(), PaidAdapter) and isinstance(Scripted(), PaidJudge)
    assert not isinstance(object(), PaidAdapter)


def test_each_attempt_takes_a_rate_token_and_a_budget_reservation():
    adapter = Scripted(err(), err("rate_limit", retry_after=2.0), ok())
    svc = services()
    stack = svc.stack(adapter)
    r = run(stack.call("req"))
    assert adapter.calls == 3 and stack.limiter.stats.acquired == 3
    assert svc.budget.reservations == 3 and svc.budget.reserved_usd == pytest.approx(0.0)
    assert stack.limiter.stats.rate_limited == 1  # the 429 reached the limiter
    assert r.usage.requests == 3  # every attempt counted (failed ones without usage as one request)
    assert svc.budget.spent_usd == pytest.approx(r.usage.cost_usd) == pytest.approx(EST_COST)


def test_headers_reach_the_limiter_through_the_layer_and_the_permit_comes_back():
    stated = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "590"}
    tokens = {"x-ratelimit-limit-tokens": "90000", "x-ratelimit-remaining-tokens": "80000"}
    adapter = Scripted(err("rate_limit", retry_after=0.1, headers=stated), ok(tokens))
    lim = EndpointLimiter("k", EndpointLimits(rpm=1200), FakeClock())
    learned, permits, released = [], [], []
    learn, acquire, release = lim.learn, lim.acquire, lim.release
    lim.learn = lambda h: (learned.append(dict(h)), learn(h))[1]

    async def spy_acquire(*a: Any) -> Any:
        permits.append(await acquire(*a))
        return permits[-1]

    def spy_release(*a: Any, permit: Any = None) -> None:
        released.append((a, permit))
        release(*a, permit=permit)

    lim.acquire, lim.release = spy_acquire, spy_release
    layer = RateLimited(adapter, lim)
    with pytest.raises(TeacherError):
        run(layer.call("a"))
    run(layer.call("b"))
    assert learned == [stated, tokens]  # the 429's headers too, handed over by the layer
    assert lim.stats.rate_limited == 1 and lim.stats.learned["requests"] == 600
    assert [p for _, p in released] == permits and len(permits) == 2
    assert released[1][0] == (100, 10, 100, 10)  # reconciled with the reported usage
    assert not hasattr(adapter, "on_headers")  # nothing was written into the adapter


def test_a_cache_hit_skips_the_limiter_and_the_budget(tmp_path: Path):
    adapter = Scripted(ok())
    svc = services(ledger=Ledger(tmp_path / "l.sqlite"))
    teacher = svc.wrap(adapter)
    assert isinstance(teacher, PaidTeacher) and teacher.cache is not None
    c = cand(1)
    first, again = run(teacher.judge(c)), run(teacher.judge(c.model_copy(update={"id": "twin"})))
    assert adapter.calls == 1 and teacher.limiter.stats.acquired == 1 and svc.budget.reservations == 1
    assert not first.cached and first.usage.cost_usd == pytest.approx(EST_COST)
    assert again.cached and again.usage == Usage() and again.latency_s == 0.0
    assert teacher.lookup(c) is not None
    svc.close()


def test_no_ledger_or_no_identity_means_no_cache(tmp_path: Path):
    class Uncached(Scripted):
        def cache_identity(self) -> CacheIdentity | None:
            return None

    assert services().wrap(Scripted()).cache is None
    led = services(ledger=Ledger(tmp_path / "l.sqlite"))
    assert led.wrap(Uncached()).cache is None
    assert led.wrap(Scripted()).cache is not None


def test_every_attempt_is_costed_malformed_output_too():
    adapter = Scripted(err("malformed", usage=USED), ok())
    svc = services()
    r = run(svc.stack(adapter).call("x"))
    assert r.usage.requests == 2 and r.usage.input_tokens == 200
    assert r.usage.cost_usd == pytest.approx(2 * EST_COST) == pytest.approx(svc.budget.spent_usd)


def test_a_budget_refusal_is_one_signal_carrying_what_was_paid():
    # room for two attempts: both fail billed, the third is refused before it starts
    adapter = Scripted(err(usage=USED), err(usage=USED), ok())
    svc = services(budget=CountingBudget(limit_usd=2.5 * EST_COST))
    with pytest.raises(BudgetExhausted) as ei:
        run(svc.stack(adapter).call("x"))
    e = ei.value
    assert adapter.calls == 2 and e.teacher == "scripted"
    assert e.usage is not None and e.usage.requests == 2
    assert e.usage.cost_usd == pytest.approx(2 * EST_COST) == pytest.approx(svc.budget.spent_usd)

    nothing = Scripted(ok())
    with pytest.raises(BudgetExhausted) as ei:  # refused before the first attempt: nothing paid
        run(services(budget=Budget(limit_usd=EST_COST / 2)).stack(nothing).call("x"))
    assert nothing.calls == 0 and ei.value.usage == Usage()


def test_a_follower_of_a_refused_leader_is_refused_without_the_leaders_bill(tmp_path: Path):
    adapter = Scripted(err(usage=USED), ok())
    svc = services(budget=Budget(limit_usd=1.5 * EST_COST), ledger=Ledger(tmp_path / "l.sqlite"))
    teacher = svc.wrap(adapter)
    c = cand(1)

    async def main() -> list[Any]:
        return await asyncio.gather(teacher.judge(c), teacher.judge(c), return_exceptions=True)

    leader, follower = run(main())
    assert isinstance(leader, BudgetExhausted) and leader.usage.requests == 1
    assert isinstance(follower, BudgetExhausted) and follower.usage is None
    assert adapter.calls == 1
    svc.close()


def test_cached_keys_what_decides_the_verdict(tmp_path: Path):
    led = Ledger(tmp_path / "l.sqlite")
    a = Cached(Scripted(), led, CacheIdentity({"model": "m"}, "p1"))
    b = Cached(Scripted(), led, CacheIdentity({"model": "m"}, "p2"))
    c = cand(1)
    assert a.key(c) == a.key(c.model_copy(update={"id": "other"})) != b.key(c)
    assert a.key(c) != a.key(cand(2))
    led.close()


# --- the API judges through the layer, against the stand-in -----------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_429_retry_after_is_honoured(kind, tmp_path):
    # 5 requests/s with a bucket of 1: of two calls sent together the second gets a 429 whose
    # retry-after (~0.2 s) says when it would be admitted
    with StandIn(FaultPlan(rpm=300, burst_s=0.2)) as s:
        seen: list[float | None] = []

        async def main():
            panel, svc = build(tmp_path, table(kind, s))
            lim = limiter(svc)
            orig = lim.on_rate_limited
            lim.on_rate_limited = lambda ra: (seen.append(ra), orig(ra))[1]
            t0 = time.perf_counter()
            try:
                vs = await asyncio.gather(judge1(panel, cand(1)), judge1(panel, cand(2)))
            finally:
                await panel.aclose()
            return vs, time.perf_counter() - t0, lim

        vs, wall, lim = run(main())
        assert all(v.error is None and v.passed for v in vs)
        assert s.stats["429"] == 1 and s.stats["ok"] == 2 and s.stats["requests"] == 3
        assert lim.stats.rate_limited == 1 and lim.stats.acquired == 3
        (ra,) = seen
        assert 0.1 < ra <= 0.25
        t429 = next(r["t"] for r in s.requests if r["outcome"] == "429")
        retry_t = s.requests[-1]["t"]
        assert retry_t - t429 >= ra - 0.01  # waited the server's retry-after, not less
        assert wall >= ra
        assert sorted(v.usage.requests for v in vs) == [1, 2]


@pytest.mark.parametrize("kind", KINDS)
def test_5xx_529_timeouts_and_dropped_connections_are_retried(kind, tmp_path):
    with StandIn(FaultPlan(slow_s=5.0)) as s:
        s.script.extend(["500", "529", "drop", "slow"])

        async def main():
            panel, svc = build(tmp_path, table(kind, s, timeout_s=0.5, max_attempts=5))
            t0 = time.perf_counter()
            try:
                return await judge1(panel, cand(1)), time.perf_counter() - t0, svc
            finally:
                await panel.aclose()

        v, wall, svc = run(main())
        assert v.error is None and v.passed
        assert [r["outcome"] for r in s.requests] == ["500", "529", "drop", "slow", "ok"]
        assert s.stats["requests"] == 5 and limiter(svc).stats.acquired == 5
        assert v.usage.requests == 5  # every attempt counted
        assert 0.5 <= wall < 4.0  # the slow attempt was cut at timeout_s, not waited out


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_output_asked_again_once_then_error_verdict_with_both_attempts_costed(kind, srv, tmp_path):
    async def main():
        panel, svc = build(tmp_path, table(kind, srv, max_attempts=5))
        try:
            srv.script.extend(["malformed", "ok"])
            fixed = await judge1(panel, cand(1))
            srv.script.extend(["malformed", "malformed", "ok"])
            broken = await judge1(panel, cand(2))
            return fixed, broken, panel, svc
        finally:
            await panel.aclose()

    fixed, broken, panel, svc = run(main())
    outcomes = [r["outcome"] for r in srv.requests]
    assert outcomes == ["malformed", "ok", "malformed", "malformed"]  # the 3rd "ok" never asked for
    assert srv.script.popleft() == "ok"
    assert fixed.error is None and fixed.passed and fixed.usage.requests == 2
    in_tok = len(prompt_of(srv.requests[0])) // 4
    assert fixed.usage.input_tokens == 2 * in_tok
    assert fixed.usage.cost_usd == pytest.approx(price(fixed.usage.input_tokens, fixed.usage.output_tokens))
    assert broken.error is not None and "did not parse" in broken.error
    assert broken.passed is False and broken.score == 0.0
    assert broken.usage.requests == 2 and broken.usage.input_tokens == 2 * len(prompt_of(srv.requests[2])) // 4
    assert broken.usage.output_tokens > 0
    assert broken.usage.cost_usd == pytest.approx(price(broken.usage.input_tokens, broken.usage.output_tokens))
    st = panel.stats[broken.teacher]
    assert st.errors == 1 and st.cost_usd == pytest.approx(fixed.usage.cost_usd + broken.usage.cost_usd)
    assert svc.budget.spent_usd == pytest.approx(st.cost_usd)
    assert limiter(svc).stats.acquired == 4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", ["400", "401"])
def test_400_and_401_are_not_retried(kind, status, srv, tmp_path):
    srv.script.extend([status, "ok"])

    async def main():
        panel, svc = build(tmp_path, table(kind, srv))
        try:
            return await judge1(panel, cand(1)), svc
        finally:
            await panel.aclose()

    v, svc = run(main())
    assert v.error is not None and f"HTTP {status}" in v.error and v.passed is False
    assert srv.stats["requests"] == 1 and limiter(svc).stats.acquired == 1
    assert list(srv.script) == ["ok"]


@pytest.mark.parametrize("kind", KINDS)
def test_max_attempts_bounds_requests_and_sdk_retries_are_off(kind, srv, tmp_path):
    srv.script.extend(["500"] * 10)

    async def main():
        panel, svc = build(tmp_path, table(kind, srv, max_attempts=3), table(
            kind, srv, name="once", max_attempts=1, cost_rank=5))
        try:
            clients = [t.adapter._client for t in panel.teachers]
            by_name = {t.name: t for t in panel.teachers}
            three = await panel._call(by_name[table(kind, srv)["name"]], cand(1))
            n3 = srv.stats["requests"]
            one = await panel._call(by_name["once"], cand(2))
            return clients, three, n3, one, svc
        finally:
            await panel.aclose()

    clients, three, n3, one, svc = run(main())
    assert all(c.max_retries == 0 for c in clients)
    assert n3 == 3 and three.error is not None and "HTTP 500" in three.error
    assert three.usage.requests == 3
    assert srv.stats["requests"] == 4 and one.error is not None  # one attempt: the server saw one
    assert limiter(svc).stats.acquired == 4 and len(srv.script) == 6


@pytest.mark.parametrize("kind", KINDS)
def test_identical_candidates_in_flight_share_one_call(kind, tmp_path):
    with StandIn(FaultPlan(latency_mean_s=0.1)) as s:
        c = cand(1)
        twin = c.model_copy(update={"id": "twin"})

        async def main():
            led = Ledger(tmp_path / "l.sqlite")
            panel, svc = build(tmp_path, table(kind, s), ledger=led)
            (t,) = panel.teachers
            try:
                vs = await asyncio.gather(t.judge(c), t.judge(twin))
                s.script.extend(["400"])  # a shared failure: both see it, only one paid for it
                errs = await asyncio.gather(panel._call(t, cand(2)), panel._call(t, cand(2)))
                return vs, errs, svc, panel
            finally:
                await panel.aclose()
                led.close()

        vs, errs, svc, _ = run(main())
        assert s.stats["requests"] == 2 and limiter(svc).stats.acquired == 2
        assert sorted(v.cached for v in vs) == [False, True]
        assert vs[0].passed == vs[1].passed and vs[0].score == vs[1].score
        assert sum(v.usage.cost_usd for v in vs) == vs[0].usage.cost_usd + vs[1].usage.cost_usd > 0
        assert all(e.error and "HTTP 400" in e.error for e in errs)
        assert sorted(e.usage.requests for e in errs) == [0, 1]  # the follower is not billed again


def test_limits_are_learned_from_a_429s_headers(tmp_path):
    with StandIn(FaultPlan(rpm=6000)) as s:
        s.script.append("429")

        async def main():
            panel, svc = build(tmp_path, table("openai", s, rpm=60_000, max_attempts=1))
            try:
                return await judge1(panel, cand(1)), limiter(svc)
            finally:
                await panel.aclose()

        v, lim = run(main())
    assert v.error is not None and "HTTP 429" in v.error and s.stats["requests"] == 1
    assert lim.stats.learned["requests"] == 6000 and lim.requests.rate == pytest.approx(100)
    assert lim.factor == 1.0  # within the limit the 429 itself stated: no cut



# --- fail fast: the endpoint's circuit breaker ----------------------------------------------------
def auth_error() -> TeacherError:
    return TeacherError("HTTP 401 AuthenticationError: Invalid API key.", status=401, kind="auth")


def test_a_401_halts_every_teacher_on_the_endpoint_after_one_request():
    first, second = Scripted(auth_error(), ok()), Scripted(ok())
    second.name = "other"  # another teacher on the same endpoint (same base URL and key)
    svc = services()
    a, b = svc.stack(first), svc.stack(second)
    with pytest.raises(TeacherError) as ei:  # the 401 itself is this call's answer: not retried
        run(a.call("x"))
    assert ei.value.kind == "auth" and first.calls == 1
    for stack in (a, b):
        with pytest.raises(Halted) as halted:
            run(stack.call("y"))
        assert "'scripted'" in str(halted.value) and "HTTP 401" in str(halted.value)
        assert isinstance(halted.value, CallsStopped)  # the one stop signal the panel knows
    assert first.calls == 1 and second.calls == 0  # nothing more was sent
    assert a.limiter.stats.acquired == 1
    assert svc.halted() is not None


def test_n_attempts_in_a_row_without_an_answer_halt_the_endpoint_an_answer_resets_the_count():
    conn = lambda: err("connection")  # noqa: E731
    adapter = Scripted(conn(), conn(), err("server"), conn(), conn(), conn(), ok())
    svc = services(breaker_failures=3)
    stack = svc.stack(adapter)
    with pytest.raises(TeacherError):  # conn, conn, 5xx (an answer: the count restarts), conn, conn
        run(stack.call("x"))
    assert adapter.calls == 5 and svc.halted() is None
    with pytest.raises(Halted) as ei:  # the third in a row trips it; the retry is refused unsent
        run(stack.call("y"))
    assert adapter.calls == 6 and "3 attempts in a row got no answer" in str(ei.value)
    assert ei.value.usage is not None and ei.value.usage.requests == 1  # the attempt that was sent
    assert svc.breaker(adapter.endpoint_key).down is not None


def test_another_endpoint_is_not_halted():
    down, up = Scripted(auth_error()), Scripted(ok())
    up.endpoint_key = "http://elsewhere#1"
    svc = services()
    with pytest.raises(TeacherError):
        run(svc.stack(down).call("x"))
    assert run(svc.stack(up).call("x")).value.passed


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_key_names_the_teacher_status_base_url_and_key_variable_never_the_key(kind, srv, tmp_path):
    srv.script.extend(["401"] * 10)

    async def main():
        panel, _ = build(tmp_path, table(kind, srv))
        try:
            first = await judge1(panel, cand(1))
            with pytest.raises(Halted) as ei:
                await panel.judge(cand(2))
            return first, ei.value
        finally:
            await panel.aclose()

    first, halted = run(main())
    t = table(kind, srv)
    assert first.error is not None and "HTTP 401" in first.error
    msg = str(halted)
    assert f"teacher {t['name']!r}: HTTP 401 from {t['base_url']}" in msg
    assert f"${t['api_key_env']}" in msg and "\n" not in msg
    assert not any(k in msg for k in KEYS)
    assert srv.stats["requests"] == 1  # the second candidate never reached the server


# --- the ledger: a verdict the run paid for but never journaled is counted once ------------------
def test_a_resumed_run_counts_its_own_unjournaled_verdict_once_and_nothing_else(tmp_path: Path):
    path, c = tmp_path / "l.sqlite", cand(1)
    paying = services(ledger=Ledger(path, owner="run-1"))
    first = run(paying.wrap(Scripted(ok())).judge(c))
    assert not first.cached and first.usage.cost_usd == pytest.approx(EST_COST)
    paying.close()  # killed before the verdict reached the journal: nothing settled it

    other = services(ledger=Ledger(path, owner="run-2"))  # another run: free, as ever
    v = run(other.wrap(Scripted()).judge(c))
    assert v.cached and v.usage == Usage() and other.budget.spent_usd == 0
    other.close()

    resumed = services(ledger=Ledger(path, owner="run-1"))
    adapter = Scripted()
    teacher = resumed.wrap(adapter)
    again = run(teacher.judge(c))
    assert adapter.calls == 0  # from the ledger, not paid twice
    assert not again.cached and again.usage == first.usage  # ... and not free: its cost, once
    assert resumed.budget.spent_usd == pytest.approx(EST_COST)
    twin = run(teacher.judge(c.model_copy(update={"id": "twin"})))
    assert twin.cached and twin.usage == Usage()  # a second hit is free
    resumed.close()


def test_a_settled_verdict_is_free_for_its_own_run_too(tmp_path: Path):
    path, c = tmp_path / "l.sqlite", cand(1)
    svc = services(ledger=Ledger(path, owner="run-1"))
    teacher = svc.wrap(Scripted(ok()))
    run(teacher.judge(c))
    teacher.settle(c)  # the journal holds it
    svc.close()
    again = services(ledger=Ledger(path, owner="run-1"))
    v = run(again.wrap(Scripted()).judge(c))
    assert v.cached and v.usage == Usage()
    again.close()


def test_a_ledger_that_fails_mid_run_halts_the_calls_naming_the_file(tmp_path: Path):
    import sqlite3

    svc = services(ledger=Ledger(tmp_path / "l.sqlite", owner="run-1"))
    adapter = Scripted(ok(), ok())
    teacher = svc.wrap(adapter)
    assert isinstance(teacher, PaidTeacher) and teacher.cache is not None
    led = teacher.cache.ledger

    def broken_put(key: str, verdict: Verdict) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    led.put = broken_put  # type: ignore[method-assign]
    paid = run(teacher.judge(cand(1)))
    assert paid.error is None and not paid.cached  # paid for: kept, never turned into an error
    with pytest.raises(Halted) as ei:
        run(teacher.judge(cand(2)))
    assert adapter.calls == 1 and str(tmp_path / "l.sqlite") in str(ei.value)
    assert "--no-cache" in str(ei.value) and svc.halted() is not None
    svc.close()


# --- where a call's time went: service vs waiting for the limiter (issue 11, item 7) -------------
class Timed(Scripted):
    """Answers after ``service_s`` of the services' (virtual) clock, with ``headers``."""

    def __init__(self, clock: FakeClock, service_s: float, n: int, headers: dict[str, str] | None = None,
                 rpm: float | None = None) -> None:
        super().__init__(*[ok(headers) for _ in range(n)])
        self.clock, self.service_s = clock, service_s
        self.limits = EndpointLimits(rpm=rpm)

    async def call(self, request: Any) -> Paid[Verdict]:
        await self.clock.sleep(self.service_s)
        return await super().call(request)


def _judged(n: int, *, rpm: float, headers: dict[str, str] | None = None) -> tuple[list[Verdict], PaidTeacher]:
    svc = services()
    adapter = Timed(svc.clock, 0.05, n, headers, rpm=rpm)
    teacher = svc.wrap(adapter)
    assert isinstance(teacher, PaidTeacher)

    async def go() -> list[Verdict]:
        return [await teacher.judge(cand(f"c{i}")) for i in range(n)]

    return run(go()), teacher


def test_a_judge_call_splits_its_time_into_service_and_limiter_wait():
    from tgrs_agents.events import TeacherStats

    # 60 requests/min and one token banked: the first call goes at once, each later one waits for
    # its token (0.95 s after a 0.05 s call), while the server itself answers in 0.05 s
    vs, _ = _judged(4, rpm=60)
    assert [v.service_s for v in vs] == pytest.approx([0.05] * 4)
    assert [v.wait_s for v in vs] == pytest.approx([0.0, 0.95, 0.95, 0.95])
    st = TeacherStats()
    for v in vs:
        st.add(v)
    t = st.timing()
    assert t is not None and t["calls"] == 4 and t["wait_share"] == pytest.approx(2.85 / 3.05, abs=1e-4)
    assert t["service_s_p50_p90_p99"] == pytest.approx([0.05] * 3, rel=0.011)  # not the 1 s queue
    assert t["wait_s_p50_p90_p99"] == pytest.approx([0.95] * 3, rel=0.011)
    assert st.to_json()["timing"] == t


def test_the_limit_report_names_the_users_own_rpm_when_it_binds():
    stated = {"x-ratelimit-limit-requests": "10000", "x-ratelimit-remaining-requests": "9990"}
    _, teacher = _judged(4, rpm=60, headers=stated)
    rep = teacher.limit_report()
    assert rep is not None and rep["binding"] == "rpm" and rep["source"] == "config"
    assert rep["configured_per_min"] == 60 and rep["provider_per_min"] == 10000
    assert rep["wait_share"] == pytest.approx(0.934, abs=1e-3)
    assert rep["note"] == ("teacher scripted: 93% of its call time waiting on your rpm = 60 limit "
                           "(teacher file; the provider allows 10000)")


def test_the_limit_report_blames_the_provider_when_its_stated_limit_is_lower():
    stated = {"x-ratelimit-limit-requests": "30", "x-ratelimit-remaining-requests": "29"}
    _, teacher = _judged(4, rpm=60, headers=stated)
    rep = teacher.limit_report()
    assert rep is not None and rep["source"] == "provider" and rep["limit_per_min"] == 30
    assert "the provider's rpm = 30 limit" in rep["note"]


def test_the_limit_report_stays_quiet_when_the_limiter_is_not_the_bottleneck():
    _, teacher = _judged(3, rpm=60_000)
    rep = teacher.limit_report()
    assert rep is not None and rep["wait_share"] < 0.25 and rep["note"] is None
