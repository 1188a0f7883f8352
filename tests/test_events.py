"""The event vocabulary: the bus's delivery order and failure behaviour, the journal form of each
event, and TeacherStats (the per-teacher counters the summary and the resume are built from)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tgrs_agents.events import (
    CandidateDecided,
    CandidateInvalid,
    CandidateLoaded,
    Event,
    EventBus,
    RunFinished,
    RunStarted,
    RunStopped,
    TeacherStats,
    VerdictReceived,
)
from tgrs_agents.types import Decision, Usage, Verdict


def decided(accepted: bool | None, line: int = 3) -> CandidateDecided:
    d = Decision(candidate_id=f"c{line}", task_id="t", accepted=accepted, score=0.5, reason="why",
                 decided_by="a" if accepted is not None else None, saved=("b", "c"))
    return CandidateDecided(line=line, decision=d)


# --- the bus -------------------------------------------------------------------------------------
def test_every_subscriber_gets_every_event_in_subscription_then_publication_order() -> None:
    bus = EventBus()
    got: list[tuple[str, int]] = []
    bus.subscribe(lambda ev: got.append(("first", ev.line)))  # type: ignore[attr-defined]
    bus.subscribe(lambda ev: got.append(("second", ev.line)))  # type: ignore[attr-defined]
    for line in (1, 2, 3):
        bus.publish(CandidateLoaded(candidate_id=f"c{line}", line=line))
    assert got == [("first", 1), ("second", 1), ("first", 2), ("second", 2), ("first", 3), ("second", 3)]


def test_a_subscriber_skips_the_kinds_it_names_and_wants_says_whether_anyone_listens() -> None:
    bus = EventBus()
    assert not bus.wants(CandidateLoaded)  # no subscriber: a publisher need not build the event
    journal: list[Event] = []
    stop = bus.subscribe(journal.append, skip=(CandidateLoaded, VerdictReceived))
    assert not bus.wants(CandidateLoaded) and bus.wants(RunStopped)
    bus.publish(CandidateLoaded(candidate_id="c1", line=1))
    bus.publish(RunStopped(reason="x"))
    assert [type(e) for e in journal] == [RunStopped]
    progress: list[Event] = []
    bus.subscribe(progress.append)  # a progress display wants everything: the answer changes at once
    assert bus.wants(CandidateLoaded)
    bus.publish(CandidateLoaded(candidate_id="c2", line=2))
    assert [type(e) for e in progress] == [CandidateLoaded] and len(journal) == 1
    stop()
    bus.publish(RunStopped(reason="y"))
    assert len(journal) == 1 and len(progress) == 2


def test_delivery_is_synchronous_in_the_publishers_call() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    ev = RunStopped(reason="interrupted")
    bus.publish(ev)
    assert seen == [ev]  # delivered before publish returned: no queue, no task


def test_unsubscribe_stops_delivery_to_that_subscriber_only() -> None:
    bus = EventBus()
    a: list[Event] = []
    b: list[Event] = []
    stop_a = bus.subscribe(a.append)
    bus.subscribe(b.append)
    bus.publish(RunStopped(reason="one"))
    stop_a()
    bus.publish(RunStopped(reason="two"))
    assert [e.reason for e in a] == ["one"]  # type: ignore[attr-defined]
    assert [e.reason for e in b] == ["one", "two"]  # type: ignore[attr-defined]


def test_a_failing_subscriber_raises_into_the_publisher() -> None:
    """The journal is a subscriber: if it cannot write, the run must hear it, not lose records
    silently. Subscribers before the failing one have the event; the bus stays usable."""
    bus = EventBus()
    before: list[Event] = []
    bus.subscribe(before.append)

    def broken(ev: Event) -> None:
        raise OSError("disk full")

    stop = bus.subscribe(broken)
    with pytest.raises(OSError, match="disk full"):
        bus.publish(RunStopped(reason="x"))
    assert len(before) == 1
    stop()
    bus.publish(RunStopped(reason="y"))
    assert [e.reason for e in before] == ["x", "y"]  # type: ignore[attr-defined]


def test_a_subscriber_that_unsubscribes_itself_does_not_hide_the_event_from_the_next() -> None:
    bus = EventBus()
    once: list[Event] = []
    after: list[Event] = []

    def one_shot(ev: Event) -> None:
        once.append(ev)
        stop()

    stop = bus.subscribe(one_shot)
    bus.subscribe(after.append)
    bus.publish(RunStopped(reason="x"))
    assert len(once) == 1
    assert len(after) == 1


# --- the journal form ----------------------------------------------------------------------------
def test_event_type_names_and_json() -> None:
    v = Verdict(teacher="judge", passed=False, score=0.2, rationale="long text", error=None)
    cases: list[tuple[Event, str]] = [
        (RunStarted(run_dir="d", input="in", resumed=True, already_done=4, panel_fingerprint="f"), "run_started"),
        (CandidateLoaded(candidate_id="c1", line=1), "loaded"),
        (CandidateInvalid(line=2, reason="bad"), "invalid"),
        (VerdictReceived(candidate_id="c1", verdict=v), "verdict"),
        (decided(True), "accepted"),
        (decided(False), "rejected"),
        (decided(None), "failed"),
        (RunStopped(reason="budget"), "run_stopped"),
        (RunFinished(summary={"accepted": 1}), "run_finished"),
    ]
    for ev, name in cases:
        assert ev.type == name
        doc = ev.to_json()
        assert doc["type"] == name and isinstance(doc["t"], float)
        json.dumps(doc)  # journal lines must be plain JSON
    started = cases[0][0].to_json()
    assert started["already_done"] == 4 and started["resumed"] is True


def test_verdict_event_journals_the_outcome_not_the_rationale() -> None:
    v = Verdict(teacher="judge", passed=True, score=0.9, rationale="x" * 10_000)
    doc = VerdictReceived(candidate_id="c9", verdict=v, t=12.5).to_json()
    assert doc == {"type": "verdict", "t": 12.5, "candidate_id": "c9", "teacher": "judge", "passed": True,
                   "error": None}


def test_decided_event_carries_line_reason_decider_and_saved() -> None:
    doc = decided(False, line=7).to_json()
    assert doc["type"] == "rejected" and doc["line"] == 7 and doc["candidate_id"] == "c7"
    assert doc["reason"] == "why" and doc["decided_by"] == "a" and doc["saved"] == ["b", "c"]
    failed = decided(None).to_json()
    assert failed["type"] == "failed" and failed["decided_by"] is None


# --- TeacherStats --------------------------------------------------------------------------------
def test_teacher_stats_add_counts_each_kind_of_verdict() -> None:
    st = TeacherStats()
    st.add(Verdict(teacher="j", passed=True, score=1.0, latency_s=0.5,
                   usage=Usage(requests=2, input_tokens=100, output_tokens=10, cost_usd=0.25)))
    st.add(Verdict(teacher="j", passed=False, score=0.0, latency_s=0.25,
                   usage=Usage(requests=1, input_tokens=50, output_tokens=5, cost_usd=0.125)))
    st.add(Verdict(teacher="j", passed=True, score=1.0, cached=True))  # a cache hit: no request, no cost
    # an error verdict: passed=False by construction, but even a passed flag on it must not count
    st.add(Verdict(teacher="j", passed=True, score=1.0, error="boom", latency_s=0.25,
                   usage=Usage(requests=3, cost_usd=0.125)))
    assert (st.calls, st.requests, st.errors, st.passed, st.cache_hits) == (4, 6, 1, 2, 1)
    assert st.cost_usd == pytest.approx(0.5)
    assert (st.input_tokens, st.output_tokens) == (150, 15)
    assert st.latency_s == pytest.approx(1.0)


def test_teacher_stats_to_json() -> None:
    st = TeacherStats(saved=3, reused=2)
    empty = st.to_json()
    assert empty["mean_latency_s"] is None and empty["calls"] == 0
    assert empty["calls_saved"] == 3 and empty["reused_from_journal"] == 2
    for lat in (0.1, 0.2, 0.6):
        st.add(Verdict(teacher="j", passed=True, score=1.0, latency_s=lat,
                       usage=Usage(requests=1, cost_usd=1 / 3, input_tokens=7, output_tokens=1)))
    doc: dict[str, Any] = st.to_json()
    assert doc == {
        "calls": 3, "calls_saved": 3, "requests": 3, "cache_hits": 0, "reused_from_journal": 2,
        "errors": 0, "passed": 3, "cost_usd": 1.0, "input_tokens": 21, "output_tokens": 3,
        "mean_latency_s": pytest.approx(0.3),
    }
    assert TeacherStats(cost_usd=0.12345678).to_json()["cost_usd"] == 0.123457  # rounded to 6 places
