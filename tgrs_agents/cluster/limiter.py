"""The worker's side of the cluster's rate limit: the single-process limiter, gated by leases.

:class:`LeasedLimiter` *is* an :class:`~tgrs_agents.paid.limits.EndpointLimiter` -- the wrappers
(:class:`~tgrs_agents.paid.wrappers.RateLimited`) call the same ``acquire`` / ``release`` /
``learn`` / ``on_rate_limited`` -- so calls in flight, local pacing, the server's headers and a
local 429 pause work exactly as in one process. What changes: before its local turn, a call takes
one request (and its estimated tokens) from a lease of the endpoint's
:class:`~.leases.LeaseBank`, which the worker fetches (one fetch at a time) when its lease is spent
or expired, and gives back unused. A 429 goes to the bank too, which pauses every worker.

:class:`LeasedRegistry` hands these out: ``Services(limiters=LeasedRegistry(banks))`` is all a
worker changes (see :mod:`.engine`). ``banks(key, limits)`` returns a :class:`BankClient`: an
in-process bank (tests, one machine) or a Ray actor's handle (:mod:`.actors`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Protocol

from ..paid.buckets import Clock
from ..paid.limits import EndpointLimiter, EndpointLimits, LimiterRegistry
from .leases import Lease, LeaseBank


class BankClient(Protocol):
    async def grant(self, requests: int, tokens: float) -> Lease: ...

    def give_back(self, epoch: int, requests: float, tokens: float) -> None: ...

    def rate_limited(self, retry_after: float | None) -> None: ...

    def tighten(self, rpm: float | None, tpm: float | None) -> None: ...


class LocalBank:
    """A :class:`LeaseBank` in this process, behind the client protocol (tests; one-machine runs)."""

    def __init__(self, bank: LeaseBank) -> None:
        self.bank = bank
        self.calls = 0

    async def grant(self, requests: int, tokens: float) -> Lease:
        self.calls += 1
        return self.bank.grant(requests, tokens)

    def give_back(self, epoch: int, requests: float, tokens: float) -> None:
        self.bank.give_back(epoch, requests, tokens)

    def rate_limited(self, retry_after: float | None) -> None:
        self.bank.rate_limited(retry_after)

    def tighten(self, rpm: float | None, tpm: float | None) -> None:
        self.bank.tighten(rpm, tpm)


class LeasedLimiter(EndpointLimiter):
    """An endpoint's limiter whose quota comes from the cluster's bank, a lease at a time."""

    def __init__(self, key: str, limits: EndpointLimits, bank: BankClient, clock: Clock | None = None,
                 *, lease_requests: int = 1, lease_tokens: float = 0.0) -> None:
        super().__init__(key, limits, clock)
        self.bank = bank
        self.lease_requests = lease_requests  # what to ask for (the bank caps it at its lease size)
        self.lease_tokens = lease_tokens
        self._req = 0.0  # what is left of the current lease
        self._tok = 0.0
        self._epoch = -1
        self._expires = -1e9
        self._fetch = asyncio.Lock()
        self._queued = 0  # callers waiting for quota (this one included): what a lease is sized to
        self.leases = 0

    async def acquire(self, est_in: int = 0, est_out: int = 0) -> float:
        need = float(est_in + est_out) if self.limits.tpm else 0.0
        self._queued += 1
        try:
            async with self._fetch:  # callers take quota in turn; one fetch at a time
                while not self._covers(need):
                    await self._renew(need)
                self._req -= 1
                self._tok -= need
        finally:
            self._queued -= 1
        return await super().acquire(est_in, est_out)

    def _covers(self, need: float) -> bool:
        return self._req >= 1 and self._tok >= need and self.clock.now() < self._expires

    async def _renew(self, need: float) -> None:
        self._give_back()
        # as many requests as callers wait for (the bank caps it at a lease): a worker whose work runs
        # out asks for what it will spend, so the cluster's quota is not booked for calls never made
        # (the last leases of a run would hold it back from the workers still busy)
        lease = await self.bank.grant(min(self.lease_requests, max(self._queued, 1)), max(need, self.lease_tokens))
        self.leases += 1
        now = self.clock.now()
        if lease.wait_s > 0:
            await self.clock.sleep(lease.wait_s)
        self._req, self._tok, self._epoch = float(lease.requests), lease.tokens, lease.epoch
        self._expires = now + lease.valid_s

    def _give_back(self) -> None:
        if self._req > 0 or self._tok > 0:
            self.bank.give_back(self._epoch, max(self._req, 0.0), max(self._tok, 0.0))
        self._req = self._tok = 0.0

    def release(self, est_in: int = 0, est_out: int = 0, used_in: int | None = None,
                used_out: int | None = None, *, permit: float | None = None) -> None:
        super().release(est_in, est_out, used_in, used_out, permit=permit)
        if self.limits.tpm and used_in is not None and used_out is not None:
            self._tok += (est_in + est_out) - (used_in + used_out)  # an overrun is debt on the lease

    def on_rate_limited(self, retry_after: float | None) -> None:
        super().on_rate_limited(retry_after)  # this worker pauses now
        self.bank.rate_limited(retry_after)  # and so does every other, at its next lease
        self._req = self._tok = 0.0  # this lease is void: the server has nothing left for us

    def learn(self, headers: Mapping[str, str], *, permit: float | None = None) -> None:
        before = dict(self._stated)
        super().learn(headers, permit=permit)
        if self._stated != before:  # the server stated a limit: the whole cluster keeps within it
            self.bank.tighten(self._stated.get("requests"), self._stated.get("tokens"))

    def close(self) -> None:
        """Give back what is left of the lease (the end of a shard)."""
        self._give_back()


class LeasedRegistry(LimiterRegistry):
    """The :class:`~tgrs_agents.paid.limits.LimiterRegistry` of a cluster worker: one
    :class:`LeasedLimiter` per endpoint, on the bank ``banks(key, limits)`` returns."""

    def __init__(self, banks: Callable[[str, EndpointLimits], BankClient], clock: Clock | None = None) -> None:
        super().__init__(clock)
        self.banks = banks

    def get(self, key: str, limits: EndpointLimits) -> EndpointLimiter:
        lim = self._by_key.get(key)
        if lim is None:
            lim = self._by_key[key] = LeasedLimiter(key, limits, self.banks(key, limits), self.clock,
                                                    lease_requests=1 << 30, lease_tokens=0.0)
        else:
            lim.tighten(limits)
        return lim

    def close(self) -> None:
        for lim in self._by_key.values():
            if isinstance(lim, LeasedLimiter):
                lim.close()
