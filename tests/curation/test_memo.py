"""The verdict memo: a deterministic verifier never judges the same content twice, and every
decision stays what judging each candidate would have made it."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from tgrs_agents.curation.memo import VerdictMemo, memo_key, teacher_identity
from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.policy import make_policy
from tgrs_agents.teachers import code_tests
from tgrs_agents.teachers.code_tests import CodeTestsConfig, CodeTestsTeacher
from tgrs_agents.teachers.final_answer import FinalAnswerConfig, FinalAnswerTeacher
from tgrs_agents.teachers.python_fn import PythonConfig, PythonTeacher
from tgrs_agents.teachers.regex import RegexConfig, RegexTeacher
from tgrs_agents.types import Candidate, Message, Verdict

TESTS = "assert add(2, 2) == 4\nassert add(-1, 1) == 0\n"
OTHER_TESTS = "assert add(2, 3) == 5\n"
GOOD = "def add(a, b):\n    return a + b\n"
BAD = "def add(a, b):\n    return a - b\n"
ODD = "def add(a, b):\n    return 4 if a == 2 else a + b\n"  # passes TESTS, fails OTHER_TESTS
_ids = itertools.count()


def cand(code: str | None, tests: str = TESTS, prose: str = "Here:", reference: Any = None) -> Candidate:
    answer = prose if code is None else f"{prose}\n```python\n{code}```"
    return Candidate(id=f"c{next(_ids)}", task_id="t", reference=reference, tests=tests,
                     messages=[Message(role="user", content="Write add."),
                               Message(role="assistant", content=answer)])


def batch() -> list[Candidate]:
    """Repeats of a few contents (other prose around the same code too), and the same code under
    other tests: what a small student's 8 samples per task look like."""
    out = []
    for code, tests in [(GOOD, TESTS), (BAD, TESTS), (ODD, TESTS), (ODD, OTHER_TESTS), (GOOD, OTHER_TESTS)]:
        out += [cand(code, tests), cand(code, tests, prose="Sure."), cand(code, tests)]
    return [*out, cand(None), cand("def add(a, b) return", TESTS)]


class Counting:
    """Counts the sandbox processes code_tests starts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        real = code_tests.run_python

        async def run(*a: Any, **kw: Any) -> Any:
            self.n += 1
            return await real(*a, **kw)

        monkeypatch.setattr(code_tests, "run_python", run)


def code_panel(memo: VerdictMemo) -> Panel:
    teacher = CodeTestsTeacher(CodeTestsConfig(name="tests", strict_types=True, max_concurrency=4))
    return Panel([teacher], make_policy("unanimous", ["tests"]), memo=memo)


def decide(panel: Panel, cands: list[Candidate], concurrent: bool) -> list[tuple[Any, ...]]:
    async def go() -> list[Any]:
        try:
            if concurrent:
                return list(await asyncio.gather(*(panel.judge(c) for c in cands)))
            return [await panel.judge(c) for c in cands]
        finally:
            await panel.aclose()

    out = []
    for d, _ in asyncio.run(go()):
        out.append((d.candidate_id, d.accepted, d.score, d.reason, d.decided_by,
                    tuple((v.teacher, v.passed, v.score, v.error is None) for v in d.verdicts)))
    return out


@pytest.mark.parametrize("concurrent", [False, True])
def test_the_memo_changes_no_decision_and_starts_fewer_sandboxes(monkeypatch: pytest.MonkeyPatch,
                                                                  concurrent: bool) -> None:
    cands = batch()
    plain = Counting(monkeypatch)
    every = decide(code_panel(VerdictMemo(max_entries=0)), cands, concurrent)  # keeps nothing: no memo
    assert plain.n == 16  # every candidate with code reached the sandbox
    memo = VerdictMemo()
    counted = Counting(monkeypatch)
    panel = code_panel(memo)
    once = decide(panel, cands, concurrent)
    assert once == every
    assert [d[1] for d in once[:15]] == [True] * 3 + [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3
    assert counted.n == 6  # five distinct (code, tests) pairs, and the code that does not parse
    assert panel.memo_hits == {"tests": 10}
    assert panel.stats["tests"].calls == 17  # a hit counts as a call, as if judged again
    again = code_panel(memo)  # another panel of the process (the next round): no sandbox at all
    assert decide(again, cands, concurrent) == every and counted.n == 6 and again.memo_hits == {"tests": 16}


def test_the_key_is_the_content_the_teacher_reads() -> None:
    t = CodeTestsTeacher(CodeTestsConfig(name="tests"))
    ident = teacher_identity(t)
    assert ident is not None

    def key(c: Candidate, teacher: Any = t) -> bytes | None:
        i = teacher_identity(teacher)
        assert i is not None
        return memo_key(i, teacher, c)

    assert key(cand(GOOD)) == key(cand(GOOD, prose="Another intro."))  # the code and the tests only
    assert key(cand(GOOD)) != key(cand(BAD))
    assert key(cand(GOOD)) != key(cand(GOOD, OTHER_TESTS))
    assert key(cand(None)) is None  # judged as usual (no sandbox either way)
    strict = CodeTestsTeacher(CodeTestsConfig(name="tests", strict_types=True))
    renamed = CodeTestsTeacher(CodeTestsConfig(name="tests2"))
    slower = CodeTestsTeacher(CodeTestsConfig(name="tests", max_concurrency=1))  # operational: same verdicts
    assert key(cand(GOOD), strict) != key(cand(GOOD)) != key(cand(GOOD), renamed)
    assert key(cand(GOOD), slower) == key(cand(GOOD))

    fa = FinalAnswerTeacher(FinalAnswerConfig(name="fa"))
    assert key(cand(None, prose="x\nAnswer: 4", reference=4), fa) == key(cand(None, prose="y\nAnswer: 4",
                                                                              reference=4), fa)
    assert key(cand(None, prose="Answer: 4", reference=4), fa) != key(cand(None, prose="Answer: 4",
                                                                           reference=5), fa)
    rx = RegexTeacher(RegexConfig(name="rx", pattern="add"))
    assert key(cand(GOOD), rx) != key(cand(BAD, prose="Other"), rx)


def test_a_python_teacher_is_memoized_only_when_its_panel_entry_says_deterministic() -> None:
    spec = "tgrs_agents.tasks.code:compiles"
    plain = PythonTeacher(PythonConfig(name="compiles", function=spec))
    det = PythonTeacher(PythonConfig(name="compiles", function=spec, deterministic=True))
    assert plain.config.identity() == det.config.identity()  # an operational field: no new fingerprint
    assert plain.memo_content(cand(GOOD)) is None
    a, b = cand(GOOD), cand(GOOD)
    assert a.id != b.id and det.memo_content(a) == det.memo_content(b) != det.memo_content(cand(BAD))


def test_a_teacher_that_declares_nothing_is_not_memoized() -> None:
    class Plain:
        name = "p"

    assert teacher_identity(Plain()) is None


def verdict(passed: bool = True, rationale: str = "", error: str | None = None) -> Verdict:
    return Verdict(teacher="t", passed=passed, score=float(passed), rationale=rationale, error=error)


def test_error_verdicts_are_not_kept() -> None:
    memo = VerdictMemo()
    runs = []

    async def run() -> Verdict:
        runs.append(1)
        return verdict(False, error="could not start the sandbox") if len(runs) == 1 else verdict()

    async def go() -> list[tuple[Verdict, bool]]:
        return [await memo.get_or_run(b"k", run) for _ in range(3)]

    got = asyncio.run(go())
    assert [hit for _, hit in got] == [False, False, True] and len(runs) == 2
    assert got[0][0].error is not None and got[2][0].passed


def test_the_same_content_in_flight_runs_once_and_a_cancelled_run_hands_over() -> None:
    memo = VerdictMemo()
    started: list[int] = []

    async def go() -> tuple[list[tuple[Verdict, bool]], int]:
        gate = asyncio.Event()

        async def slow() -> Verdict:
            started.append(1)
            await gate.wait()
            return verdict()

        first = asyncio.create_task(memo.get_or_run(b"k", slow))
        await asyncio.sleep(0)
        waiters = [asyncio.create_task(memo.get_or_run(b"k", slow)) for _ in range(3)]
        await asyncio.sleep(0)
        assert len(started) == 1  # the others wait for it
        first.cancel()  # its run never finishes: a waiter runs it instead
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        gate.set()
        got = list(await asyncio.gather(*waiters))
        return got, len(started)

    got, runs = asyncio.run(go())
    assert runs == 2 and sorted(hit for _, hit in got) == [False, True, True]


def test_the_memo_is_bounded_least_recently_used_first() -> None:
    memo = VerdictMemo(max_entries=3, max_bytes=10_000)

    async def put(key: bytes, rationale: str = "") -> bool:
        async def run() -> Verdict:
            return verdict(rationale=rationale)
        return (await memo.get_or_run(key, run))[1]

    async def go() -> None:
        for k in (b"a", b"b", b"c"):
            await put(k)
        assert await put(b"a")  # a hit: now the most recently used
        await put(b"d")  # evicts b
        assert len(memo) == 3 and await put(b"a") and await put(b"c") and not await put(b"b")
        await put(b"big", "x" * 9000)  # over the byte bound with the others: they go first
        assert memo.bytes <= 10_000 and memo.evictions >= 3

    asyncio.run(go())


def test_a_plain_sync_python_teacher_runs_in_line_and_a_memoised_threaded_or_async_one_does_not() -> None:
    """In line: no task, no semaphore (a sync function cannot suspend anyway); the memo only serves
    teachers that are not in line, so ``deterministic = true`` keeps it out of line."""
    spec = "tgrs_agents.tasks.code:compiles"
    assert PythonTeacher(PythonConfig(name="c", function=spec)).inline is True
    assert PythonTeacher(PythonConfig(name="c", function=spec, deterministic=True)).inline is False
    assert PythonTeacher(PythonConfig(name="c", function=spec, thread=True)).inline is False
    panel = Panel([PythonTeacher(PythonConfig(name="c", function=spec))], make_policy("unanimous", ["c"]))
    assert "c" not in panel._sems  # called directly
