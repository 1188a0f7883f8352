"""The mechanics under the limiter: an injectable clock and a token bucket that runs on debt.

A caller reserves tokens at once (the bucket may go negative) and sleeps for the debt, so waiting
callers are served in order and pacing is exact. Time comes from a :class:`Clock`: the system's,
or :class:`FakeClock`, whose ``sleep`` advances virtual time, so tests run in milliseconds.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class FakeClock:
    """Virtual time: ``sleep`` advances the clock instead of waiting (for deterministic tests)."""

    EPOCH = 1_750_000_000.0  # what ``wall`` reads at t = 0 (rate-limit headers give POSIX times)

    def __init__(self, start: float = 0.0) -> None:
        self.t = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.EPOCH + self.t

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += max(seconds, 0.0)
        await asyncio.sleep(0)


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` banked; reservations may run into debt."""

    def __init__(self, rate: float, capacity: float, now: float, tokens: float | None = None) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity if tokens is None else min(capacity, tokens)
        self.t = now
        self.pending = 0.0  # reserved by callers still waiting for their turn
        self.raised = 0.0  # added by what the server said was banked (waiters re-time by it)

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

    def lift(self, level: float, now: float) -> float:
        """The server holds more for us than we believed: raise the bank to ``level``; the rise."""
        self._refill(now)
        rise = min(level, self.capacity) - self.tokens
        if rise <= 0:
            return 0.0
        self.tokens += rise
        self.raised += rise
        return rise
