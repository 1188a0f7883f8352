"""The cluster's rate limit, budget and leases without Ray: LeaseBank, LeasedLimiter, SharedBudget
in virtual time (a discrete-event clock: sleepers wake in time order once every task is blocked)."""

from __future__ import annotations

import asyncio
import heapq
import itertools

import pytest

from tgrs_agents.cluster.budget import SharedBudget
from tgrs_agents.cluster.leases import BudgetBook, LeaseBank
from tgrs_agents.cluster.limiter import LeasedLimiter, LeasedRegistry, LocalBank
from tgrs_agents.errors import BudgetExhausted
from tgrs_agents.paid.limits import EndpointLimiter, EndpointLimits, FakeClock


class SimClock:
    """Virtual time shared by concurrent tasks: :meth:`run` advances to the earliest sleeper only
    when nothing else can run, so concurrent sleeps overlap as they would in real time."""

    def __init__(self) -> None:
        self.t = 0.0
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (self.t + max(seconds, 0.0), next(self._seq), fut))
        await fut

    async def run(self, coro):
        task = asyncio.ensure_future(coro)
        while not task.done():
            for _ in range(20):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if task.done():
                break
            while self._heap and self._heap[0][2].done():
                heapq.heappop(self._heap)
            if self._heap:
                due, _, fut = heapq.heappop(self._heap)
                self.t = max(self.t, due)
                fut.set_result(None)
        return task.result()


RPM = 600  # 10 requests a second for the whole cluster


def workers(clock, n: int, bank: LeaseBank) -> list[LeasedLimiter]:
    client = LocalBank(bank)
    return [LeasedLimiter(f"e{i}", EndpointLimits(rpm=RPM), client, clock, lease_requests=1 << 30)
            for i in range(n)]


async def hammer(lim: EndpointLimiter, n: int, starts: list[float], clock) -> None:
    async def one() -> None:
        permit = await lim.acquire()
        starts.append(permit)
        await clock.sleep(0.05)  # the call
        lim.release(permit=permit)

    await asyncio.gather(*(one() for _ in range(n)))


def max_in_window(starts: list[float], window: float) -> int:
    s = sorted(starts)
    return max(sum(1 for t in s[i:] if t < s[i] + window) for i in range(len(s)))


def test_three_workers_together_keep_the_clusters_rate():
    clock = SimClock()
    bank = LeaseBank(EndpointLimits(rpm=RPM), clock)
    lims = workers(clock, 3, bank)
    starts: list[float] = []

    async def main():
        await asyncio.gather(*(hammer(lim, 40, starts, clock) for lim in lims))

    clock.run_result = asyncio.run(clock.run(main()))
    assert len(starts) == 120
    # 120 requests at 10/s: about 12 s, whatever the number of workers
    assert max(starts) == pytest.approx(11.9, abs=0.5)
    assert max_in_window(starts, 1.0) <= 10 + 2  # a second's worth, plus a lease in flight
    assert bank.stats.grants >= 120 / bank.lease_size()[0]  # in leases, never one call each
    assert bank.stats.grants < 120


def test_without_the_bank_three_limiters_would_triple_the_rate():
    # the failure the bank exists to prevent: each process believes it owns the whole quota
    clock = SimClock()
    lims = [EndpointLimiter(f"e{i}", EndpointLimits(rpm=RPM), clock) for i in range(3)]
    starts: list[float] = []

    async def main():
        await asyncio.gather(*(hammer(lim, 40, starts, clock) for lim in lims))

    asyncio.run(clock.run(main()))
    assert max_in_window(starts, 1.0) >= 25


def test_a_429_on_one_worker_pauses_every_worker():
    clock = SimClock()
    bank = LeaseBank(EndpointLimits(rpm=RPM), clock)
    a, b = workers(clock, 2, bank)
    starts_b: list[float] = []

    async def main():
        await hammer(a, 5, [], clock)  # a is warm; now a 429 with retry-after 3 s reaches it
        a.on_rate_limited(3.0)
        t429 = clock.now()
        await hammer(b, 5, starts_b, clock)
        return t429

    t429 = asyncio.run(clock.run(main()))
    assert bank.stats.rate_limited == 1 and bank.epoch == 1
    # b never heard the 429 itself; the bank made it wait the pause out (less a lease already held)
    assert min(starts_b) >= t429 + 3.0 - 1.0 / (RPM / 60) - 1e-9
    assert LeaseBank.DECREASE <= bank.factor < 1.0  # cut once, recovering as grants go out


def test_unused_quota_is_returned_and_a_voided_lease_is_not():
    clock = FakeClock()
    bank = LeaseBank(EndpointLimits(rpm=6000), clock)  # 100/s: leases of 20
    lease = bank.grant(1 << 30)
    assert lease.requests == 20
    level = bank.requests.tokens
    bank.give_back(lease.epoch, 15)
    assert bank.requests.tokens == pytest.approx(level + 15)
    assert bank.stats.returned == 15
    old = bank.grant(5)
    bank.rate_limited(1.0)
    before = bank.requests.tokens
    bank.give_back(old.epoch, 5)  # granted before the 429: the server has none of it for us
    assert bank.requests.tokens == before and bank.stats.voided == 5


def test_a_worker_gives_back_its_lease_when_it_ends():
    async def main():
        clock = FakeClock()
        bank = LeaseBank(EndpointLimits(rpm=6000), clock)
        reg = LeasedRegistry(lambda key, limits: LocalBank(bank), clock)
        lim = reg.get("e", EndpointLimits(rpm=6000))
        assert reg.get("e", EndpointLimits(rpm=6000)) is lim
        permit = await lim.acquire()
        lim.release(permit=permit)
        reg.close()
        return bank

    bank = asyncio.run(main())
    # one caller asked for one request: the bank's floor, a quarter lease (5 of 20), and 4 came back
    assert bank.stats.requests == 5 and bank.stats.returned == 4


def test_a_lease_is_sized_to_the_callers_waiting_so_the_last_ones_book_no_idle_quota():
    async def main(n):
        clock = FakeClock()
        bank = LeaseBank(EndpointLimits(rpm=6000), clock)  # 100/s: leases of 20, at least 5
        lim = LeasedLimiter("e", EndpointLimits(rpm=6000), LocalBank(bank), clock, lease_requests=1 << 30)
        asked = []
        grant = bank.grant
        bank.grant = lambda k, t=0.0: asked.append(k) or grant(k, t)  # type: ignore[method-assign]

        async def call():
            permit = await lim.acquire()
            lim.release(permit=permit)

        await asyncio.gather(*(call() for _ in range(n)))  # n callers, then the worker's work is done
        booked = bank.stats.requests
        lim.close()
        return asked, booked

    asked, booked = asyncio.run(main(23))
    # the first caller finds no queue yet (it gets the floor, 5); then the 18 still waiting ask for 18:
    # 23 booked for 23 calls, where leases of a fixed 20 would have booked 40 and held 17 idle until
    # the worker ended (the cluster's other workers waiting behind them)
    assert asked == [1, 18] and booked == 23
    asked, booked = asyncio.run(main(60))
    assert max(asked) >= 20 and booked - 60 < 5  # a long queue asks for whole leases (capped at 20)


def test_token_leases_reconcile_the_estimate_with_the_usage():
    async def main():
        clock = FakeClock()
        bank = LeaseBank(EndpointLimits(rpm=6000, tpm=600_000), clock)  # 10,000 tokens/s: leases of 2,000
        lim = LeasedLimiter("e", EndpointLimits(rpm=6000, tpm=600_000), LocalBank(bank), clock,
                            lease_requests=1 << 30, lease_tokens=bank.lease_size()[1])
        permit = await lim.acquire(800, 200)
        lim.release(800, 200, 300, 100, permit=permit)  # used 400 of the 1,000 estimated
        return lim

    lim = asyncio.run(main())
    assert lim._tok == pytest.approx(2000 - 1000 + 600)


def test_a_limit_learned_from_headers_tightens_the_whole_cluster():
    clock = FakeClock()
    bank = LeaseBank(EndpointLimits(rpm=6000), clock)
    lim = LeasedLimiter("e", EndpointLimits(rpm=6000), LocalBank(bank), clock)
    lim.learn({"x-ratelimit-limit-requests": "1200", "x-ratelimit-remaining-requests": "1100",
               "x-ratelimit-reset-requests": "1s"})
    assert bank.requests.rate == pytest.approx(20.0)


# --- the budget ---------------------------------------------------------------------------------
class Book:
    def __init__(self, limit: float) -> None:
        self.book = BudgetBook(limit)
        self.asked = 0

    def reserve(self, usd: float) -> float:
        self.asked += 1
        return self.book.reserve(usd)

    def settle(self, granted: float, spent: float) -> None:
        self.book.settle(granted, spent)


def test_two_workers_share_one_budget_and_it_is_never_overrun():
    book = Book(1.0)
    a, b = (SharedBudget(1.0, book=book) for _ in range(2))
    paid = 0
    with pytest.raises(BudgetExhausted):
        while True:
            for w in (a, b):
                tok = w.reserve(0.0013)
                w.settle(tok, 0.001)  # a call cheaper than its estimate
                paid += 1
    a.close(), b.close()
    assert book.book.spent_usd == pytest.approx(0.001 * paid)
    assert book.book.spent_usd <= 1.0 and book.book.out_usd == pytest.approx(0.0)
    assert paid >= 990  # the estimates' slack is spent, not stranded in a worker's allowance
    assert book.asked < paid / 10  # allowances, not one ask per call


def test_the_book_refuses_nothing_without_a_limit():
    book = BudgetBook(None)
    assert book.reserve(5.0) == 5.0
    book.settle(5.0, 2.0)
    assert book.spent_usd == 2.0 and book.out_usd == 0.0


def test_the_first_second_is_paced_from_the_first_grant_not_the_banks_creation():
    clock = FakeClock()
    bank = LeaseBank(EndpointLimits(rpm=3000), clock)  # 50/s; a lease is 0.2 s: 10 requests
    clock.t += 30.0  # created by the driver long before any worker asks
    first = bank.grant(1 << 30)
    second = bank.grant(1 << 30)
    assert first.requests == second.requests == 10
    assert first.wait_s == pytest.approx(9 / 50)  # one request banked, the rest paced
    assert second.wait_s == pytest.approx(19 / 50)
