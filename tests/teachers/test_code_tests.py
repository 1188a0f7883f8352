"""``kind = "code_tests"``: the record's tests run against the last code block of the answer."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.errors import TeacherError
from tgrs_agents.teachers import sandbox, teacher_class
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


# --- a verifier that is hard to game and cannot read around (issue 10) ---------------------------

def mount_namespaces_work() -> bool:
    """Asked of the host, not of the sandbox, so a sandbox that fails to use them fails the tests."""
    argv = ["unshare", "--mount", "true"]
    if os.geteuid() != 0:
        argv[1:1] = ["--user", "--map-root-user"]
    return shutil.which("unshare") is not None and subprocess.run(argv, capture_output=True).returncode == 0


needs_mntns = pytest.mark.skipif(not mount_namespaces_work(), reason="mount namespaces are not available here")
DATA = Path("/work/shared/data/tasks")


@pytest.mark.parametrize(
    "exit_early",
    [
        "import sys\nsys.exit(0)\n",
        "raise SystemExit\n",
        "import os\nos._exit(0)\n",
        "import atexit, os\natexit.register(os._exit, 0)\n",  # after the failing assert
        "import os, threading\nthreading.Timer(0.2, os._exit, (0,)).start()\nimport time\ntime.sleep(1)\n",
        "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n",
    ],
    ids=["sys.exit", "SystemExit", "os._exit", "atexit", "thread", "SIGTERM"],
)
def test_a_wrong_solution_that_exits_early_fails(exit_early: str) -> None:
    v = judge(fence(BAD + exit_early))
    assert not v.passed, v.rationale
    assert v.rationale != "tests passed"


@pytest.mark.parametrize("where", ["in the function", "in a test helper"])
def test_an_exit_during_the_tests_fails(where: str) -> None:
    code = "import sys\ndef add(a, b):\n    sys.exit(0)\n"
    helper = "def check(f):\n    assert f(2, 2) == 4\n    add(0, 0)\ncheck(add)\n"
    tests = TESTS if where == "in the function" else helper
    v = judge(fence(code), tests)
    assert not v.passed and "SystemExit(0) during the tests" in v.rationale


def test_an_exit_with_status_0_and_no_report_is_named() -> None:
    v = judge(fence(BAD + "import os\nos._exit(0)\n"))
    assert v.rationale.startswith("exit code 0 before the tests finished (no completion report")


ALWAYS_EQUAL = (
    "class Yes:\n    def __eq__(self, other):\n        return True\n"
    "    def __ne__(self, other):\n        return False\n"
)


@pytest.mark.parametrize(
    "returns",
    ["Yes()", "[Yes()]", "(Yes(), Yes())", "{'k': Yes()}", "Int(0)"],
)
def test_strict_types_rejects_an_object_that_equals_everything(returns: str) -> None:
    code = ALWAYS_EQUAL + "class Int(int):\n    __eq__ = Yes.__eq__\n    __hash__ = int.__hash__\n"
    code += f"def add(a, b):\n    return {returns}\n"
    tests = {
        "Yes()": TESTS,
        "[Yes()]": "assert add(2, 2) == [4]\n",
        "(Yes(), Yes())": "assert add(1, 1) == (2, 2)\n",
        "{'k': Yes()}": "assert add(1, 1) == {'k': 2}\n",
        "Int(0)": TESTS,
    }[returns]
    assert judge(fence(code), tests).passed  # Python's own == is fooled: hence the option
    v = judge(fence(code), tests, strict_types=True)
    assert not v.passed and "AssertionError" in v.rationale


def test_strict_types_keeps_correct_answers_passing() -> None:
    code = "def f(x):\n    return x\n"
    tests = (
        "assert f(4) == 4.0 and f(True) == 1\nassert f([1, (2, 'a')]) == [1, (2, 'a')]\n"
        "assert f({'a': [1], (1, 2): {3}}) == {(1, 2): {3}, 'a': [1]}\nassert f({1, 2.5}) == {2.5, 1}\n"
        "assert f([1]) != (1,)\nassert f(None) == None\nassert f(float('nan')) != float('nan')\n"
        "import unittest\nclass T(unittest.TestCase):\n    def test_eq(self):\n"
        "        self.assertEqual(f([1, 2]), [1, 2])\n        self.assertNotEqual(f([1]), (1,))\n"
    )
    v = judge(fence(code), tests, strict_types=True)
    assert v.passed, v.rationale
    wrong_type = judge(fence(code), "assert f((1, 2)) == [1, 2]\n", strict_types=True)
    assert not wrong_type.passed  # Python says not equal too: unchanged


def test_strict_types_also_wraps_unittest_assert_equal() -> None:
    code = ALWAYS_EQUAL + "def add(a, b):\n    return Yes()\n"
    tests = "import unittest\nclass T(unittest.TestCase):\n    def test_add(self):\n"
    tests += "        self.assertEqual(add(2, 2), 4)\n"
    assert judge(fence(code), tests).passed
    v = judge(fence(code), tests, strict_types=True)
    assert not v.passed and "strict_types: Yes, int" in v.rationale


UNITTESTS = (
    "import unittest\nclass TestAdd(unittest.TestCase):\n    @classmethod\n    def setUpClass(cls):\n"
    "        cls.four = 4\n    def test_add(self):\n        self.assertEqual(add(2, 2), self.four)\n"
    "    def test_neg(self):\n        self.assertEqual(add(-1, 1), 0)\n"
)


@pytest.mark.parametrize("main", ["", "unittest.main()\n", "if __name__ == '__main__':\n    unittest.main()\n"])
def test_unittest_classes_run_with_or_without_unittest_main(main: str) -> None:
    assert judge(fence(GOOD), UNITTESTS + main).passed
    v = judge(fence(BAD), UNITTESTS + main)
    assert not v.passed and "FAIL: " in v.rationale and "test_add" in v.rationale


@pytest.mark.parametrize(
    "patch",
    [
        "import unittest\nunittest.TestCase.assertEqual = lambda *a, **k: None\n",
        "import unittest\nunittest.TestCase.assertEqual.__code__ = (lambda *a, **k: None).__code__\n",
        "import unittest\nunittest.TestResult.wasSuccessful = lambda self: True\n"
        "unittest.TestCase.assertEqual = lambda *a, **k: None\n",
        "import unittest\nunittest.TestCase.assertTrue = lambda *a, **k: None\n"
        "unittest.TestCase.assertEqual = lambda *a, **k: None\n",
    ],
    ids=["method", "code", "result", "two-methods"],
)
def test_a_patched_unittest_assert_fails(patch: str) -> None:
    v = judge(fence(BAD + patch), UNITTESTS + "unittest.main()\n")
    assert not v.passed and "the code changed what the tests rely on: unittest.case.TestCase.assert" in v.rationale


ISCLOSE = "import math\nassert math.isclose(area(1), 3.14159, rel_tol=1e-3)\n"
ABS = "assert abs(area(2) - 12.566) < 0.01\n"


@pytest.mark.parametrize(
    ("cheat", "tests", "named"),
    [
        ("import math\nmath.isclose = lambda *a, **k: True\n", ISCLOSE, "math.isclose"),
        ("import builtins\nbuiltins.abs = lambda x: 0\n", ABS, "builtins.abs"),
        ("import builtins\ndef area(r):\n    builtins.abs = lambda x: 0\n    return 0\n", ABS, "builtins.abs"),
    ],
    ids=["math.isclose", "builtins.abs", "builtins.abs-during-tests"],
)
def test_patched_builtins_and_library_functions_fail(cheat: str, tests: str, named: str) -> None:
    assert judge(fence("import math\ndef area(r):\n    return math.pi * r * r\n"), tests).passed
    v = judge(fence("def area(r):\n    return 0\n" + cheat), tests)
    assert not v.passed
    assert f"changed what the tests rely on: {named}" in v.rationale or "AssertionError" in v.rationale


def test_a_skip_raised_from_the_code_fails() -> None:
    code = "import unittest\ndef add(a, b):\n    raise unittest.SkipTest('no')\n"
    v = judge(fence(code), UNITTESTS)
    assert not v.passed and "SKIPPED from inside the test" in v.rationale
    skipped = UNITTESTS + "    @unittest.skip('the record says so')\n    def test_later(self):\n        self.fail()\n"
    assert judge(fence(GOOD), skipped).passed  # a skip the tests ask for is theirs to ask


# The candidate looks for its tests: every regular file it can list in the working dir, the
# temp dirs and its open file descriptors. The marker is built at run time so that its own
# source does not contain it.
SNOOP = """import os, stat
MARKER = "tgrs-" + "marker-" + "{tok}"
def _snoop():
    found = []
    for d in (".", "/tmp", "/var/tmp", "/dev/shm", os.environ.get("TMPDIR", "."), "/proc/self/fd"):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            p = os.path.join(d, n)
            try:
                if not stat.S_ISREG(os.stat(p).st_mode):
                    continue
                with open(p, "rb") as f:
                    if MARKER.encode() in f.read(1 << 22):
                        found.append(p)
            except OSError:
                pass
    return found
LEAKS = _snoop()
def add(a, b):
    assert not LEAKS, "the tests are readable at %s" % LEAKS
    return a + b
"""


def test_the_code_cannot_read_its_tests() -> None:
    tok = uuid.uuid4().hex
    tests = f"# tgrs-marker-{tok}\n" + TESTS
    v = judge(fence(SNOOP.format(tok=tok)), tests)
    assert v.passed, v.rationale
    # the snooping works: it finds the marker where it can read it (its own file)
    control = judge(fence(SNOOP.format(tok=tok) + f"# tgrs-marker-{tok}\n"), tests)
    assert not control.passed and "the tests are readable at" in control.rationale


@needs_mntns
def test_the_code_sees_no_input_file_run_directory_or_project(tmp_path: Path) -> None:
    input_file = tmp_path / "input.jsonl"
    input_file.write_text(json.dumps({"tests": TESTS, "reference": "def add(a, b): return a + b"}) + "\n")
    output = tmp_path / "runs" / "other-run" / "accepted.jsonl"
    output.parent.mkdir(parents=True)
    output.write_text("{}\n")
    paths = [str(input_file), str(output), str(Path(__file__).resolve()), str(DATA / "humaneval.first40.jsonl")]
    code = f"import os\nSEEN = [p for p in {paths!r} if os.path.exists(p)]\n"
    code += "def add(a, b):\n    assert not SEEN, SEEN\n    return a + b\n"
    v = judge(fence(code))
    assert v.passed, v.rationale
    assert "mount namespace" not in v.rationale


@needs_mntns
def test_files_the_code_leaves_in_temp_dirs_are_gone_after_the_run() -> None:
    tok = uuid.uuid4().hex[:12]
    dirs = [d for d in ("/tmp", "/var/tmp", "/dev/shm") if os.path.isdir(d)]
    code = "import os\n" + "".join(f"open({f'{d}/tgrs-leak-{tok}'!r}, 'w').write('x')\n" for d in dirs) + GOOD
    v = judge(fence(code))
    assert v.passed, v.rationale
    assert [d for d in dirs if os.path.exists(f"{d}/tgrs-leak-{tok}")] == []


@pytest.fixture
def no_mount_namespace(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A host where mount namespaces fail: the boot's mount step raises, the probe moves on."""
    broken = sandbox._BOOT.replace("def build_root(spec):\n", "def build_root(spec):\n    raise OSError('EPERM')\n", 1)
    monkeypatch.setattr(sandbox, "_BOOT", broken)
    monkeypatch.delitem(sandbox._chosen, sys.executable, raising=False)
    sandbox._boot_arg.cache_clear()
    yield
    sandbox._boot_arg.cache_clear()


@needs_mntns
def test_without_a_mount_namespace_every_rationale_says_so(no_mount_namespace: None) -> None:
    passed, failed = judge(fence(GOOD)), judge(fence(BAD))
    assert passed.passed and not failed.passed
    for v in (passed, failed):
        assert "sandbox without a mount namespace here" in v.rationale
    assert "mntns" not in (sandbox.isolation_level() or "mntns")


@pytest.mark.skipif(os.geteuid() != 0, reason="root only (chown to the sandbox's uids)")
def test_building_the_teacher_sweeps_dirs_killed_runs_left() -> None:
    uid = sandbox._UID_RANGE.start + 4343
    stale = Path(tempfile.gettempdir()) / f"tgrs-sandbox-{uuid.uuid4().hex[:8]}"
    stale.mkdir()
    (stale / "main.py").write_text("x")
    os.chown(stale, uid, uid)
    os.utime(stale, (time.time() - 3600,) * 2)
    CodeTestsTeacher(CodeTestsConfig(name="tests", timeout_s=5))
    assert not stale.exists()


def real_records() -> list[tuple[str, str, str, str]]:
    """(id, reference solution, wrong solution, tests) from the HumanEval and MBPP samples."""
    files = [DATA / "humaneval.first40.jsonl", DATA / "mbpp.first12.jsonl"]
    if not all(f.exists() for f in files):
        pytest.skip(f"task samples not found in {DATA}")
    out = []
    for r in map(json.loads, files[0].read_text().splitlines()):
        tests = r["test"] + f"\ncheck({r['entry_point']})\n"
        out.append((r["task_id"], r["prompt"] + r["canonical_solution"], r["prompt"] + "    return None\n", tests))
    for r in map(json.loads, files[1].read_text().splitlines()):
        tests = "\n".join([r["test_setup_code"], *r["test_list"], *r["challenge_test_list"]])
        out.append((f"MBPP/{r['task_id']}", r["code"].replace("\r\n", "\n"), "pass\n", tests))
    return out


@pytest.mark.slow
def test_real_tasks_references_pass_and_wrong_answers_fail() -> None:
    records = real_records()
    plain = CodeTestsTeacher(CodeTestsConfig(name="tests"))
    strict = CodeTestsTeacher(CodeTestsConfig(name="strict", strict_types=True))

    async def main() -> list[tuple[str, bool, bool, bool]]:
        gate = asyncio.Semaphore(4)

        async def one(tid: str, good: str, wrong: str, tests: str) -> tuple[str, bool, bool, bool]:
            async with gate:
                g = await plain.judge(candidate(fence(good), tests))
                s = await strict.judge(candidate(fence(good), tests))
                w = await plain.judge(candidate(fence(wrong), tests))
                return tid, g.passed, s.passed, w.passed

        return await asyncio.gather(*(one(*r) for r in records))

    results = asyncio.run(main())
    assert len(results) == 52
    assert [r for r in results if r[1:] != (True, True, False)] == []


def test_the_curate_summary_names_the_sandbox_layers_in_force(tmp_path: Path) -> None:
    from tgrs_agents import curate, load_panel

    panel_file = tmp_path / "panel.toml"
    panel_file.write_text('policy = "unanimous"\n[[teacher]]\nname = "tests"\nkind = "code_tests"\n')
    rows = [candidate(fence(GOOD)).model_dump(mode="json") | {"id": "good"},
            candidate(fence(BAD)).model_dump(mode="json") | {"id": "bad"}]
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = asyncio.run(curate(data, load_panel(panel_file), tmp_path / "run"))
    assert summary["accepted"] == 1 and summary["rejected"] == 1
    layers = summary["sandbox"]["tests"]
    assert layers == sandbox.isolation_level() and "pidns" in layers.split("+")
