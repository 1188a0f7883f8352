"""What a provider's rate-limit headers say: the limit, what is left, and how soon it is whole again.

OpenAI sends ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` (the reset as a duration,
``"20ms"``, ``"1.5s"``, ``"6m0s"``); Anthropic sends ``anthropic-ratelimit-{requests,input-tokens,
output-tokens}-{limit,remaining,reset}`` (the reset as an RFC 3339 time, to the second). Both state
the limit per minute.

The three numbers together tell how much the provider lets a client *bank*, which no single one
does: a bucket refilled at ``limit / 60`` per second that holds ``W`` seconds of it is whole again
``reset = (limit - remaining) / limit * W`` seconds after it was used, so
``W = reset * limit / (limit - remaining)``: 60 for an allowance per minute (a full minute's
requests may burst), about 1 for a server that enforces the rate over one second (even if its
``remaining`` is scaled to the minute). :func:`bank_window` computes it; the limiter spends a bank
only when ``W`` says there is one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

MAX_WINDOW_S = 60.0  # the limits are per minute: no more than a minute's worth can be banked
COARSE_MIN_S = 2.0  # an absolute reset time (to the second) says little about shorter waits

_HEADERS = (  # bucket, remaining, limit, reset, reset is an absolute time
    ("requests", "x-ratelimit-remaining-requests", "x-ratelimit-limit-requests",
     "x-ratelimit-reset-requests", False),
    ("tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-limit-tokens", "x-ratelimit-reset-tokens", False),
    ("requests", "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-requests-limit",
     "anthropic-ratelimit-requests-reset", True),
    ("input", "anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-input-tokens-limit",
     "anthropic-ratelimit-input-tokens-reset", True),
    ("output", "anthropic-ratelimit-output-tokens-remaining", "anthropic-ratelimit-output-tokens-limit",
     "anthropic-ratelimit-output-tokens-reset", True),
)

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$")


@dataclass(frozen=True, slots=True)
class Reading:
    """One bucket as a response's headers state it (``limit`` and ``reset_s`` may be missing)."""

    bucket: str  # requests | tokens | input | output: the limiter's bucket names
    remaining: float
    limit: float | None
    reset_s: float | None  # seconds until the allowance is whole again
    coarse: bool  # ``reset_s`` came from a time given to the second


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


def parse_reset_at(value: str, now: float) -> float | None:
    """Seconds from ``now`` (a POSIX time) to an RFC 3339 time such as ``2025-01-01T12:00:30Z``."""
    try:
        at = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return None if at.tzinfo is None else at.timestamp() - now


def read(headers: Mapping[str, str], wall_now: float) -> list[Reading]:
    """Every bucket the headers state. An absolute reset is measured from the response's ``date``
    (the server's clock: no skew between the machines) or, without one, from ``wall_now``."""
    h = {k.lower(): v for k, v in headers.items()}
    now = wall_now
    if "date" in h:
        try:
            now = parsedate_to_datetime(h["date"]).timestamp()
        except (TypeError, ValueError):
            pass
    out = []
    for bucket, rem_h, lim_h, reset_h, absolute in _HEADERS:
        if rem_h not in h:
            continue
        try:
            remaining = float(h[rem_h])
            limit = float(h[lim_h]) if lim_h in h else None
        except ValueError:
            continue
        reset = None
        if reset_h in h:
            reset = parse_reset_at(h[reset_h], now) if absolute else parse_reset(h[reset_h])
        out.append(Reading(bucket, remaining, limit, reset, absolute))
    return out


def bank_window(r: Reading) -> float | None:
    """Seconds of rate the provider lets a client bank (see the module docstring); None if the
    headers cannot tell: no reset, nothing used yet, or a reset too coarse to measure."""
    if r.limit is None or r.reset_s is None or r.limit <= 0 or r.reset_s <= 0:
        return None
    used = r.limit - r.remaining
    if used < 1 or (r.coarse and r.reset_s < COARSE_MIN_S):
        return None
    return min(MAX_WINDOW_S, r.reset_s * r.limit / used)
