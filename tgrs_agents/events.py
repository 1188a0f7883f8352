"""Typed events and a tiny synchronous publish/subscribe bus.

Events are small frozen dataclasses (cheap to make at tens of thousands a second). Subscribers are
plain callables; they run in the publisher's task, in subscription order, and must not block. The
run directory's journal, the progress display and the summary are all subscribers.
"""

from __future__ import annotations

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
    """Deliver each published event to every subscriber, in order."""

    def __init__(self) -> None:
        self._subs: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        self._subs.append(fn)
        return lambda: self._subs.remove(fn)

    def publish(self, event: Event) -> None:
        for fn in tuple(self._subs):  # a subscriber may unsubscribe itself during delivery
            fn(event)


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

    def to_json(self) -> dict[str, Any]:
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
        }
