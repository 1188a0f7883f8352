"""The cluster's paid-call state as plain objects: a lease bank per endpoint and a budget book.

Every worker of a cluster run calls the same endpoints, so the provider's quota has one owner: the
:class:`LeaseBank` of the endpoint (inside a named Ray actor, :mod:`.actors`). Asking it for every
call would put the actor on the hot path, so it grants quota in small **leases**: a few requests and
tokens, each lease valid for a short while; the worker spends a lease through its own pacing
(:class:`~.limiter.LeasedLimiter`) and gives back what it did not use. The bank runs on debt like
the single-process limiter (:class:`~tgrs_agents.paid.buckets.TokenBucket`): a grant says how long
to wait before spending it, so workers are served in turn and the cluster's rate is exact.

A 429 anywhere reaches the bank: it pauses every grant for the server's ``retry-after`` (the debt it
books covers the pause), voids the leases already out (a new *epoch*: their unspent quota is not
credited back, since the server has none for us), and cuts the rate once per episode, recovering
additively as grants go out -- the single-process limiter's rule, for the whole cluster at once.
A worker holds at most a lease's worth (``LEASE_S`` of the cluster's rate), so that is all it can
spend after a 429 before it learns of the pause.

Times cross process (and machine) boundaries, so the protocol speaks durations, never clock
readings. The :class:`BudgetBook` is the run's budget, granted to workers in allowances the same way;
the :class:`ClaimBook`, which worker is paying for which content (:mod:`.dedupe`). This module
imports little: an actor process that holds one of these starts the faster.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..paid.buckets import Clock, SystemClock, TokenBucket
from ..paid.limits import EndpointLimits


@dataclass(frozen=True, slots=True)
class Lease:
    """Quota a worker may spend: ``requests`` calls and ``tokens`` tokens, from ``wait_s`` from now
    until ``valid_s`` from now; ``epoch`` ties it to the bank's state (a 429 starts a new one)."""

    requests: int
    tokens: float
    wait_s: float
    valid_s: float
    epoch: int


@dataclass(slots=True)
class BankStats:
    grants: int = 0
    requests: int = 0  # granted
    returned: float = 0.0  # requests given back unused
    voided: float = 0.0  # requests given back from a voided lease (not credited)
    rate_limited: int = 0
    cuts: int = 0


class LeaseBank:
    """One endpoint's quota for the whole cluster (``limits.rpm`` / ``limits.tpm``)."""

    LEASE_S = 0.2  # a lease is at most this much of the cluster's rate
    MIN_SHARE = 0.25  # and at least this share of that: a worker asks for what its callers wait for,
    # so its last leases book no quota it will not spend; the floor keeps a worker whose calls come
    # one at a time from asking the actor for every call
    VALID_S = 1.0  # and must be spent within this long of its start
    DECREASE = 0.7  # 429s cut the rate (once per episode) ...
    EPISODE_S = 1.0
    MIN_FACTOR = 0.1
    RECOVER_PER_REQUEST = 0.01  # ... and it recovers as requests go out

    def __init__(self, limits: EndpointLimits, clock: Clock | None = None) -> None:
        self.limits = limits
        self.clock = clock or SystemClock()
        now = self.clock.now()
        # the first second is paced, not a herd: one request banked at the start, as in EndpointLimiter
        self.requests = TokenBucket(limits.rpm / 60, max(1.0, limits.rpm / 60), now, 1.0) if limits.rpm else None
        self.tokens = TokenBucket(limits.tpm / 60, max(1.0, limits.tpm / 60), now) if limits.tpm else None
        self._base = {"requests": self.requests.rate if self.requests else 0.0,
                      "tokens": self.tokens.rate if self.tokens else 0.0}
        self.factor = 1.0
        self.epoch = 0
        self._episode = -1e9
        self.stats = BankStats()

    def lease_size(self) -> tuple[int, float]:
        """What a worker should ask for: ``LEASE_S`` of the rate (at least one request)."""
        r = max(1, math.floor(self.requests.rate * self.LEASE_S)) if self.requests else 64
        t = self.tokens.rate * self.LEASE_S if self.tokens else 0.0
        return r, t

    def grant(self, requests: int, tokens: float = 0.0) -> Lease:
        """Grant ``requests``, at most a lease's worth and at least ``MIN_SHARE`` of one (never less
        than one request, nor than ``tokens``)."""
        now = self.clock.now()
        if self.stats.grants == 0 and self.requests is not None:
            # paced from the first grant, not from the bank's creation: the driver creates it early
            # (while the pre-pass runs), and a bucket filled meanwhile would let the first second herd
            self.requests.tokens, self.requests.t = min(self.requests.tokens, 1.0), now
        cap = self.lease_size()[0]
        n = max(1, min(int(requests), cap), math.ceil(cap * self.MIN_SHARE) if self.requests else 1)
        wait = 0.0
        if self.requests is not None:
            wait = self.requests.reserve(n, now)
        t = 0.0
        if self.tokens is not None and tokens > 0:
            t = float(tokens)
            wait = max(wait, self.tokens.reserve(t, now))
        self.stats.grants += 1
        self.stats.requests += n
        if self.factor < 1.0:
            self._set_factor(min(1.0, self.factor + self.RECOVER_PER_REQUEST * n))
        return Lease(n, t, wait, wait + self.VALID_S, self.epoch)

    def give_back(self, epoch: int, requests: float, tokens: float = 0.0) -> None:
        """Unused quota of a lease: credited back unless a 429 voided its epoch since."""
        if epoch != self.epoch:
            self.stats.voided += requests
            return
        now = self.clock.now()
        self.stats.returned += requests
        if self.requests is not None and requests > 0:
            self.requests.credit(requests, now)
        if self.tokens is not None and tokens > 0:
            self.tokens.credit(tokens, now)

    def rate_limited(self, retry_after: float | None) -> int:
        """A 429 on any worker: pause every grant, void the leases out, cut once per episode."""
        now = self.clock.now()
        pause = retry_after if retry_after is not None else 1.0
        self.stats.rate_limited += 1
        self.epoch += 1
        if now - self._episode >= self.EPISODE_S:
            self._episode = now
            self.stats.cuts += 1
            self._set_factor(max(self.MIN_FACTOR, self.factor * self.DECREASE))
        if self.requests is not None:  # the next grant waits out the pause, and then is paced
            self.requests.clamp(1.0 - pause * self.requests.rate, now)
        return self.epoch

    def tighten(self, rpm: float | None = None, tpm: float | None = None) -> None:
        """A worker learned (from headers, or its own config) a lower limit: the cluster keeps it."""
        for name, per_min in (("requests", rpm), ("tokens", tpm)):
            bk = getattr(self, name)
            if bk is not None and per_min and per_min / 60 < self._base[name]:
                self._base[name] = per_min / 60
                bk.rate = self._base[name] * self.factor
                bk.capacity = max(1.0, self._base[name])
                bk.tokens = min(bk.tokens, bk.capacity)

    def _set_factor(self, f: float) -> None:
        self.factor = f
        for name in ("requests", "tokens"):
            bk = getattr(self, name)
            if bk is not None:
                bk.rate = self._base[name] * f

    def report(self) -> dict[str, float]:
        s = self.stats
        return {"grants": s.grants, "requests": s.requests, "returned": s.returned, "voided": s.voided,
                "rate_limited": s.rate_limited, "cuts": s.cuts, "factor": round(self.factor, 4)}


@dataclass
class BudgetBook:
    """The run's budget (USD; ``limit_usd=None``: no cap), granted to workers in allowances.

    ``reserve(usd)`` grants at most what is left (it may grant less than asked; 0 when the budget is
    spent); ``settle(granted, spent)`` takes back an allowance, counting what it spent."""

    limit_usd: float | None = None
    spent_usd: float = 0.0
    out_usd: float = 0.0  # granted and not yet settled
    refused: int = 0

    def reserve(self, usd: float) -> float:
        if self.limit_usd is None:
            self.out_usd += usd
            return usd
        left = max(0.0, self.limit_usd - self.spent_usd - self.out_usd)
        got = min(usd, left)
        if got <= 0:
            self.refused += 1
            return 0.0
        self.out_usd += got
        return got

    def settle(self, granted: float, spent: float) -> None:
        self.out_usd = max(0.0, self.out_usd - granted)
        self.spent_usd += spent

    def report(self) -> dict[str, float | None]:
        return {"limit_usd": self.limit_usd, "spent_usd": round(self.spent_usd, 6),
                "out_usd": round(self.out_usd, 6), "refused": self.refused}


class ClaimBook:
    """Which worker is paying for which content key (held in one actor per run)."""

    TTL_S = 120.0

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.held: dict[str, tuple[str, float]] = {}
        self.granted = self.refused = 0

    def claim(self, key: str, holder: str) -> bool:
        now = self.clock.now()
        cur = self.held.get(key)
        if cur is not None and cur[0] != holder and cur[1] > now:
            self.refused += 1
            return False
        self.held[key] = (holder, now + self.TTL_S)
        self.granted += 1
        return True

    def release(self, key: str, holder: str) -> None:
        cur = self.held.get(key)
        if cur is not None and cur[0] == holder:
            del self.held[key]

    def report(self) -> dict[str, int]:
        return {"granted": self.granted, "refused": self.refused, "held": len(self.held)}
