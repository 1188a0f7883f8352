"""Typed events and a tiny synchronous publish/subscribe bus.

Events are small frozen dataclasses (cheap to make at tens of thousands a second). Subscribers are
plain callables; they run in the publisher's task, in subscription order, and must not block. The
run directory's journal, the progress display and the summary are all subscribers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .types import Decision, Verdict


@dataclass(frozen=True, slots=True)
class Event:
    t: float = field(default_factory=time.time, kw_only=True)

    @property
    def type(self) -> str:
        return _NAMES[type(self)]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["type"] = self.type
        return d


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    run_dir: str
    input: str
    resumed: bool
    already_done: int
    panel_fingerprint: str
    budget_usd: float | None = None  # this invocation's (``--budget-usd``)
    cost_before_usd: float = 0.0  # what earlier invocations of this directory spent


@dataclass(frozen=True, slots=True)
class CandidateLoaded(Event):
    candidate_id: str
    line: int


@dataclass(frozen=True, slots=True)
class CandidateInvalid(Event):
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class VerdictReceived(Event):
    candidate_id: str
    verdict: Verdict

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "verdict",
            "t": self.t,
            "candidate_id": self.candidate_id,
            "teacher": self.verdict.teacher,
            "passed": self.verdict.passed,
            "error": self.verdict.error,
        }


@dataclass(frozen=True, slots=True)
class CandidateDecided(Event):
    """Accepted, rejected, or failed (``decision.accepted is None``)."""

    line: int
    decision: Decision

    @property
    def type(self) -> str:
        return {True: "accepted", False: "rejected", None: "failed"}[self.decision.accepted]

    def to_json(self) -> dict[str, Any]:
        d = self.decision
        return {
            "type": self.type,
            "t": self.t,
            "candidate_id": d.candidate_id,
            "line": self.line,
            "reason": d.reason,
            "decided_by": d.decided_by,
            "saved": list(d.saved),
        }


@dataclass(frozen=True, slots=True)
class RunStopped(Event):
    """The run stopped early: interrupted, or the budget ran out. It can be resumed."""

    reason: str


@dataclass(frozen=True, slots=True)
class RunFinished(Event):
    summary: dict[str, Any]


_NAMES: dict[type, str] = {
    RunStarted: "run_started",
    CandidateLoaded: "loaded",
    CandidateInvalid: "invalid",
    VerdictReceived: "verdict",
    CandidateDecided: "decided",
    RunStopped: "run_stopped",
    RunFinished: "run_finished",
}

Subscriber = Callable[[Event], None]


class EventBus:
    """Deliver each published event to every subscriber, in order.

    A subscriber may say which kinds it ignores (``skip``): a publisher of a frequent kind asks
    :meth:`wants` first and does not even build the event when no one would read it.
    """

    def __init__(self) -> None:
        self._subs: list[tuple[Subscriber, tuple[type, ...]]] = []
        self._wants: dict[type, bool] = {}

    def subscribe(self, fn: Subscriber, *, skip: tuple[type, ...] = ()) -> Callable[[], None]:
        entry = (fn, skip)
        self._subs.append(entry)
        self._wants.clear()

        def unsubscribe() -> None:
            self._subs.remove(entry)
            self._wants.clear()

        return unsubscribe

    def wants(self, kind: type) -> bool:
        """Whether any subscriber takes events of ``kind``."""
        got = self._wants.get(kind)
        if got is None:
            got = self._wants[kind] = any(not issubclass(kind, skip) for _, skip in self._subs)
        return got

    def publish(self, event: Event) -> None:
        for fn, skip in tuple(self._subs):  # a subscriber may unsubscribe itself during delivery
            if not isinstance(event, skip):
                fn(event)


class Sketch:
    """Percentiles of a stream of durations in constant memory (log-spaced buckets, 1% relative error).

    Why: the report and the summary give latency percentiles of runs of any size; keeping every
    sample costs memory in proportion to the run. Values at or below 1 µs count in a zero bucket.
    """

    __slots__ = ("counts", "n", "total")
    GAMMA = 1.02  # bucket i holds (GAMMA**(i-1), GAMMA**i] µs: midpoints within 1% of any member
    _LOG = math.log(GAMMA)

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}
        self.n = 0
        self.total = 0.0

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        us = x * 1e6
        i = math.ceil(math.log(us) / self._LOG) if us > 1.0 else 0
        self.counts[i] = self.counts.get(i, 0) + 1

    def merge(self, other: Sketch) -> None:
        for i, c in other.counts.items():
            self.counts[i] = self.counts.get(i, 0) + c
        self.n += other.n
        self.total += other.total

    def quantiles(self, qs: tuple[float, ...] = (50, 90, 99)) -> list[float | None]:
        """The ``qs`` percentiles (0-100); None for each when there are no values."""
        if not self.n:
            return [None for _ in qs]
        out: list[float | None] = []
        keys, seen, k = sorted(self.counts), 0, 0
        for q in qs:
            rank = q / 100 * (self.n - 1)  # the rank numpy's linear percentile interpolates at
            while seen + self.counts[keys[k]] <= rank:
                seen += self.counts[keys[k]]
                k += 1
            i = keys[k]
            out.append(0.0 if i == 0 else 2 * self.GAMMA ** i / (1 + self.GAMMA) * 1e-6)
        return out


@dataclass(slots=True)
class WallTime:
    """Wall time of a run directory across invocations: a resumed (or re-run) directory adds this
    invocation to what the earlier ones recorded instead of starting from zero.

    ``before``: the earlier invocations' seconds, as the previous summary recorded them.
    """

    before: list[float] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)

    @classmethod
    def resume(cls, summary: dict[str, Any] | None, fallback_s: float = 0.0) -> WallTime:
        """From the previous summary (its ``invocations_wall_s``, else its ``wall_s``, else ``fallback_s``)."""
        s = summary or {}
        prior = s.get("invocations_wall_s")
        if isinstance(prior, list) and all(isinstance(x, int | float) for x in prior):
            return cls([float(x) for x in prior])
        total = s.get("wall_s", fallback_s) or fallback_s
        return cls([float(total)] if total else [])

    def now_s(self) -> float:
        return time.monotonic() - self.t0

    def to_json(self) -> dict[str, Any]:
        this = self.now_s()
        return {"wall_s": round(sum(self.before) + this, 3), "wall_s_invocation": round(this, 3),
                "invocations_wall_s": [round(x, 3) for x in [*self.before, this]]}


@dataclass(slots=True)
class TeacherStats:
    calls: int = 0
    requests: int = 0
    errors: int = 0
    passed: int = 0
    saved: int = 0
    cache_hits: int = 0
    reused: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    # paid calls only: each call's latency, its service time and its time queued in the limiter
    timed: int = 0
    service_s: float = 0.0
    wait_s: float = 0.0
    sketches: dict[str, Sketch] = field(default_factory=dict)

    def add(self, v: Verdict) -> None:
        self.calls += 1
        self.requests += v.usage.requests
        self.errors += v.error is not None
        self.passed += v.passed and v.error is None
        self.cache_hits += v.cached
        self.cost_usd += v.usage.cost_usd
        self.latency_s += v.latency_s
        self.input_tokens += v.usage.input_tokens
        self.output_tokens += v.usage.output_tokens
        if (v.service_s or v.wait_s) and not v.cached:
            self.timed += 1
            self.service_s += v.service_s
            self.wait_s += v.wait_s
            for key, x in (("latency_s", v.latency_s), ("service_s", v.service_s), ("wait_s", v.wait_s)):
                self.sketches.setdefault(key, Sketch()).add(x)

    def timing(self) -> dict[str, Any] | None:
        """p50/p90/p99 of the paid calls' latency, service time and limiter wait, and the share of
        their time spent waiting for the limiter; None when no call was timed (no paid call)."""
        if not self.timed:
            return None
        busy = self.service_s + self.wait_s
        return {
            "calls": self.timed,
            **{f"{k}_p50_p90_p99": [None if x is None else round(x, 6) for x in sk.quantiles()]
               for k, sk in self.sketches.items()},
            "mean_service_s": round(self.service_s / self.timed, 6),
            "mean_wait_s": round(self.wait_s / self.timed, 6),
            "wait_share": round(self.wait_s / busy, 4) if busy else 0.0,
        }

    def to_json(self) -> dict[str, Any]:
        timing = self.timing()
        return {
            "calls": self.calls,
            "calls_saved": self.saved,
            "requests": self.requests,
            "cache_hits": self.cache_hits,
            "reused_from_journal": self.reused,
            "errors": self.errors,
            "passed": self.passed,
            "cost_usd": round(self.cost_usd, 6),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "mean_latency_s": round(self.latency_s / self.calls, 6) if self.calls else None,
            **({"timing": timing} if timing is not None else {}),
        }
