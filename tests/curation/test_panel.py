"""The panel cascade (``Panel.judge``): cheapest teacher first, the short-circuit and its saved calls,
teacher failures as error verdicts, concurrency inside one rank, inline teachers, and the replay that
names the deciding teacher. The exact agreement of the short-circuit with consulting everyone, over
random policies, is a property test in test_policy.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
from panel_kit import FakeTeacher, Outcome, cand, judge_all, make_teacher, v

from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.policy import make_policy
from tgrs_agents.errors import ConfigError, TeacherError
from tgrs_agents.teachers.base import Teacher, TeacherConfig
from tgrs_agents.types import Candidate, Decision, Usage, Verdict


def judge_one(panel: Panel, c: Candidate, prior: dict[str, Verdict] | None = None
              ) -> tuple[Decision, list[Verdict]]:
    return asyncio.run(panel.judge(c, prior))


def all_pass(c: Candidate, names: Sequence[str]) -> dict[str, dict[str, Outcome]]:
    return {n: {c.id: (True, 1.0)} for n in names}


# --- cheapest first ------------------------------------------------------------------------------
def test_teachers_are_called_in_cost_rank_order_whatever_the_panel_order() -> None:
    c = cand()
    log: list[str] = []
    fakes = [make_teacher(n, r, False, {c.id: (True, 1.0)}, log) for n, r in
             (("judge", 3), ("verify", 0), ("rm", 2), ("regex", 1))]
    panel = Panel(fakes, make_policy("unanimous", ["judge", "verify", "rm", "regex"]))
    assert [t.name for t in panel.teachers] == ["verify", "regex", "rm", "judge"]
    d, new = judge_one(panel, c)
    assert log == ["verify", "regex", "rm", "judge"]
    assert [x.teacher for x in new] == log and [x.teacher for x in d.verdicts] == log
    assert d.accepted is True and d.saved == () and d.decided_by == "judge"


def test_inline_teachers_of_a_rank_run_before_its_io_teachers_and_can_save_them() -> None:
    ok, bad = cand(1), cand(2)
    log: list[str] = []
    io = make_teacher("io", 0, False, {ok.id: (True, 1.0), bad.id: (True, 1.0)}, log)
    fast = make_teacher("fast", 0, True, {ok.id: (True, 1.0), bad.id: (False, 0.0)}, log)
    panel = Panel([io, fast], make_policy("unanimous", ["io", "fast"]))
    d_ok, d_bad = judge_all(panel, [ok, bad])
    assert log == ["fast", "io", "fast"]  # inline first; its rejection of `bad` saves the I/O call
    assert d_ok.accepted is True and d_ok.decided_by == "io"
    assert d_bad.accepted is False and d_bad.decided_by == "fast" and d_bad.saved == ("io",)
    assert io.calls == {ok.id: 1}


def test_unanimous_first_failure_saves_the_rest() -> None:
    c = cand()
    a = make_teacher("a", 0, True, {c.id: (False, 0.0)})
    b = make_teacher("b", 1, True, {c.id: (True, 1.0)})
    slow = make_teacher("slow", 2, False, {c.id: (True, 1.0)})
    panel = Panel([slow, b, a], make_policy("unanimous", ["a", "b", "slow"]))
    [d] = judge_all(panel, [c])
    assert d.accepted is False
    assert d.decided_by == "a"
    assert d.saved == ("b", "slow")
    assert a.calls == {c.id: 1} and b.calls == {} and slow.calls == {}
    assert panel.stats["b"].saved == 1 and panel.stats["slow"].saved == 1
    assert panel.stats["a"].calls == 1


def test_inline_teachers_in_one_rank_stop_early() -> None:
    c = cand()
    a = make_teacher("a", 0, True, {c.id: (False, 0.0)})
    b = make_teacher("b", 0, True, {c.id: (True, 1.0)})
    panel = Panel([a, b], make_policy("unanimous", ["a", "b"]))
    [d] = judge_all(panel, [c])
    assert d.accepted is False and b.calls == {} and d.saved == ("b",)


def test_majority_stops_when_decided() -> None:
    c = cand()
    fakes = [make_teacher(t, i, True, {c.id: (True, 1.0)}) for i, t in enumerate("abc")]
    panel = Panel(fakes, make_policy("majority", ["a", "b", "c"]))
    [d] = judge_all(panel, [c])
    assert d.accepted is True and d.saved == ("c",) and fakes[2].calls == {}


def test_saved_calls_add_up_over_candidates() -> None:
    """Per candidate, every teacher is either called or counted as saved; the counters add up."""
    cands = [cand(i) for i in range(6)]
    # a rejects c0, c2, c4; b rejects c1 (a passes it); c passes everything
    a = make_teacher("a", 0, True, {c.id: (i % 2 == 1, 0.5) for i, c in enumerate(cands)})
    b = make_teacher("b", 1, False, {c.id: (c.id != "c1", 0.5) for c in cands})
    c_ = make_teacher("c", 2, False, {c.id: (True, 0.5) for c in cands})
    panel = Panel([a, b, c_], make_policy("unanimous", ["a", "b", "c"]))
    decisions = judge_all(panel, cands)
    assert [d.accepted for d in decisions] == [False, False, False, True, False, True]
    assert [d.saved for d in decisions] == [("b", "c"), ("c",), ("b", "c"), (), ("b", "c"), ()]
    st = panel.stats
    assert (st["a"].calls, st["b"].calls, st["c"].calls) == (6, 3, 2)
    assert (st["a"].saved, st["b"].saved, st["c"].saved) == (0, 3, 4)
    assert sum(s.calls + s.saved for s in st.values()) == 3 * len(cands)
    assert len(c_.calls) == 2


def test_best_k_consults_everyone_on_acceptance_but_short_circuits_rejection() -> None:
    ok, bad = cand(0), cand(1)
    a = make_teacher("a", 0, True, {ok.id: (True, 1.0), bad.id: (False, 0.0)})
    b = make_teacher("b", 1, True, {ok.id: (True, 0.7), bad.id: (True, 1.0)})
    panel = Panel([a, b], make_policy("majority", ["a", "b"], best_k=1))
    d_ok, d_bad = judge_all(panel, [ok, bad])
    assert d_ok.accepted is True and d_ok.saved == () and b.calls.get(ok.id) == 1
    assert d_ok.score == pytest.approx(0.85)
    assert d_bad.accepted is False and d_bad.saved == ("b",) and bad.id not in b.calls


# --- failures ------------------------------------------------------------------------------------
def test_teacher_error_leaves_outcome_open_only_when_it_matters() -> None:
    c1, c2 = cand(1), cand(2)
    boom = make_teacher("boom", 0, True, {c1.id: None, c2.id: None})
    other = make_teacher("other", 1, True, {c1.id: (True, 1.0), c2.id: (False, 0.0)})
    panel = Panel([boom, other], make_policy("unanimous", ["boom", "other"]))
    d1, d2 = judge_all(panel, [c1, c2])
    assert d1.accepted is None and "errors: boom" in d1.reason
    assert d2.accepted is False
    assert panel.stats["boom"].errors == 2


def test_teacher_failures_become_error_verdicts_that_keep_what_they_cost() -> None:
    class Paid(Teacher):
        async def judge(self, candidate: Candidate) -> Verdict:
            raise TeacherError("malformed JSON", teacher=self.name, kind="malformed",
                               usage=Usage(requests=2, input_tokens=40, output_tokens=9, cost_usd=0.003))

    class Buggy(Teacher):
        async def judge(self, candidate: Candidate) -> Verdict:
            raise KeyError("messages")  # a teacher bug must not crash the run

    c = cand()
    heard: list[tuple[str, Verdict]] = []
    last = make_teacher("last", 2, True, {c.id: (True, 1.0)})
    panel = Panel([Paid(TeacherConfig(name="paid", kind="x", cost_rank=0)),
                   Buggy(TeacherConfig(name="buggy", kind="x", cost_rank=1)), last],
                  make_policy("unanimous", ["paid", "buggy", "last"]))
    d, new = asyncio.run(panel.judge(c, on_verdict=lambda cid, x: heard.append((cid, x))))
    paid, buggy, ok = new
    assert paid.error == "malformed JSON" and paid.usage.cost_usd == pytest.approx(0.003)
    assert paid.usage.requests == 2 and paid.latency_s > 0
    assert buggy.error is not None and buggy.error.startswith("KeyError") and "messages" in buggy.error
    assert ok.error is None and last.calls == {c.id: 1}  # errors are unheard: the cascade goes on
    assert d.accepted is None and d.decided_by is None and d.saved == ()
    assert [x for _, x in heard] == new and {cid for cid, _ in heard} == {c.id}
    st = panel.stats
    assert (st["paid"].errors, st["paid"].requests, st["buggy"].errors) == (1, 2, 1)
    assert st["paid"].cost_usd == pytest.approx(0.003)


def test_prior_verdicts_are_not_paid_again() -> None:
    c = cand()
    a = make_teacher("a", 0, True, {c.id: (True, 1.0)})
    b = make_teacher("b", 1, True, {c.id: (True, 1.0)})
    panel = Panel([a, b], make_policy("unanimous", ["a", "b"]))

    async def go():
        return await panel.judge(c, prior={"a": v("a", True), "b": Verdict.failure("b", "x")})

    d, new = asyncio.run(go())
    assert d.accepted is True
    assert a.calls == {} and b.calls == {c.id: 1}  # an errored prior verdict is asked again
    assert [x.teacher for x in new] == ["b"]
    assert panel.stats["a"].reused == 1


# --- concurrency inside one rank -----------------------------------------------------------------
def test_io_teachers_of_one_rank_run_concurrently() -> None:
    class Rendezvous(Teacher):
        def __init__(self, name: str, mine: asyncio.Event, other: asyncio.Event) -> None:
            super().__init__(TeacherConfig(name=name, kind="fake"))
            self.mine, self.other = mine, other

        async def judge(self, candidate: Candidate) -> Verdict:
            self.mine.set()
            await asyncio.wait_for(self.other.wait(), timeout=2)  # deadlocks if run one by one
            return self.verdict(True)

    async def go():
        e1, e2 = asyncio.Event(), asyncio.Event()
        panel = Panel(
            [Rendezvous("a", e1, e2), Rendezvous("b", e2, e1)], make_policy("unanimous", ["a", "b"])
        )
        return (await panel.judge(cand()))[0]

    d = asyncio.run(go())
    assert d.accepted is True
    assert all(x.error is None for x in d.verdicts)


class Ordered(Teacher):
    """Finishes when its gate opens, so a test chooses the completion order."""

    def __init__(self, name: str, passed: bool, gate: asyncio.Event, done: list[str]) -> None:
        super().__init__(TeacherConfig(name=name, kind="fake", cost_rank=1))
        self.passed, self.gate, self.done = passed, gate, done

    async def judge(self, candidate: Candidate) -> Verdict:
        await self.gate.wait()
        self.done.append(self.name)
        return self.verdict(self.passed)


@pytest.mark.parametrize(("a_passes", "b_passes", "decider"), [(False, True, "a"), (True, False, "b"),
                                                                  (False, False, "a")])
def test_a_concurrent_rank_is_recorded_in_panel_order_not_completion_order(
        a_passes: bool, b_passes: bool, decider: str) -> None:
    """The decision (verdict order, decider) must not depend on which call came back first."""
    async def go() -> tuple[Decision, list[Verdict], list[str]]:
        gate_a, gate_b, done = asyncio.Event(), asyncio.Event(), []
        panel = Panel([Ordered("a", a_passes, gate_a, done), Ordered("b", b_passes, gate_b, done)],
                      make_policy("unanimous", ["a", "b"]))
        job = asyncio.create_task(panel.judge(cand()))
        await asyncio.sleep(0.01)
        gate_b.set()  # b answers first
        await asyncio.sleep(0.01)
        gate_a.set()
        d, new = await job
        return d, new, done

    d, new, done = asyncio.run(go())
    assert done == ["b", "a"]
    assert [x.teacher for x in new] == ["a", "b"] == [x.teacher for x in d.verdicts]
    assert d.accepted is False and d.decided_by == decider and d.saved == ()


def test_a_rank_that_fixes_the_outcome_saves_every_later_rank_even_when_run_concurrently() -> None:
    c = cand()
    log: list[str] = []
    x = make_teacher("x", 0, False, {c.id: (False, 0.0)}, log)
    y = make_teacher("y", 0, False, {c.id: (True, 1.0)}, log)
    z = make_teacher("z", 1, False, {c.id: (True, 1.0)}, log)
    panel = Panel([z, y, x], make_policy("unanimous", ["x", "y", "z"]))
    d, new = judge_one(panel, c)
    assert sorted(log) == ["x", "y"]  # both of rank 0 were already in flight; rank 1 never starts
    assert [x.teacher for x in new] == ["y", "x"] and d.decided_by == "x"  # panel order within a rank
    assert d.accepted is False and d.saved == ("z",) and panel.stats["z"].saved == 1


def test_max_concurrency_caps_one_teachers_calls_across_candidates() -> None:
    class Peak(Teacher):
        def __init__(self) -> None:
            super().__init__(TeacherConfig(name="api", kind="fake", max_concurrency=3))
            self.now = self.peak = 0

        async def judge(self, candidate: Candidate) -> Verdict:
            self.now += 1
            self.peak = max(self.peak, self.now)
            await asyncio.sleep(0.005)
            self.now -= 1
            return self.verdict(True)

    t = Peak()
    panel = Panel([t], make_policy("unanimous", ["api"]))

    async def go() -> list[tuple[Decision, list[Verdict]]]:
        return await asyncio.gather(*(panel.judge(cand(i)) for i in range(12)))

    results = asyncio.run(go())
    assert all(d.accepted for d, _ in results)
    assert t.peak == 3
    assert panel.stats["api"].calls == 12


# --- who decided: live and replayed from a killed run's verdicts ---------------------------------
def replay_panel() -> tuple[Panel, list[FakeTeacher]]:
    """Rank 0: an I/O teacher and an inline one; rank 1 and 2: one each. Nothing may be called."""
    fakes = [make_teacher("io0", 0, False, {}), make_teacher("in0", 0, True, {}),
             make_teacher("r1", 1, False, {}), make_teacher("r2", 2, False, {})]
    return Panel(fakes, make_policy("unanimous", ["io0", "in0", "r1", "r2"])), fakes


@pytest.mark.parametrize(("prior", "decider", "saved"), [
    ({"in0": v("in0", True), "io0": v("io0", True), "r1": v("r1", False)}, "r1", ("r2",)),
    # both of rank 0 rejected: the inline teacher is called first in a live run, so it decided
    ({"io0": v("io0", False), "in0": v("in0", False)}, "in0", ("r1", "r2")),
    ({"io0": v("io0", False), "in0": v("in0", True)}, "io0", ("r1", "r2")),
    # a verdict heard after the outcome was fixed does not steal the decision
    ({"in0": v("in0", False), "r2": v("r2", False)}, "in0", ("io0", "r1")),
])
def test_decided_by_is_replayed_in_call_order_from_prior_verdicts(
        prior: dict[str, Verdict], decider: str, saved: tuple[str, ...]) -> None:
    panel, fakes = replay_panel()
    d, new = judge_one(panel, cand(), prior)
    assert new == [] and all(f.calls == {} for f in fakes)
    assert d.accepted is False and d.decided_by == decider and d.saved == saved
    assert sum(s.reused for s in panel.stats.values()) == len(prior)


def test_decided_by_of_a_live_call_after_reused_verdicts() -> None:
    c = cand()
    fakes = [make_teacher("in0", 0, True, {}), make_teacher("r1", 1, False, {c.id: (False, 0.0)}),
             make_teacher("r2", 2, False, {c.id: (True, 1.0)})]
    panel = Panel(fakes, make_policy("unanimous", ["in0", "r1", "r2"]))
    d, new = judge_one(panel, c, {"in0": v("in0", True)})
    assert [x.teacher for x in new] == ["r1"] and d.decided_by == "r1" and d.saved == ("r2",)


def test_no_decider_when_nothing_short_circuits() -> None:
    """Acceptance under best_k needs every score, and an open outcome was decided by no one."""
    ok, open_ = cand(1), cand(2)
    a = make_teacher("a", 0, True, {ok.id: (True, 0.9), open_.id: None})
    b = make_teacher("b", 1, True, {ok.id: (True, 0.8), open_.id: (True, 1.0)})
    best = Panel([a, b], make_policy("unanimous", ["a", "b"], best_k=2))
    [d] = judge_all(best, [ok])
    assert d.accepted is True and d.decided_by is None and d.saved == ()
    # replayed: a best_k acceptance from prior verdicts has no decider either
    d2, _ = judge_one(best, ok, {"a": v("a", True), "b": v("b", True)})
    assert d2.accepted is True and d2.decided_by is None
    plain = Panel([make_teacher("a", 0, True, a.script), make_teacher("b", 1, True, b.script)],
                  make_policy("unanimous", ["a", "b"]))
    [d3] = judge_all(plain, [open_])
    assert d3.accepted is None and d3.decided_by is None


def test_panel_rejects_mismatched_policy() -> None:
    a = make_teacher("a", 0, True, {})
    with pytest.raises(ConfigError, match="differ"):  # a user mistake (issue 9 item 6; was ValueError)
        Panel([a], make_policy("unanimous", ["a", "b"]))


# --- the jury: escalation, reserves, quorum, repeats, calibrated weights (issue 16) ----------------
def test_escalate_only_seats_come_last_and_only_when_the_others_disagree() -> None:
    agree, split = cand(1), cand(2)
    log: list[str] = []
    a = make_teacher("a", 5, False, {agree.id: (True, 0.9), split.id: (True, 0.9)}, log)
    b = make_teacher("b", 6, False, {agree.id: (True, 0.8), split.id: (False, 0.1)}, log)
    strong = make_teacher("strong", 0, False, {split.id: (False, 0.0)}, log)  # rank 0, yet asked last
    panel = Panel([strong, a, b], make_policy("majority", ["a", "b", "strong"], escalate=["strong"]))
    assert [t.name for t in panel.teachers] == ["a", "b", "strong"]
    d_agree, d_split = judge_all(panel, [agree, split])
    assert log == ["a", "b", "a", "b", "strong"]
    assert d_agree.accepted is True and d_agree.saved == ("strong",)
    assert d_split.accepted is False and d_split.decided_by == "strong" and d_split.saved == ()
    assert panel.stats["strong"].saved == 1 and panel.stats["strong"].calls == 1
    rep = panel.jury_report()
    assert (rep["escalated"], rep["not_escalated"]) == (1, 1)


def test_a_reserve_takes_the_seat_of_a_judge_that_failed_for_good() -> None:
    c = cand()
    log: list[str] = []
    a = make_teacher("a", 0, False, {c.id: None}, log)
    b = make_teacher("b", 0, False, {c.id: None}, log)
    r1 = make_teacher("r1", 9, False, {c.id: (False, 0.0)}, log)
    r2 = make_teacher("r2", 9, False, {c.id: (True, 1.0)}, log)
    spare = make_teacher("r3", 9, False, {c.id: (True, 1.0)}, log)
    panel = Panel([a, b], make_policy("unanimous", ["a", "b"]), reserves=[r1, r2, spare])
    heard: list[str] = []
    d, new = asyncio.run(panel.judge(c, on_verdict=lambda cid, x: heard.append(x.teacher)))
    # both failed in one concurrent rank; reserves go in seat order: r1 to a, r2 to b
    assert sorted(log[:2]) == ["a", "b"] and log[2:] == ["r1", "r2"]
    assert d.accepted is False and d.decided_by == "r1" and "failed: r1" in d.reason
    assert [x.teacher for x in new] == ["a", "b", "r1", "r2"] == sorted(heard)
    assert spare.calls == {} and panel.stats["r3"].saved == 0  # an unused reserve is not "saved"
    assert panel.jury_report()["substitutions"] == 2


def test_reserves_run_out_and_a_reserve_verdict_from_a_killed_run_is_reused() -> None:
    c = cand()
    a = make_teacher("a", 0, True, {c.id: None})
    b = make_teacher("b", 1, True, {c.id: None})
    r1 = make_teacher("r1", 9, False, {c.id: (True, 1.0)})
    panel = Panel([a, b], make_policy("unanimous", ["a", "b"]), reserves=[r1])
    d, _ = judge_one(panel, c, prior={"r1": v("r1", True)})
    assert r1.calls == {} and panel.stats["r1"].reused == 1  # paid for once, by the killed run
    assert d.accepted is None and "errors: b" in d.reason  # a took r1; b has none left: open


def test_min_successful_drops_the_failed_judge_instead_of_failing_the_candidate() -> None:
    ok, few = cand(1), cand(2)
    a = make_teacher("a", 0, True, {ok.id: None, few.id: None})
    b = make_teacher("b", 1, True, {ok.id: (True, 1.0), few.id: None})
    c_ = make_teacher("c", 2, True, {ok.id: (True, 1.0), few.id: (True, 1.0)})
    panel = Panel([a, b, c_], make_policy("majority", ["a", "b", "c"], quorum=2))
    d_ok, d_few = judge_all(panel, [ok, few])
    assert d_ok.accepted is True  # a dropped: 2 of the 2 that answered
    assert d_few.accepted is None and "min_successful = 2" in d_few.reason
    without = Panel([make_teacher(t.name, t.cost_rank, True, t.script) for t in (a, b, c_)],
                    make_policy("majority", ["a", "b", "c"]))
    assert judge_all(without, [ok])[0].accepted is True  # 2 of 3 passes are a majority anyway
    assert judge_all(Panel([make_teacher(t.name, t.cost_rank, True, t.script) for t in (a, b, c_)],
                           make_policy("unanimous", ["a", "b", "c"])), [ok])[0].accepted is None


def test_repeats_take_the_majority_of_k_calls_and_stop_at_a_majority() -> None:
    from tgrs_agents.curation.repeats import Repeated

    c = cand()
    copies = [FakeTeacher("seat", 0, {c.id: o}) for o in [(True, 0.9), (True, 0.7), (False, 0.1)]]
    panel = Panel([Repeated(copies, early_stop=True)], make_policy("majority", ["seat"]))
    [d] = judge_all(panel, [c])
    assert d.accepted is True and [x.calls.get(c.id, 0) for x in copies] == [1, 1, 0]
    (v_,) = d.verdicts
    assert v_.teacher == "seat" and v_.score == pytest.approx(0.8) and v_.rationale.startswith("2 of 2")
    copies = [FakeTeacher("seat", 0, {c.id: o}) for o in [(True, 0.9), (False, 0.2), None, (False, 0.0)]]
    panel = Panel([Repeated(copies, early_stop=False)], make_policy("mean_score", ["seat"], threshold=0.5))
    [d] = judge_all(panel, [c])
    assert d.accepted is False and all(x.calls == {c.id: 1} for x in copies)
    assert d.verdicts[0].score == pytest.approx(1.1 / 3) and "1 failed" in d.verdicts[0].rationale


def test_auto_weights_are_refit_from_the_verdicts_and_learn_who_to_trust() -> None:
    from tgrs_agents.curation.reliability import prior_reliability

    rng = random.Random(7)
    cands = [cand(i) for i in range(800)]
    truth = {c.id: rng.random() < 0.5 for c in cands}
    flip = {"good": 0.03, "mid": 0.2, "bad": 0.35}
    scripts = {t: {c.id: (truth[c.id] != (rng.random() < p), 0.5) for c in cands} for t, p in flip.items()}
    fakes = [make_teacher(t, i, True, scripts[t]) for i, t in enumerate(flip)]
    policy = make_policy("weighted_mean", list(flip), threshold=0.5, reliability=prior_reliability(flip))
    panel = Panel(fakes, policy, auto=True, audit=0.1)
    decisions = judge_all(panel, cands)
    assert panel.jury.fits >= 10 and panel.policy is not policy
    w = panel.policy.reliability.weights()
    assert w["good"] > w["mid"] > w["bad"]
    audited = [d for d in decisions if panel.audited(cand(int(d.candidate_id[1:])))]
    assert 50 < len(audited) < 110 and all(d.saved == () and d.decided_by is None for d in audited)
    late = decisions[400:]  # once learned, the good judge alone decides most candidates
    assert sum(d.saved == ("mid", "bad") for d in late) > 180
    assert sum(d.accepted == truth[d.candidate_id] for d in late) >= 372  # a majority: ~367 (91.8%)
    early = decisions[:32]  # before the first fit: equal weights, a majority vote
    assert all(d.saved != ("mid", "bad") for d in early)
    rep = panel.jury_report()
    assert rep["weights_source"].startswith("auto: refit") and rep["reliability"]["items"] == 800


def test_the_jury_report_reads_earlier_sessions_from_the_verdict_journal(tmp_path) -> None:
    import json as json_

    journal = tmp_path / "verdicts.jsonl"
    journal.write_text("".join(json_.dumps({"id": f"old{i}", "teacher": t, "passed": i % 2 == 0, "error": None})
                               + "\n" for i in range(10) for t in ("a", "b")) + '{"id": "cut')
    c = cand()
    panel = Panel([make_teacher("a", 0, True, {c.id: (True, 1.0)}), make_teacher("b", 1, True, {c.id: (True, 1.0)})],
                  make_policy("unanimous", ["a", "b"]))
    judge_all(panel, [c])
    rep = panel.jury_report(journal)
    assert rep["candidates"] == 11 and rep["reliability"]["items"] == 11  # a partial last line waits
    again = panel.jury_report(journal)
    assert again == rep
