"""Per-endpoint rate limits: request and token buckets, calls in flight, Retry-After, adaptive backoff.

One :class:`EndpointLimiter` exists per endpoint key (base URL + a hash of the API key), shared by
every paid call on that account, because that is the unit the provider limits. It is meant to need
no tuning:

* **Pacing.** Before a call it takes one request token and the *estimated* tokens; after the call
  it reconciles the estimate with the usage the API reported. Buckets run on *debt*
  (:mod:`.buckets`): waiting callers are served in order and pacing is exact. Until the provider
  has said how much may be banked, the
  request bucket starts with one token: the first second is paced, not a herd that outruns a bank
  already spent by another client and, on a busy event loop, bunches what follows.
* **Banks.** The ``x-ratelimit-*`` / ``anthropic-ratelimit-*`` headers (of errors too: a 429
  states the limit it enforces) give the limit, which only ever lowers a rate, and, with the reset
  time, how much the provider lets a client bank (:mod:`.ratelimit_headers`): on an allowance per
  minute the limiter spends what the server says is left, keeping ``RESERVE_S`` of rate in it
  (a quarter of a shorter bank)
  against jitter, and wakes the callers already waiting. ``EndpointLimits.burst_s`` states the bank
  instead (then it is spent from the start).
* **Calls in flight** follow the rate and the observed latency (:class:`.slots.SlotGate`, Little's
  law under the ``max_concurrency`` ceiling), so a cap never sets the pace.
* **429s.** A 429 pauses the whole endpoint for the server's ``retry-after``, spends the bank so the
  callers it releases are paced rather than a herd, stops trusting learned banks for a while, and
  cuts the rate and the calls in flight (multiplicative decrease, additive recovery) so one storm
  does not repeat -- unless the server stated a limit we keep within and the 429s are an isolated
  burst. Several callers on one endpoint share the lowest rate any of them states.

Time comes from an injectable :class:`~.buckets.Clock`, so tests run in milliseconds.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from . import ratelimit_headers
from .buckets import Clock, FakeClock, SystemClock, TokenBucket
from .ratelimit_headers import parse_reset
from .slots import SlotGate

__all__ = ["Clock", "EndpointLimiter", "EndpointLimits", "FakeClock", "LimiterRegistry", "LimiterStats",
           "SystemClock", "TokenBucket", "endpoint_key", "parse_reset"]


@dataclass(frozen=True, slots=True)
class EndpointLimits:
    rpm: float | None = None
    tpm: float | None = None  # input + output tokens (OpenAI style)
    input_tpm: float | None = None  # Anthropic style
    output_tpm: float | None = None
    max_concurrency: int = 256  # a ceiling: calls in flight follow rate x latency below it
    burst_s: float | None = None  # the provider's bank in seconds of rate; None: learn it from headers


@dataclass(slots=True)
class LimiterStats:
    acquired: int = 0
    waited_s: float = 0.0
    rate_limited: int = 0
    learned: dict[str, float] = field(default_factory=dict)
    bank_s: dict[str, float] = field(default_factory=dict)  # the bank window the headers showed
    lifted: float = 0.0  # requests the server's headers added to the bucket (a bank spent early)


DEFAULT_BURST_S = 1.0  # bucket capacity, in seconds of rate, until the provider says otherwise


class EndpointLimiter:
    """Shared limits of one endpoint: ``permit = await acquire(...)``, then ``release(..., permit=permit)``."""

    MIN_FACTOR = 0.1
    DECREASE = 0.7
    RECOVER_PER_SUCCESS = 0.01
    EPISODE_S = 1.0  # 429s this close together are one episode: at most one cut each
    QUIET_S = 5.0  # an episode this long after the last 429 is isolated
    RESERVE_S = 0.5  # of a learned bank, at most this much rate stays unspent (slack for bunched
    RESERVE_SHARE = 0.25  # arrivals), and at most this share of the bank: a 1 s bank keeps 0.25 s
    DISTRUST_S = 60.0  # after a 429, banks learned from headers are not spent for this long

    def __init__(self, key: str, limits: EndpointLimits, clock: Clock | None = None) -> None:
        self.key = key
        self.limits = limits
        self.clock = clock or SystemClock()
        self.stats = LimiterStats()
        self.factor = 1.0
        self._paused_until = 0.0
        self._episode = -1e9  # when the current episode of 429s began
        self._last_429 = -1e9
        self._distrust_until = -1e9
        self._stated: dict[str, float] = {}  # per-minute limits the server stated in headers
        self._window: dict[str, float] = {}  # bank windows (s) the headers showed, per bucket
        self._synced: set[str] = set()
        # callers sleeping on debt, in the order they reserved, with what they reserved
        self._wakers: dict[asyncio.Future[None], list[tuple[TokenBucket, float, float, float]]] = {}
        # the permit of the call this task has under way: the headers ``learn`` gets answer it
        self._permit: contextvars.ContextVar[float | None] = contextvars.ContextVar(f"permit {key}",
                                                                                    default=None)
        # the event loop's lag is real time: measured only when the limiter runs on it
        self.slots = SlotGate(limits.max_concurrency, probe_lag=isinstance(self.clock, SystemClock))
        now = self.clock.now()
        self.requests = self._bucket("requests", limits.rpm, now)
        self.tokens = self._bucket("tokens", limits.tpm, now)
        self.input = self._bucket("input", limits.input_tpm, now)
        self.output = self._bucket("output", limits.output_tpm, now)
        self._base = {n: bk.rate for n, bk in self._buckets().items()}
        self._sync_rate()

    def _bucket(self, name: str, per_min: float | None, now: float) -> TokenBucket | None:
        if not per_min:
            return None
        rate, b = per_min / 60, self.limits.burst_s
        # a bank nobody stated is not spent at once: the request bucket starts with one token
        start = 1.0 if b is None and name == "requests" else None
        return TokenBucket(rate, max(1.0, rate * (b or DEFAULT_BURST_S)), now, start)

    def _buckets(self) -> dict[str, TokenBucket]:
        named = {"requests": self.requests, "tokens": self.tokens, "input": self.input,
                 "output": self.output}
        return {n: bk for n, bk in named.items() if bk is not None}

    def _sync_rate(self) -> None:
        self.slots.rate = self.requests.rate if self.requests is not None else None

    # ----- one call ---------------------------------------------------------------------------------
    async def acquire(self, est_in: int = 0, est_out: int = 0) -> float:
        """Wait for a slot, any Retry-After pause, and the bucket tokens.

        Returns the permit (the clock time the call may start); hand it back to :meth:`release`."""
        await self.slots.enter()
        try:
            t0 = self.clock.now()
            while (pause := self._paused_until - self.clock.now()) > 0:
                await self.clock.sleep(pause)
            now = self.clock.now()
            wait = 0.0
            held: list[tuple[TokenBucket, float, float, float]] = []
            amounts: dict[str, float] = {}
            for name, bk, n in (("requests", self.requests, 1), ("tokens", self.tokens, est_in + est_out),
                                ("input", self.input, est_in), ("output", self.output, est_out)):
                if bk is not None and n:
                    wait = max(wait, bk.reserve(n, now))
                    held.append((bk, n, bk.tokens, bk.raised))
                    amounts[name] = n
            if wait > 0:
                await self._wait_turn(held, now, wait)
            self.stats.acquired += 1
            start = self.clock.now()
            self.stats.waited_s += start - t0
            self.slots.started(start, amounts)
            self._permit.set(start)
            return start
        except BaseException:
            self.slots.exit()
            raise

    async def _wait_turn(self, held: list[tuple[TokenBucket, float, float, float]], t_res: float,
                         wait: float) -> None:
        """Sleep for the debt; if the server's bank lifts the buckets meanwhile, go sooner."""
        for bk, n, _, _ in held:
            bk.pending += n
        try:
            while wait > 0:
                if not await self._sleep_unless_lifted(wait, held):
                    return
                now = self.clock.now()  # where each reservation stands now, with the lift
                wait = max((-(pos + bk.raised - raised0 + (now - t_res) * bk.rate) / bk.rate
                            for bk, _, pos, raised0 in held), default=0.0)
        finally:
            for bk, n, _, _ in held:
                bk.pending -= n

    async def _sleep_unless_lifted(self, wait: float,
                                   held: list[tuple[TokenBucket, float, float, float]]) -> bool:
        """Sleep ``wait`` seconds; True if a lift of the buckets woke us first."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sleeper = asyncio.ensure_future(self.clock.sleep(wait))
        sleeper.add_done_callback(lambda _: _wake(fut))
        self._wakers[fut] = held
        try:
            await fut
        finally:
            self._wakers.pop(fut, None)
            lifted = not sleeper.done()
            sleeper.cancel()
        return lifted

    def release(self, est_in: int = 0, est_out: int = 0, used_in: int | None = None,
                used_out: int | None = None, *, permit: float | None = None) -> None:
        """Free the slot and reconcile the estimate with what the API reported.

        ``permit`` is what :meth:`acquire` returned (the call's start), so the limiter sees the
        latency; without it the call still ends, only unmeasured."""
        now = self.clock.now()
        if self._permit.get() == permit:
            self._permit.set(None)
        self.slots.ended(permit, now)
        in_debt = any(bk.tokens < 0 for bk in self._buckets().values())
        self.slots.exit(grow=not in_debt)
        if used_in is not None and used_out is not None:
            if self.tokens is not None:
                self.tokens.credit((est_in + est_out) - (used_in + used_out), now)
            if self.input is not None:
                self.input.credit(est_in - used_in, now)
            if self.output is not None:
                self.output.credit(est_out - used_out, now)

    # ----- what the server says -------------------------------------------------------------------
    def on_success(self) -> None:
        if self.factor < 1.0:
            self._set_factor(min(1.0, self.factor + self.RECOVER_PER_SUCCESS))

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause every caller for ``retry_after``, spend the bank, and maybe cut.

        The rate and the calls in flight are cut (once per episode of 429s) unless the server has
        stated its request limit, we keep within it, and the episode is isolated: then the 429
        says that a burst (say, of requests held up by a busy event loop) outran the server's bank,
        not that our rate is too high, and slowing down for the rest of the run would only cost
        time. A second episode within ``QUIET_S`` (e.g. another client on the same account) is cut
        as usual. Either way, banks learned from headers are not spent for ``DISTRUST_S``: a
        provider whose headers promise a minute's bank but who enforces less is not believed twice.
        """
        now = self.clock.now()
        self.stats.rate_limited += 1
        pause = retry_after if retry_after is not None else 1.0
        self._paused_until = max(self._paused_until, now + pause)
        self._distrust_until = now + self.DISTRUST_S
        if now - self._episode >= self.EPISODE_S:
            isolated = now - self._last_429 >= self.QUIET_S
            self._episode = now
            if not (isolated and self._within_stated_limit()):
                self._set_factor(max(self.MIN_FACTOR, self.factor * self.DECREASE))
                self.slots.cut()
        self._last_429 = now
        if self.requests is not None:
            # the server has its next request for us in ``pause``: spend what we banked (and what
            # the pause refills), so the callers it releases are paced, not one herd
            self.requests.clamp(1.0 - pause * self.requests.rate, now)

    def _within_stated_limit(self) -> bool:
        """The server stated its request limit (headers) and our request rate keeps within it."""
        limit = self._stated.get("requests")
        return (limit is not None and self.requests is not None
                and self._base["requests"] <= limit / 60 * (1 + 1e-9))

    def _set_factor(self, f: float) -> None:
        self.factor = f
        for name, bk in self._buckets().items():
            bk.rate = self._base[name] * f
        self._sync_rate()

    def _capacity(self, name: str) -> float:
        return max(1.0, self._base[name] * max(self.limits.burst_s or DEFAULT_BURST_S,
                                               self._window.get(name, 0.0)))

    def _lower(self, name: str, per_min: float, now: float) -> None:
        """Adopt a rate we were not told about, or keep the lower of ours and ``per_min``."""
        bk = getattr(self, name)
        if bk is None:
            bk = self._bucket(name, per_min, now)
            assert bk is not None  # per_min > 0
            setattr(self, name, bk)
            self._base[name] = bk.rate
            bk.rate *= self.factor
        elif per_min / 60 < self._base[name]:
            self._base[name] = per_min / 60
            bk.rate = self._base[name] * self.factor
            bk.capacity = min(bk.capacity, self._capacity(name))
            bk.tokens = min(bk.tokens, bk.capacity)  # and so is the burst it will take
        self._sync_rate()

    def tighten(self, limits: EndpointLimits) -> None:
        """Another caller on this endpoint states its limits: keep the lower of each rate."""
        now = self.clock.now()
        for name, per_min in (("requests", limits.rpm), ("tokens", limits.tpm),
                              ("input", limits.input_tpm), ("output", limits.output_tpm)):
            if per_min:
                self._lower(name, per_min, now)

    def learn(self, headers: Mapping[str, str], *, permit: float | None = None) -> None:
        """Take the server's word for its limits and its bank (``x-ratelimit-*`` /
        ``anthropic-ratelimit-*``; see :mod:`.ratelimit_headers`). ``permit``: the call the
        headers answer (before its release), so its ``remaining`` is read as of that call; by
        default the call this task acquired and has not yet released."""
        now = self.clock.now()
        if permit is None:
            permit = self._permit.get()
        if permit is not None and not self.slots.in_flight(permit):
            permit = None
        wall = getattr(self.clock, "wall", time.time)()
        for r in ratelimit_headers.read(headers, wall):
            name = r.bucket
            self.stats.learned[name] = r.limit if r.limit is not None else r.remaining
            if r.limit is not None:
                self._stated[name] = r.limit
                if r.limit > 0:  # the server's limit, if lower than we were told (or not told)
                    self._lower(name, r.limit, now)
            bk = getattr(self, name)
            if bk is None:
                continue
            if name not in self._synced:
                # first word from the server: the account may already be partly used elsewhere
                self._synced.add(name)
                bk.clamp(r.remaining, now)
            if self.limits.burst_s is None and (w := ratelimit_headers.bank_window(r)) is not None:
                self._window[name] = self.stats.bank_s[name] = w
                bk.capacity = self._capacity(name)
                bk.tokens = min(bk.tokens, bk.capacity)
            # the server's bank is ours to spend only while its limit is the one that binds: under a
            # lower ``rpm`` the user set, what the server has left says nothing about that cap
            binds = r.limit is None or self._base[name] * 60 >= r.limit * (1 - 1e-9)
            if name in self._window and now >= self._distrust_until and binds:
                per_s = (r.limit or 60 * self._base[name]) / 60  # the server's refill rate
                self._spend_bank(name, bk, r.remaining, per_s, now, permit)

    def _spend_bank(self, name: str, bk: TokenBucket, remaining: float, per_s: float, now: float,
                    permit: float | None) -> None:
        """Lift the bucket to what the server holds for us: what it had when it counted this call
        (plus what it refilled since the call began, if we know when), less what may have started
        since and a reserve; wake the callers whose turn that brings forward."""
        window = self._window[name]
        bank = remaining * window / 60  # ``remaining`` is scaled to the minute
        if permit is not None:
            bank = min(per_s * window, bank + per_s * max(0.0, now - permit))
        reserve = min(self.RESERVE_S, self.RESERVE_SHARE * window) * self._base[name]
        level = bank - self.slots.since(name, permit) - reserve - bk.pending
        rise = bk.lift(level, now)
        if rise <= 0:
            return
        if name == "requests":
            self.stats.lifted += rise
        # the first in line, as many as the rise pays for, may now go sooner: wake them to re-time
        for fut, held in list(self._wakers.items()):
            n = next((n for b, n, _, _ in held if b is bk), 0.0)
            if not n:
                continue  # not waiting on this bucket
            if n > rise:
                break
            rise -= n
            _wake(fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def endpoint_key(base_url: str, api_key: str | None) -> str:
    """Base URL plus a short hash of the key: teachers on one account share one limiter."""
    kid = hashlib.sha256((api_key or "").encode()).hexdigest()[:12]
    return f"{base_url.rstrip('/')}#{kid}"


class LimiterRegistry:
    """One limiter per endpoint key; a later caller on the same endpoint can only tighten it."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._by_key: dict[str, EndpointLimiter] = {}

    def get(self, key: str, limits: EndpointLimits) -> EndpointLimiter:
        lim = self._by_key.get(key)
        if lim is None:
            lim = self._by_key[key] = EndpointLimiter(key, limits, self.clock)
        else:
            lim.tighten(limits)
        return lim

    def all(self) -> dict[str, EndpointLimiter]:
        return dict(self._by_key)
