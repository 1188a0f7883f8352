"""The stand-in's rate limits: the server side of a provider's quota, and the headers that state it.

:class:`Bucket` is a token bucket refilled continuously (a ``burst_s`` bank, as OpenAI's and
Anthropic's limits behave); :class:`Window` a fixed window that comes back whole at each boundary (a
per-minute provider). A request that finds its bucket short is answered 429 with ``retry-after``; every
answer can carry :func:`ratelimit_headers` as of its admission.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta


class Bucket:
    """Token bucket refilled continuously at ``per_minute / 60`` per second."""

    def __init__(self, per_minute: float, burst_s: float) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_s)
        self.tokens = self.capacity
        self.t = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
        self.t = now

    def wait_s(self, n: float) -> float:
        """Seconds until ``n`` tokens (at most a full bucket) are available; 0 if they are now."""
        self.refill()
        return max(0.0, min(n, self.capacity) - self.tokens) / self.rate

    def take(self, n: float) -> None:
        self.tokens -= min(n, self.capacity)

    def remaining(self) -> int:  # the bucket's fullness scaled to the per-minute limit
        return max(0, math.floor(self.tokens / self.capacity * self.limit))

    def reset_s(self) -> float:  # seconds until the bucket is full again
        return max(0.0, self.capacity - self.tokens) / self.rate


class Window:
    """A fixed window: ``per_minute * window_s / 60`` per window, all of it back at each boundary."""

    def __init__(self, per_minute: float, window_s: float) -> None:
        self.limit = per_minute
        self.window_s = window_s
        self.capacity = max(1.0, per_minute * window_s / 60)
        self.used = 0.0
        self.t0 = time.monotonic()

    def refill(self) -> None:
        now = time.monotonic()
        if now - self.t0 >= self.window_s:
            self.t0 += (now - self.t0) // self.window_s * self.window_s
            self.used = 0.0

    def wait_s(self, n: float) -> float:
        self.refill()
        return 0.0 if self.used + min(n, self.capacity) <= self.capacity else self.reset_s()

    def take(self, n: float) -> None:
        self.used += min(n, self.capacity)

    def remaining(self) -> int:
        return max(0, math.floor((self.capacity - self.used) / self.capacity * self.limit))

    def reset_s(self) -> float:  # seconds until the window ends
        return max(0.0, self.t0 + self.window_s - time.monotonic())


Limit = Bucket | Window


def _oa_duration(s: float) -> str:  # OpenAI's "20ms" / "1.5s" / "6m0s" style
    if s < 1:
        return f"{round(s * 1000)}ms"
    m, s = divmod(s, 60)
    return f"{int(m)}m{s:.0f}s" if m else f"{s:.3g}s"


def ratelimit_headers(anth: bool, *buckets: Limit | None) -> dict[str, str]:
    """The rate-limit headers of an answer, as OpenAI (``x-ratelimit-*``) or Anthropic
    (``anthropic-ratelimit-*``) send them, for the (requests, input tokens, output tokens) buckets."""
    hdrs: dict[str, str] = {}
    now = datetime.now(UTC)
    for b, oa_name, an_name in zip(buckets, ("requests", "tokens", None),
                                   ("requests", "input-tokens", "output-tokens"), strict=True):
        if b is None or (not anth and oa_name is None):
            continue
        b.refill()
        if anth:
            reset = (now + timedelta(seconds=b.reset_s())).strftime("%Y-%m-%dT%H:%M:%SZ")
            hdrs |= {f"anthropic-ratelimit-{an_name}-limit": str(int(b.limit)),
                     f"anthropic-ratelimit-{an_name}-remaining": str(b.remaining()),
                     f"anthropic-ratelimit-{an_name}-reset": reset}
        else:
            hdrs |= {f"x-ratelimit-limit-{oa_name}": str(int(b.limit)),
                     f"x-ratelimit-remaining-{oa_name}": str(b.remaining()),
                     f"x-ratelimit-reset-{oa_name}": _oa_duration(b.reset_s())}
    return hdrs
