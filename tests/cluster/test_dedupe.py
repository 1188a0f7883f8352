"""Two workers, one ledger file: content in flight on one worker is not paid again by the other."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tgrs_agents.cluster.dedupe import ClaimBook, ClusterCached, LocalClaims
from tgrs_agents.paid.call import CacheIdentity, Paid
from tgrs_agents.paid.ledger import Ledger
from tgrs_agents.paid.limits import FakeClock
from tgrs_agents.paid.wrappers import Cached
from tgrs_agents.types import Candidate, Message, Usage, Verdict

USED = Usage(requests=1, input_tokens=100, output_tokens=10, cost_usd=0.01)
IDENTITY = CacheIdentity({"kind": "slow"}, "prompt-hash")


class Slow:
    """A paid judge that takes a while: both workers are in flight at once."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def call(self, c: Candidate) -> Paid[Verdict]:
        self.calls.append(c.id)
        for _ in range(20):
            await asyncio.sleep(0)
        return Paid(Verdict(teacher="slow", passed=True, score=1.0, usage=USED), USED, {})


def cand(cid: str, text: str) -> Candidate:
    return Candidate(id=cid, messages=[Message(role="user", content="q"), Message(role="assistant", content=text)])


def two_workers(tmp_path: Path, claimed: bool) -> tuple[list, list[str]]:
    calls: list[str] = []
    book = LocalClaims(ClaimBook())
    out = []
    for w in range(2):
        led = Ledger(tmp_path / "ledger.sqlite")  # each worker its own connection, as its own process would
        if claimed:
            out.append(ClusterCached(Slow(calls), led, IDENTITY, name="slow", claims=book, holder=f"w{w}",
                                     clock=FakeClock()))
        else:
            out.append(Cached(Slow(calls), led, IDENTITY, name="slow"))
    return out, calls


def test_content_in_flight_on_one_worker_is_not_paid_by_another(tmp_path):
    (a, b), calls = two_workers(tmp_path, claimed=True)

    async def main():
        # the same content (different ids: two records of one trajectory) on two workers at once
        return await asyncio.gather(a.call(cand("x1", "same")), b.call(cand("x2", "same")),
                                    a.call(cand("y", "other")))

    ra, rb, _ry = asyncio.run(main())
    assert sorted(calls) == ["x1", "y"]  # one payment for "same", one for "other"
    assert not ra.cached and rb.cached and rb.usage == Usage()  # the follower's verdict was free
    assert rb.value.passed == ra.value.passed
    assert b.waited == 1 and a.claims.book.held == {}  # claims released after the call


def test_without_claims_both_workers_pay(tmp_path):
    # what ClusterCached exists to prevent: the in-flight table is per process
    (a, b), calls = two_workers(tmp_path, claimed=False)

    async def main():
        return await asyncio.gather(a.call(cand("x1", "same")), b.call(cand("x2", "same")))

    asyncio.run(main())
    assert len(calls) == 2


def test_a_dead_holders_claim_expires():
    clock = FakeClock()
    book = ClaimBook(clock)
    assert book.claim("k", "w0") and not book.claim("k", "w1")
    assert book.claim("k", "w0")  # a restarted holder takes its own claim again
    clock.t += ClaimBook.TTL_S + 1
    assert book.claim("k", "w1")
