"""Calls in flight on one endpoint: a target that follows the rate and the latency, under a ceiling.

A fixed cap is wrong at both ends: below ``rate x latency`` (Little's law) it, not the provider,
sets the pace (32 slots at 300 ms hold 12,000 requests/min to about 6,400); far above it, a burst
of 429s or a start-up herd has that many calls behind it. So the target is

* ``rate x observed latency x HEADROOM`` when the request rate is known (the latency is measured
  from each call's permit to its release), so the rate, never the cap, binds;
* grown by one per call that ends while others wait for a slot and no bucket is in debt (the
  calls are latency-bound: a bank to spend, or no rate known), which doubles it every round trip;
* cut by ``DECREASE`` on an episode of 429s;

and never above the configured ``max_concurrency`` (the ceiling). Waiters are served in order.

More calls in flight help only while the latency is the server's. Once this process is the
bottleneck (its event loop busy: every call waits in it longer) the latency it observes rises with
each call added, and more calls only cost CPU -- the HTTP client's connection pool scans every
connection and every queued request for each request it sends, so at a few hundred in flight the
client spends more on that than on the call, slows down, sees longer latency, and Little's law
would ask for more still. So the target grows only while the latency stays within ``INFLATION`` times the
lowest it has been (a moving minimum that creeps up, so a server that really slows down is
followed: 2% a second), and Little's law counts at most that much latency.

The gate also keeps the record of calls started and not yet ended that the limiter needs to read
the server's ``remaining`` correctly: what started after the oldest call still in flight may not
be counted in a ``remaining`` that call's response carries.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Mapping


class SlotGate:
    INITIAL = 64  # before anything is known: what a fixed cap used to allow
    HEADROOM = 1.5
    ASSUMED_LATENCY_S = 0.5  # until the first call ends
    ALPHA = 0.05  # weight of a new latency sample
    DECREASE = 0.7
    INFLATION = 1.5  # latency past this many times the floor is our own queue, not the server's
    FLOOR_AFTER = 10  # samples before the latency floor is trusted
    FLOOR_CREEP_PER_S = 0.02  # the floor rises 2% a second unless the latency pulls it down

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(1, ceiling)
        self.grown = min(self.ceiling, self.INITIAL)
        self.rate: float | None = None  # requests/s the limiter paces at (None: no request limit)
        self.latency_s: float | None = None  # moving average, permit to release
        self.floor_s: float | None = None  # the lowest the average has been, creeping up
        self._samples = 0
        self._floor_t = 0.0
        self.active = 0  # slots held: calls waiting for their tokens, and calls under way
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._order: collections.deque[tuple[float, Mapping[str, float]]] = collections.deque()
        self._open: collections.Counter[float] = collections.Counter()  # calls in flight by permit
        self._since: dict[str, float] = collections.defaultdict(float)

    # ----- the target -------------------------------------------------------------------------------
    @property
    def target(self) -> int:
        little = 0
        if self.rate:
            lat = self.latency_s if self.latency_s is not None else self.ASSUMED_LATENCY_S
            if self.floor_s is not None:
                lat = min(lat, self.INFLATION * self.floor_s)
            little = math.ceil(self.rate * lat * self.HEADROOM)
        return max(1, min(self.ceiling, max(self.grown, little)))

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def cut(self) -> None:
        self.grown = max(1, int(self.target * self.DECREASE))

    # ----- slots ------------------------------------------------------------------------------------
    async def enter(self) -> None:
        if self.active < self.target and not self._waiters:
            self.active += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the slot is handed over: ``active`` already counts it
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.exit()
            else:
                self._waiters.remove(fut)
            raise

    @property
    def inflated(self) -> bool:
        """The latency says calls queue in this process: more of them would not go faster."""
        return (self.floor_s is not None and self.latency_s is not None
                and self.latency_s > self.INFLATION * self.floor_s)

    def exit(self, *, grow: bool = False) -> None:
        self.active -= 1
        if grow and self._waiters and self.target < self.ceiling and not self.inflated:
            self.grown = self.target + 1
        while self._waiters and self.active < self.target:
            fut = self._waiters.popleft()
            if not fut.done():
                self.active += 1
                fut.set_result(None)

    # ----- calls in flight --------------------------------------------------------------------------
    def started(self, permit: float, amounts: Mapping[str, float]) -> None:
        self._order.append((permit, amounts))
        self._open[permit] += 1
        for name, n in amounts.items():
            self._since[name] += n

    def ended(self, permit: float | None, now: float) -> float | None:
        """Forget a call; its latency when ``permit`` is one we gave (else the oldest is dropped)."""
        latency = None
        if permit is not None and self._open.get(permit, 0) > 0:
            self._open[permit] -= 1
            latency = max(0.0, now - permit)
            self._observe(latency, now)
        elif self._order:  # no permit (an older caller): assume calls end in the order they began
            self._open[self._order[0][0]] -= 1
        while self._order and self._open.get(self._order[0][0], 0) <= 0:
            t, amounts = self._order.popleft()
            self._open.pop(t, None)
            for name, n in amounts.items():
                self._since[name] -= n
        return latency

    def _observe(self, latency: float, now: float) -> None:
        avg = latency if self.latency_s is None else self.latency_s + self.ALPHA * (latency - self.latency_s)
        self.latency_s = avg
        self._samples += 1
        if self._samples >= self.FLOOR_AFTER:
            if self.floor_s is None:
                self.floor_s = avg
            else:
                creep = 1 + self.FLOOR_CREEP_PER_S * max(0.0, now - self._floor_t)
                self.floor_s = min(self.floor_s * creep, avg)
            self._floor_t = now

    def since_oldest(self, name: str) -> float:
        """Amount of ``name`` (requests, tokens...) taken by calls started since the oldest in flight."""
        return max(0.0, self._since.get(name, 0.0))
