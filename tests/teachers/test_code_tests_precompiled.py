"""The parent compiles (and for ``strict_types`` rewrites) the tests for a sandbox of its own
interpreter, so the harness never imports ``ast``: a fifth of a strict candidate's time."""

from __future__ import annotations

import asyncio

from tgrs_agents.teachers.code_tests import CodeTestsConfig, CodeTestsTeacher, _compiled_tests
from tgrs_agents.types import Candidate, Message

PROBE = 'import sys\nHAD_AST = "ast" in sys.modules\n\ndef add(a, b):\n    return a + b\n'
TESTS = "assert add(2, 2) == 4\nassert not HAD_AST, 'the harness imported ast'\n"


def judge(code: str, tests: str, **config: object) -> object:
    cand = Candidate(id="c", tests=tests, messages=[
        Message(role="user", content="Write add."), Message(role="assistant", content=f"```python\n{code}```")])
    return asyncio.run(CodeTestsTeacher(CodeTestsConfig(name="tests", **config)).judge(cand))  # type: ignore[arg-type]


def test_strict_tests_reach_the_sandbox_compiled_and_still_strict() -> None:
    v = judge(PROBE, TESTS, strict_types=True)
    assert v.passed, v.rationale  # type: ignore[attr-defined]
    lying = "class Yes:\n    def __eq__(self, other):\n        return True\n\ndef add(a, b):\n    return Yes()\n"
    v = judge(lying, "assert add(2, 2) == 4\n", strict_types=True)
    assert not v.passed and "AssertionError" in v.rationale  # type: ignore[attr-defined]


def test_tests_that_do_not_compile_are_left_to_the_harness_to_report() -> None:
    assert _compiled_tests("assert add(2, 2) ==\n", "strict=1 rewrite=0 preload=") is None
    v = judge(PROBE, "assert add(2, 2) ==\n", strict_types=True)
    assert not v.passed and "the record's tests do not compile" in v.rationale  # type: ignore[attr-defined]
