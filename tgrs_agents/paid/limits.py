"""Per-endpoint rate limits: request and token buckets, a concurrency cap, Retry-After, adaptive backoff.

One :class:`EndpointLimiter` exists per endpoint key (base URL + a hash of the API key), shared by
every teacher on that account, because that is the unit the provider limits. Before a call it takes
one request token and the *estimated* tokens; after the call it reconciles the estimate with the
usage the API reported, learns the real limits from ``x-ratelimit-*`` / ``anthropic-ratelimit-*``
headers (of errors too: a 429 states the limit it enforces), and on a 429 pauses the whole endpoint
for the server's ``retry-after``, spends its banked requests so the callers it releases are paced
rather than a herd, and cuts its rate (multiplicative decrease, additive recovery) so one storm does
not repeat -- unless the server stated a limit we keep within and the 429s are an isolated burst.
Several teachers on one endpoint share the lowest rate any of them states.

Buckets run on *debt*: a caller reserves tokens at once (the bucket may go negative) and sleeps for
the debt, so waiting callers are served in order and pacing is exact. Time comes from an injectable
:class:`Clock`, so tests run in milliseconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """Virtual time: ``sleep`` advances the clock instead of waiting (for deterministic tests)."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += max(seconds, 0.0)
        await asyncio.sleep(0)


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` banked; reservations may run into debt."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.t = now

    def _refill(self, now: float) -> None:
        if now > self.t:
            self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
            self.t = now

    def reserve(self, n: float, now: float) -> float:
        """Take ``n`` tokens; returns how long the caller must wait before using them."""
        self._refill(now)
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def credit(self, n: float, now: float) -> None:
        """Give back tokens that were reserved but not used (or take more, if ``n < 0``)."""
        self._refill(now)
        self.tokens = min(self.capacity, self.tokens + n)

    def clamp(self, remaining: float, now: float) -> None:
        """The server says only ``remaining`` are left: never believe we have more."""
        self._refill(now)
        self.tokens = min(self.tokens, remaining)


@dataclass(frozen=True, slots=True)
class EndpointLimits:
    rpm: float | None = None
    tpm: float | None = None  # input + output tokens (OpenAI style)
    input_tpm: float | None = None  # Anthropic style
    output_tpm: float | None = None
    max_concurrency: int = 64
    burst_s: float = 1.0  # bucket capacity, in seconds of rate


@dataclass(slots=True)
class LimiterStats:
    acquired: int = 0
    waited_s: float = 0.0
    rate_limited: int = 0
    learned: dict[str, float] = field(default_factory=dict)


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


def parse_reset(value: str) -> float | None:
    """OpenAI reset durations such as ``"1s"``, ``"6m0s"``, ``"120ms"``; seconds or None."""
    m = _DURATION.match(value.strip())
    if not m or not any(m.groups()):
        try:
            return float(value)
        except ValueError:
            return None
    h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


class EndpointLimiter:
    """Shared limits of one endpoint. Use ``async with limiter.slot(est_in, est_out) as permit``."""

    MIN_FACTOR = 0.1
    DECREASE = 0.7
    RECOVER_PER_SUCCESS = 0.01
    EPISODE_S = 1.0  # 429s this close together are one episode: at most one cut each
    QUIET_S = 5.0  # an episode this long after the last 429 is isolated

    def __init__(self, key: str, limits: EndpointLimits, clock: Clock | None = None) -> None:
        self.key = key
        self.limits = limits
        self.clock = clock or SystemClock()
        self.stats = LimiterStats()
        self.factor = 1.0
        self._paused_until = 0.0
        self._episode = -1e9  # when the current episode of 429s began
        self._last_429 = -1e9
        self._stated: dict[str, float] = {}  # per-minute limits the server stated in headers
        self._sem = asyncio.Semaphore(limits.max_concurrency)
        self._synced: set[str] = set()
        now = self.clock.now()
        b = limits.burst_s

        def bucket(per_min: float | None) -> TokenBucket | None:
            return TokenBucket(per_min / 60, max(1.0, per_min / 60 * b), now) if per_min else None

        self.requests = bucket(limits.rpm)
        self.tokens = bucket(limits.tpm)
        self.input = bucket(limits.input_tpm)
        self.output = bucket(limits.output_tpm)
        self._base = {n: bk.rate for n, bk in self._buckets().items()}

    def _buckets(self) -> dict[str, TokenBucket]:
        named = {"requests": self.requests, "tokens": self.tokens, "input": self.input,
                 "output": self.output}
        return {n: bk for n, bk in named.items() if bk is not None}

    async def acquire(self, est_in: int = 0, est_out: int = 0) -> float:
        """Wait for a concurrency slot, any Retry-After pause, and the bucket tokens.

        Returns the permit (the clock time the call may start); hand it back to :meth:`release`."""
        await self._sem.acquire()
        try:
            t0 = self.clock.now()
            while (pause := self._paused_until - self.clock.now()) > 0:
                await self.clock.sleep(pause)
            now = self.clock.now()
            wait = 0.0
            for bk, n in ((self.requests, 1), (self.tokens, est_in + est_out),
                          (self.input, est_in), (self.output, est_out)):
                if bk is not None and n:
                    wait = max(wait, bk.reserve(n, now))
            if wait > 0:
                await self.clock.sleep(wait)
            self.stats.acquired += 1
            start = self.clock.now()
            self.stats.waited_s += start - t0
            return start
        except BaseException:
            self._sem.release()
            raise

    def release(self, est_in: int = 0, est_out: int = 0, used_in: int | None = None,
                used_out: int | None = None, *, permit: float | None = None) -> None:
        """Free the slot and reconcile the estimate with what the API reported.

        ``permit`` is what :meth:`acquire` returned (the call's start), so the limiter sees latency."""
        self._sem.release()
        now = self.clock.now()
        if used_in is not None and used_out is not None:
            if self.tokens is not None:
                self.tokens.credit((est_in + est_out) - (used_in + used_out), now)
            if self.input is not None:
                self.input.credit(est_in - used_in, now)
            if self.output is not None:
                self.output.credit(est_out - used_out, now)

    def on_success(self) -> None:
        if self.factor < 1.0:
            self._set_factor(min(1.0, self.factor + self.RECOVER_PER_SUCCESS))

    def on_rate_limited(self, retry_after: float | None) -> None:
        """A 429: pause every caller for ``retry_after``, spend the bank, and maybe cut the rate.

        The rate is cut (once per episode of 429s) unless the server has stated its request limit,
        we keep within it, and the episode is isolated: then the 429 says that a burst (say, of
        requests held up by a busy event loop) outran the server's bank, not that our rate is
        too high, and slowing down for the rest of the run would only cost time. A second episode
        within ``QUIET_S`` (e.g. another client on the same account) is cut as usual.
        """
        now = self.clock.now()
        self.stats.rate_limited += 1
        pause = retry_after if retry_after is not None else 1.0
        self._paused_until = max(self._paused_until, now + pause)
        if now - self._episode >= self.EPISODE_S:
            isolated = now - self._last_429 >= self.QUIET_S
            self._episode = now
            if not (isolated and self._within_stated_limit()):
                self._set_factor(max(self.MIN_FACTOR, self.factor * self.DECREASE))
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

    def tighten(self, limits: EndpointLimits) -> None:
        """Another teacher on this endpoint states its limits: keep the lower of each rate."""
        now = self.clock.now()
        for name, per_min in (("requests", limits.rpm), ("tokens", limits.tpm),
                              ("input", limits.input_tpm), ("output", limits.output_tpm)):
            if not per_min:
                continue
            bk = getattr(self, name)
            if bk is None:
                bk = TokenBucket(per_min / 60, max(1.0, per_min / 60 * self.limits.burst_s), now)
                setattr(self, name, bk)
                self._base[name] = bk.rate
                bk.rate *= self.factor
            elif per_min / 60 < self._base[name]:
                self._base[name] = per_min / 60
                bk.rate = self._base[name] * self.factor
                bk.capacity = min(bk.capacity, max(1.0, self._base[name] * self.limits.burst_s))
                bk.tokens = min(bk.tokens, bk.capacity)

    def learn(self, headers: Mapping[str, str]) -> None:
        """Take the server's word for its limits (``x-ratelimit-*`` / ``anthropic-ratelimit-*``)."""
        now = self.clock.now()
        h = {k.lower(): v for k, v in headers.items()}
        pairs = (
            ("requests", "x-ratelimit-remaining-requests", "x-ratelimit-limit-requests"),
            ("tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens"),
            ("requests", "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-limit"),
            ("input", "anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-limit"),
            ("output", "anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-limit"),
        )
        buckets = self._buckets()
        for name, rem_h, lim_h in pairs:
            if rem_h not in h:
                continue
            try:
                remaining = float(h[rem_h])
                limit = float(h[lim_h]) if lim_h in h else None
            except ValueError:
                continue
            self.stats.learned[name] = limit if limit is not None else remaining
            if limit is not None:
                self._stated[name] = limit
            bk = buckets.get(name)
            if bk is None and limit is not None and limit > 0:
                # a limit we were not told about: adopt it (per minute), starting from what is left
                bk = TokenBucket(limit / 60, max(1.0, limit / 60 * self.limits.burst_s), now)
                setattr(self, name, bk)
                self._base[name] = bk.rate
                bk.rate *= self.factor
            elif bk is not None and limit is not None and limit / 60 < self._base[name]:
                self._base[name] = limit / 60  # the server's limit is lower than we were told
                bk.rate = self._base[name] * self.factor
                bk.capacity = min(bk.capacity, max(1.0, self._base[name] * self.limits.burst_s))
                bk.tokens = min(bk.tokens, bk.capacity)  # and so is the burst it will take
            if bk is not None and name not in self._synced:
                # first word from the server: the account may already be partly used elsewhere.
                # Later "remaining" values are as old as the call's latency, so we don't chase them.
                self._synced.add(name)
                bk.clamp(remaining, now)


def endpoint_key(base_url: str, api_key: str | None) -> str:
    """Base URL plus a short hash of the key: teachers on one account share one limiter."""
    kid = hashlib.sha256((api_key or "").encode()).hexdigest()[:12]
    return f"{base_url.rstrip('/')}#{kid}"


class LimiterRegistry:
    """One limiter per endpoint key; a later teacher on the same endpoint can only tighten it."""

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
