"""``kind = "code_tests"``: the record's tests run against the last code block of the answer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tgrs_agents.errors import TeacherError
from tgrs_agents.teachers import teacher_class
from tgrs_agents.teachers.code_tests import CodeTestsConfig, CodeTestsTeacher, last_code_block
from tgrs_agents.teachers.sandbox import SandboxLimits, run_python
from tgrs_agents.types import Candidate, Message, Verdict

TESTS = 'assert add(2, 2) == 4, "add(2, 2) should be 4"\nassert add(-1, 1) == 0\n'
GOOD = "def add(a, b):\n    return a + b\n"
BAD = "def add(a, b):\n    return a - b\n"


def fence(code: str, tag: str = "python") -> str:
    return f"```{tag}\n{code}```"


def candidate(answer: str, tests: str | None = TESTS) -> Candidate:
    return Candidate(
        id="c1",
        messages=[Message(role="user", content="Write add."), Message(role="assistant", content=answer)],
        tests=tests,
    )


def judge(answer: str, tests: str | None = TESTS, **config: Any) -> Verdict:
    teacher = CodeTestsTeacher(CodeTestsConfig(name="tests", **config))
    return asyncio.run(teacher.judge(candidate(answer, tests)))


def test_a_correct_solution_passes() -> None:
    v = judge(f"Here it is:\n\n{fence(GOOD)}\n\nDone.")
    assert v.passed and v.score == 1.0 and v.rationale == "tests passed" and v.teacher == "tests"


def test_a_wrong_solution_fails_with_the_assertion_message() -> None:
    v = judge(fence(BAD))
    assert not v.passed and v.score == 0.0
    assert v.rationale.startswith("exit code 1: ")
    assert "AssertionError: add(2, 2) should be 4" in v.rationale
    assert len(v.rationale) < 450


def test_no_code_block_fails() -> None:
    v = judge("def add(a, b): return a + b   (no fence)")
    assert not v.passed and v.rationale == "no fenced code block in the final answer"


@pytest.mark.parametrize("tests", [None, "", "  \n"])
def test_a_record_without_tests_is_an_error(tests: str | None) -> None:
    with pytest.raises(TeacherError, match="no 'tests'") as e:
        judge(fence(GOOD), tests)
    assert e.value.teacher == "tests"


def test_the_last_of_several_code_blocks_is_used() -> None:
    assert judge(f"First try:\n{fence(BAD)}\nFixed:\n{fence(GOOD)}").passed
    assert not judge(f"First try:\n{fence(GOOD)}\nOops:\n{fence(BAD)}").passed
    # a trailing block of sample output is not code
    assert judge(f"{fence(GOOD)}\nOutput:\n{fence('4' + chr(10), 'text')}").passed


def test_last_code_block_forms() -> None:
    assert last_code_block("```\nx = 1\n```") == "x = 1\n"
    assert last_code_block("a\n```py\nx = 1\n```\nb\n```python3 title\ny = 2\n```") == "y = 2\n"
    assert last_code_block("1. step\n   ```python\n   x = 1\n   ```\n") == "x = 1\n"
    assert last_code_block("inline ```x``` only") is None
    assert last_code_block("```bash\nls\n```") is None
    assert last_code_block("") is None


def test_a_hanging_solution_times_out() -> None:
    v = judge(fence("def add(a, b):\n    while True:\n        pass\n"), timeout_s=1)
    assert not v.passed and v.rationale == "timed out after 1s"


def test_a_crash_reports_the_signal() -> None:
    v = judge(fence("import ctypes\nctypes.string_at(0)\n"))
    assert not v.passed and v.rationale.startswith("exit code -11 (SIGSEGV)")


def test_config_defaults_registry_and_identity() -> None:
    assert teacher_class("code_tests") is CodeTestsTeacher
    cfg = CodeTestsConfig(name="tests", python="/usr/bin/python3")
    assert cfg.max_concurrency == 4 and cfg.timeout_s == 10.0 and cfg.memory_mb == 512
    ident = cfg.identity()
    assert "python" not in ident and "max_concurrency" not in ident
    assert ident["timeout_s"] == 10.0 and ident["kind"] == "code_tests"
    with pytest.raises(ValueError):
        CodeTestsConfig(name="tests", timeout_s=0)
    with pytest.raises(ValueError):
        CodeTestsConfig(name="tests", memory_mb=8)


def test_a_fork_bomb_next_door_does_not_fail_a_good_solution() -> None:
    """Each run has a uid of its own, so RLIMIT_NPROC is not shared between concurrent runs."""
    iso = asyncio.run(run_python("pass", limits=SandboxLimits())).isolation
    if "uid" not in iso or "uid65534" in iso:
        pytest.skip(f"no per-run uid here ({iso})")
    bomb = CodeTestsTeacher(CodeTestsConfig(name="bomb", timeout_s=2, max_processes=8))
    good = CodeTestsTeacher(CodeTestsConfig(name="good", max_processes=8))
    forking = GOOD + (  # needs a few processes of its own
        "import os\nkids = []\nfor _ in range(3):\n    pid = os.fork()\n    if pid == 0:\n"
        "        os._exit(0)\n    kids.append(pid)\n"
        "assert all(os.waitpid(pid, 0)[1] == 0 for pid in kids)\n"
    )
    bomb_code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"

    async def main() -> list[Verdict]:
        bombing = asyncio.ensure_future(bomb.judge(candidate(fence(bomb_code))))
        await asyncio.sleep(0.5)
        goods = [good.judge(candidate(fence(forking))) for _ in range(3)]
        return [*(await asyncio.gather(*goods)), await bombing]

    *goods, bombed = asyncio.run(main())
    assert all(v.passed for v in goods), [v.rationale for v in goods]
    assert not bombed.passed and bombed.rationale == "timed out after 2s"
