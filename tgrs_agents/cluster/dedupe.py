"""Exactly-once verdicts across workers: a claim on content before paying for it.

In one process :class:`~tgrs_agents.paid.wrappers.Cached` already pays once per content: the ledger
(SQLite, WAL, on storage every worker sees) answers what was paid before, and its in-flight table
makes a second caller wait for the first. Two *workers* share the ledger but not that table, so both
could pay for the same content at once. :class:`ClusterCached` adds the missing piece: before a
paid call on a ledger miss, the worker claims the content's key in the run's :class:`ClaimBook`
(a Ray actor, :mod:`.actors`); a worker that finds the key claimed by another waits for the
verdict to reach the ledger (polling it, ``POLL_S``) and takes it from there, free, as a later hit
would be. A claim expires after ``TTL_S`` (its holder died mid-call); a holder whose call failed
releases it and the next claimant pays. The claim is one small actor call per paid call (the
ledger is checked first, so cached content never reaches the actor).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..paid.buckets import Clock, SystemClock
from ..paid.wrappers import Cached
from ..types import Candidate
from .leases import ClaimBook

__all__ = ["ClaimBook", "ClaimClient", "ClusterCached", "LocalClaims"]


class ClaimClient(Protocol):
    async def claim(self, key: str, holder: str) -> bool: ...

    def release(self, key: str, holder: str) -> None: ...


class LocalClaims:
    """A :class:`ClaimBook` in this process behind the client protocol (tests)."""

    def __init__(self, book: ClaimBook) -> None:
        self.book = book

    async def claim(self, key: str, holder: str) -> bool:
        return self.book.claim(key, holder)

    def release(self, key: str, holder: str) -> None:
        self.book.release(key, holder)


class ClusterCached(Cached):
    """:class:`~tgrs_agents.paid.wrappers.Cached` whose misses are claimed cluster-wide first."""

    POLL_S = 0.05

    def __init__(self, *args: Any, claims: ClaimClient, holder: str, clock: Clock | None = None,
                 **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.claims = claims
        self.holder = holder
        self.clock = clock or SystemClock()
        self.waited = 0  # calls that found another worker paying and waited for its verdict

    async def call(self, candidate: Candidate) -> Any:
        key = self.key(candidate)
        if key in self._inflight or self.ledger.failure is not None:
            return await super().call(candidate)  # a local leader (or a halt): as in one process
        waited = False
        while self.ledger.get(key) is None:
            if await self.claims.claim(key, self.holder):
                try:
                    return await super().call(candidate)
                finally:
                    self.claims.release(key, self.holder)
            waited = True
            await self.clock.sleep(self.POLL_S)
        self.waited += waited
        return await super().call(candidate)  # the ledger has it now: a free hit (or this run's own debt)
