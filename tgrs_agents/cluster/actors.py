"""The Ray actors that own the cluster's paid-call state, and the clients workers reach them with.

One named actor per endpoint (``tgrs-bank:<run>:<endpoint key>``) holds its
:class:`~.leases.LeaseBank`; one actor per run holds the :class:`~.leases.BudgetBook`, and one or
more (split by key hash: :func:`claim_parts`) the :class:`~.leases.ClaimBook`. They are got-or-created
by name (:func:`bank_handle`, :func:`book_handle`, :func:`claims_handle`), so whichever worker comes
first creates it and a restarted one finds the same one. Their methods are tiny and synchronous: a
grant is microseconds, so one actor serves thousands of leases a second
(``benchmarks/bench_ray_leases.py``), and a lease covers ``LEASE_S`` of rate, so it is far off the
hot path. Calls a worker need not wait for (a give-back, a 429, a limit learned) are fire-and-forget.

Ray is imported on first use (the actor classes are made then), so importing this module is free.
"""

from __future__ import annotations

import functools
import math
import zlib
from typing import Any

from ..paid.limits import EndpointLimits
from .leases import BudgetBook, ClaimBook, Lease, LeaseBank

NAMESPACE = "tgrs"


class BankActor:
    def __init__(self, limits: EndpointLimits) -> None:
        self.bank = LeaseBank(limits)

    def grant(self, requests: int, tokens: float) -> Lease:
        return self.bank.grant(requests, tokens)

    def give_back(self, epoch: int, requests: float, tokens: float) -> None:
        self.bank.give_back(epoch, requests, tokens)

    def rate_limited(self, retry_after: float | None) -> int:
        return self.bank.rate_limited(retry_after)

    def tighten(self, rpm: float | None, tpm: float | None) -> None:
        self.bank.tighten(rpm, tpm)

    def report(self) -> dict[str, float]:
        return self.bank.report()


class BookActor:
    def __init__(self, limit_usd: float | None) -> None:
        self.book = BudgetBook(limit_usd)

    def reserve(self, usd: float) -> float:
        return self.book.reserve(usd)

    def settle(self, granted: float, spent: float) -> None:
        self.book.settle(granted, spent)

    def report(self) -> dict[str, Any]:
        return self.book.report()


class ClaimActor:
    def __init__(self) -> None:
        self.book = ClaimBook()

    def claim(self, key: str, holder: str) -> bool:
        return self.book.claim(key, holder)

    def release(self, key: str, holder: str) -> None:
        self.book.release(key, holder)

    def report(self) -> dict[str, int]:
        return self.book.report()


@functools.cache
def _remote(cls: type) -> Any:
    import ray

    return ray.remote(num_cpus=0)(cls)


HEAD = {"node:__internal_head__": 0.001}  # Ray's resource of the head node: the actors live there


def _named(cls: type, name: str, *args: Any) -> Any:
    # detached: an actor is owned by whoever created it, and dies with it; the first worker to come
    # creates these, and a killed worker must not take the cluster's state with it (the driver
    # removes them when the run ends: :func:`release_run`). On the head node, which lives as long as
    # the cluster (a worker node may be preempted, and the state with it): see docs/scale.md
    return _remote(cls).options(name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached",
                                resources=HEAD).remote(*args)


def bank_handle(run: str, key: str, limits: EndpointLimits) -> Any:
    """The bank actor of endpoint ``key`` in run ``run`` (created on first use)."""
    return _named(BankActor, f"tgrs-bank:{run}:{key}", limits)


def book_handle(run: str, limit_usd: float | None) -> Any:
    return _named(BookActor, f"tgrs-book:{run}", limit_usd)


def release_run(run: str) -> dict[str, Any]:
    """Every actor of run ``run``: their last reports (by name), then removed."""
    import ray

    mine: dict[str, Any] = {}
    for a in ray.util.list_named_actors(all_namespaces=True):
        parts = a["name"].split(":", 2)  # tgrs-<kind>:<run>[:<endpoint key>]
        if a.get("namespace") == NAMESPACE and parts[1:2] == [run]:
            mine[":".join([parts[0].removeprefix("tgrs-"), *parts[2:]])] = ray.get_actor(a["name"], namespace=NAMESPACE)
    reports = ray.get([h.report.remote() for h in mine.values()])  # asked together: one round trip
    for h in mine.values():
        ray.kill(h)
    return dict(zip(mine, reports, strict=True))


def claims_handle(run: str, part: int = 0) -> Any:
    """Claim actor ``part`` of run ``run`` (a run's claims may be split by key over several)."""
    return _named(ClaimActor, f"tgrs-claims:{run}" + (f":{part}" if part else ""))


def claim_parts(rpm_total: float | None, workers: int) -> int:
    """How many claim actors a run splits its claims over. A claim is asked once per paid call, and
    one actor answered about 1,000 a second here (``benchmarks/bench_ray_leases.py``): one actor per
    30,000 requests a minute of the panel's stated quota (half that, for headroom), and where no quota
    is stated, one per 32 workers."""
    if rpm_total:
        return max(1, math.ceil(rpm_total / 30_000))
    return max(1, math.ceil(workers / 32))


class RayClaims:
    """:class:`~.dedupe.ClaimClient` over the claim actors' handles: a key always goes to the same one
    (a hash every process computes alike), so two workers claiming one content ask one actor."""

    def __init__(self, handles: Any) -> None:
        self.handles = list(handles) if isinstance(handles, list | tuple) else [handles]

    def _of(self, key: str) -> Any:
        n = len(self.handles)
        return self.handles[0] if n == 1 else self.handles[zlib.crc32(key.encode()) % n]

    async def claim(self, key: str, holder: str) -> bool:
        return bool(await self._of(key).claim.remote(key, holder))

    def release(self, key: str, holder: str) -> None:
        self._of(key).release.remote(key, holder)


class RayBank:
    """:class:`~.limiter.BankClient` over a bank actor's handle."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def grant(self, requests: int, tokens: float) -> Lease:
        return await self.handle.grant.remote(requests, tokens)

    def give_back(self, epoch: int, requests: float, tokens: float) -> None:
        self.handle.give_back.remote(epoch, requests, tokens)

    def rate_limited(self, retry_after: float | None) -> None:
        self.handle.rate_limited.remote(retry_after)

    def tighten(self, rpm: float | None, tpm: float | None) -> None:
        self.handle.tighten.remote(rpm, tpm)


class RayBook:
    """:class:`~.budget.BookClient` over the book actor's handle (rare, blocking calls)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    def reserve(self, usd: float) -> float:
        import ray

        return float(ray.get(self.handle.reserve.remote(usd)))

    def settle(self, granted: float, spent: float) -> None:
        import ray

        ray.get(self.handle.settle.remote(granted, spent))
