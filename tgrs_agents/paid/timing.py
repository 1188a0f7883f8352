"""Where a paid call's time went, and which rate limit held it back.

The rate-limit layer (:class:`~tgrs_agents.paid.wrappers.RateLimited`) times each attempt on its
limiter's clock: the wait for the permit (a slot, a Retry-After pause, rate tokens) apart from the
remote call. Why: a judge whose server answers in 50 ms but that queues 3 s in this process for a
slot shows a latency of 3 s; the split says it is the rate, not the server. :func:`limit_report`
then names the limit that binds and whose it is: the user's own ``rpm``/``tpm`` from the teacher
file, or the provider's (from its rate-limit headers), read from the limiter's public attributes.
"""

from __future__ import annotations

import contextvars
import dataclasses
import weakref
from typing import Any

from .limits import EndpointLimiter


@dataclasses.dataclass(slots=True)
class Timing:
    """Where a paid call's time went, added up over its attempts: queued in the endpoint's limiter
    (a slot, a Retry-After pause, rate tokens) and in the remote call itself. The gap to the whole
    call's latency is the retry policy's backoff."""

    wait_s: float = 0.0
    service_s: float = 0.0
    attempts: int = 0


_TIMING: contextvars.ContextVar[Timing | None] = contextvars.ContextVar("paid call timing", default=None)


@dataclasses.dataclass(slots=True)
class LimiterUse:
    """What the calls through one endpoint limiter took, to tell which of its limits binds."""

    requests: float = 0.0
    tokens: float = 0.0
    input: float = 0.0
    output: float = 0.0
    first: float | None = None
    last: float = 0.0


# per limiter (shared by the teachers on one endpoint); weak, so a finished run's limiters go
_USE: weakref.WeakKeyDictionary[EndpointLimiter, LimiterUse] = weakref.WeakKeyDictionary()
BOTTLENECK_SHARE = 0.25  # a teacher waiting on its limiter this share of its time is worth a line
_LIMIT_FIELDS = {"requests": ("rpm", "rpm"), "tokens": ("tpm", "tpm"), "input": ("input_tpm", "input tpm"),
                 "output": ("output_tpm", "output tpm")}




def record(timing: Timing, limiter: EndpointLimiter, wait: float, service: float, n_in: int, n_out: int) -> None:
    """One attempt: its wait and service on ``timing`` (and on the judge call under way, if any), and
    what it took from ``limiter`` (tokens: as used, else as estimated)."""
    for tm in (timing, _TIMING.get()):
        if tm is not None:
            tm.wait_s += wait
            tm.service_s += service
            tm.attempts += 1
    use = _USE.get(limiter)
    if use is None:
        use = _USE[limiter] = LimiterUse()
    use.requests += 1
    use.tokens += n_in + n_out
    use.input += n_in
    use.output += n_out
    now = limiter.clock.now()
    use.first = now if use.first is None else use.first
    use.last = now


def limit_report(name: str, timing: Timing, limiter: EndpointLimiter, own: Any = None) -> dict[str, Any] | None:
    """The share of a teacher's time spent waiting for its endpoint's limiter, the limit that binds
    (the one the calls used most of, over the time they ran) and where it came from: the teacher
    file (``config``: the user's own ``rpm``/``tpm``), the provider's headers (``provider``), or the
    limiter's own cut after 429s. ``note`` is a sentence for the summary when the wait share is at
    least ``BOTTLENECK_SHARE``; None when nothing was called."""
    if not timing.attempts:
        return None
    busy = timing.wait_s + timing.service_s
    share = timing.wait_s / busy if busy else 0.0
    use = _USE.get(limiter)
    elapsed = max((use.last - use.first) if use is not None and use.first is not None else 0.0, 1e-9)
    best: tuple[float, str] | None = None
    for bucket in _LIMIT_FIELDS:
        bk = getattr(limiter, bucket, None)
        if bk is None or use is None or not bk.rate:
            continue
        base = bk.rate / max(limiter.factor, 1e-9)  # per second, before any cut after 429s
        util = getattr(use, bucket) / (elapsed * base + bk.capacity)
        if best is None or util > best[0]:
            best = (util, bucket)
    out: dict[str, Any] = {"wait_share": round(share, 4), "wait_s": round(timing.wait_s, 3),
                           "service_s": round(timing.service_s, 3), "attempts": timing.attempts,
                           "binding": None, "source": None, "note": None}
    if best is None:
        return out
    bucket = best[1]
    field_, label = _LIMIT_FIELDS[bucket]
    told = [x for x in (getattr(limiter.limits, field_, None), getattr(own, field_, None)) if x]
    configured = min(told) if told else None
    provider = limiter.stats.learned.get(bucket)
    if configured is not None and (provider is None or configured < provider):
        source = "config"
    else:
        source = "provider"
    limit = configured if source == "config" else provider
    out.update(binding=label, limit_per_min=limit, configured_per_min=configured, provider_per_min=provider,
               source=source, utilisation=round(min(best[0], 1.0), 4), factor=round(limiter.factor, 4))
    if share >= BOTTLENECK_SHARE and limit:
        if source == "config":
            whose = (f"your {label} = {limit:g} limit (teacher file; the provider allows {provider:g})"
                     if provider is not None else
                     f"your {label} = {limit:g} limit (teacher file; the provider has not stated its own)")
        else:
            whose = f"the provider's {label} = {limit:g} limit (from its rate-limit headers)"
        cut = (f"; after 429s the limiter runs at {limiter.factor:.0%} of it" if limiter.factor < 0.999 else "")
        out["note"] = f"teacher {name}: {share:.0%} of its call time waiting on {whose}{cut}"
    return out
