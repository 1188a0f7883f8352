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
bottleneck the latency it observes rises with each call added, and more calls only cost CPU -- the
HTTP client's connection pool scans every connection for each request it sends, so at a few
hundred in flight the client spends more on that than on the call, slows down, sees longer
latency, and Little's law would ask for more still. Two guards break that loop:

* the latency counts at most ``INFLATION`` times its floor (the lowest its average has been,
  creeping up 2% a second so that a server that really slows down is followed), and the target
  grows only while the latency is within that;
* the event loop's own lag is measured (how late a callback scheduled now runs; sampled at most
  every ``LAG_EVERY_S``): past ``LAG_LIMIT_S`` the process is saturated -- the server is not what
  the calls wait for -- so Little's law is set aside (the target falls back to what it has grown
  to, ``INITIAL`` at least: what a fixed cap used to allow), the floor stops creeping, and the
  target does not grow.

The gate also keeps the record of calls started and not yet ended that the limiter needs to read
the server's ``remaining`` correctly: what started after a call may not be counted in the
``remaining`` its response carries. Given the call's permit that is what started since it; without
one, what started since the oldest call still in flight (an upper bound).
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
    LAG_LIMIT_S = 0.02  # an event loop this late is saturated
    LAG_EVERY_S = 0.05

    def __init__(self, ceiling: int, *, probe_lag: bool = False) -> None:
        self.ceiling = max(1, ceiling)
        self.grown = min(self.ceiling, self.INITIAL)
        self.rate: float | None = None  # requests/s the limiter paces at (None: no request limit)
        self.latency_s: float | None = None  # moving average, permit to release
        self.floor_s: float | None = None  # the lowest the average has been, creeping up
        self.lag_s = 0.0  # moving average of the event loop's lag (``probe_lag`` only: real time)
        self._probe_lag = probe_lag
        self._next_probe = 0.0
        self._samples = 0
        self._floor_t = 0.0
        self.active = 0  # slots held: calls waiting for their tokens, and calls under way
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._order: collections.deque[tuple[float, Mapping[str, float]]] = collections.deque()
        self._open: collections.Counter[float] = collections.Counter()  # calls in flight by permit
        self._since: dict[str, float] = collections.defaultdict(float)
        self._total: dict[str, float] = collections.defaultdict(float)  # ever started
        self._at: dict[float, dict[str, float]] = {}  # ``_total`` when a permit's first call began

    # ----- the target -------------------------------------------------------------------------------
    @property
    def target(self) -> int:
        little = 0
        if self.rate and not self.saturated:
            lat = self.latency_s if self.latency_s is not None else self.ASSUMED_LATENCY_S
            if self.floor_s is not None:
                lat = min(lat, self.INFLATION * self.floor_s)
            little = math.ceil(self.rate * lat * self.HEADROOM)
        return max(1, min(self.ceiling, max(self.grown, little)))

    @property
    def saturated(self) -> bool:
        """The event loop runs late: this process, not the server, is the bottleneck."""
        return self.lag_s > self.LAG_LIMIT_S

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def cut(self) -> None:
        self.grown = max(1, int(self.target * self.DECREASE))

    # ----- slots ------------------------------------------------------------------------------------
    async def enter(self) -> None:
        if self._probe_lag:
            self._probe()
        if self.active < self.target and not self._waiters:
            self.active += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut  # the slot is handed over: ``active`` already counts it
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.exit()  # handed a slot it will not use: pass it on
            elif fut in self._waiters:  # (``exit`` may already have dropped it)
                self._waiters.remove(fut)
            raise

    @property
    def inflated(self) -> bool:
        """The latency says calls queue in this process: more of them would not go faster."""
        return (self.floor_s is not None and self.latency_s is not None
                and self.latency_s > self.INFLATION * self.floor_s)

    def exit(self, *, grow: bool = False) -> None:
        self.active -= 1
        if grow and self._waiters and self.target < self.ceiling and not (self.inflated or self.saturated):
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
        if permit not in self._at:
            self._at[permit] = dict(self._total)
        for name, n in amounts.items():
            self._since[name] += n
            self._total[name] += n

    def ended(self, permit: float | None, now: float) -> float | None:
        """Forget a call; its latency when ``permit`` is one we gave (else the oldest is dropped)."""
        latency = None
        if permit is not None and self._open.get(permit, 0) > 0:
            self._open[permit] -= 1
            latency = max(0.0, now - permit)
            self._observe(latency, now)
        elif self._order:  # no permit (an older caller): assume calls end in the order they began
            self._open[self._order[0][0]] -= 1
        if permit is not None and self._open.get(permit, 1) <= 0:
            self._at.pop(permit, None)
        while self._order and self._open.get(self._order[0][0], 0) <= 0:
            t, amounts = self._order.popleft()
            self._open.pop(t, None)
            self._at.pop(t, None)
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
                creep = 0.0 if self.saturated else self.FLOOR_CREEP_PER_S * max(0.0, now - self._floor_t)
                self.floor_s = min(self.floor_s * (1 + creep), avg)
            self._floor_t = now

    def _probe(self) -> None:
        """Schedule a callback now and see how late it runs: the event loop's lag."""
        loop = asyncio.get_running_loop()
        t = loop.time()
        if t >= self._next_probe:
            self._next_probe = t + self.LAG_EVERY_S
            loop.call_soon(self._lagged, loop, t)

    def _lagged(self, loop: asyncio.AbstractEventLoop, t: float) -> None:
        self.lag_s += 0.2 * (loop.time() - t - self.lag_s)

    def in_flight(self, permit: float) -> bool:
        return self._open.get(permit, 0) > 0

    def since(self, name: str, permit: float | None = None) -> float:
        """Amount of ``name`` (requests, tokens...) taken by calls started since the call with
        ``permit`` began (itself included), or, without one, since the oldest call in flight."""
        at = self._at.get(permit) if permit is not None else None
        if at is not None:
            return self._total[name] - at.get(name, 0.0)
        return max(0.0, self._since.get(name, 0.0))
