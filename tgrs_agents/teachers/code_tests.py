"""``kind = "code_tests"``: run the record's tests against the code in the final answer.

The code is the last fenced block of the final assistant message that is tagged ``python``,
``py`` or ``python3``, or has no tag (so a trailing block of sample output tagged ``text`` is
skipped). It runs in the sandbox of :mod:`tgrs_agents.teachers.sandbox` as ``solution.py``,
imported as a module by the harness :mod:`tgrs_agents.teachers.sandbox_harness`, which then runs
the tests (plain asserts, a ``check(fn)`` call, ``unittest.TestCase`` classes) in a copy of its
namespace. The tests reach the harness through an unlinked in-memory file that it reads and
closes before the import: they are in no file the code can open.

The candidate passes only when the sandbox exits 0 before the timeout *and* the harness wrote
this call's random nonce to a pipe of its own, which it does after the last test and the check
that the code patched none of what the tests use. So an early exit of any kind fails
(``sys.exit(0)``, ``os._exit(0)``, ``atexit``), and so does a patched ``unittest`` or builtin. With
``strict_types = true`` the ``==`` and ``!=`` of the tests' assert statements (and unittest's
``assertEqual`` family) also require equal types (numbers aside), so an object whose ``__eq__``
always says yes fails; tests should check types themselves wherever it matters. The harness
docstring says what a determined, harness-aware candidate could still do.

A candidate with no code block fails. A record with no ``tests`` is an error: nothing can be
judged without them. Where the sandbox has no mount namespace (see
:func:`~tgrs_agents.teachers.sandbox.isolation_level`), each rationale says so: the code could
read the host's files. Stale sandbox dirs of killed runs are swept when the teacher is built.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import marshal
import os
import re
import secrets
import shutil
import signal
import sys
import textwrap
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..errors import TeacherError
from ..types import Candidate, Verdict
from .base import BuildContext, Teacher, TeacherConfig
from .sandbox import SandboxLimits, SandboxResult, isolation_level, memfd, run_python, sweep_stale

# An opening fence at the start of a line with an optional info string; the block ends at the
# next ``` (usually on a line of its own).
_FENCE = re.compile(r"^[ \t]*```[ \t]*([^\s`]*)[^\n]*\n(.*?)```", re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = frozenset({"", "python", "py", "python3"})
_TAIL = 400  # characters of stderr kept in a failing rationale
_HARNESS = (Path(__file__).with_name("sandbox_harness.py")).read_text(encoding="utf-8")
_NO_MNTNS = "; sandbox without a mount namespace here: the code could read the host's files"


class CodeTestsConfig(TeacherConfig):
    kind: Literal["code_tests"] = "code_tests"
    timeout_s: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=512, ge=16)
    max_processes: int = Field(default=32, ge=1)
    python: str | None = None  # the interpreter; default: the one running tgrs
    max_concurrency: int = Field(default=4, ge=1)  # each check is a process: keep it modest
    strict_types: bool = False  # assert a == b (and assertEqual) also require equal types
    OPERATIONAL: ClassVar[frozenset[str]] = TeacherConfig.OPERATIONAL | {"python"}


def last_code_block(text: str) -> str | None:
    """The last fenced Python (or untagged) code block of ``text``, dedented, or None."""
    blocks = [body for tag, body in _FENCE.findall(text) if tag.lower() in _PYTHON_TAGS]
    return textwrap.dedent(blocks[-1]) if blocks else None


class CodeTestsTeacher(Teacher):
    Config = CodeTestsConfig
    config: CodeTestsConfig

    def __init__(self, config: CodeTestsConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(config, ctx)
        python = config.python
        if python and "/" in python and not Path(python).is_absolute():
            python = str(self.ctx.base_dir / python)  # relative to the panel file
        elif python and "/" not in python:
            python = shutil.which(python) or python
        self._python = python
        self._limits = SandboxLimits(
            timeout_s=config.timeout_s, memory_mb=config.memory_mb, max_processes=config.max_processes
        )
        # what killed runs left behind; never a live run's (its uid still has processes)
        sweep_stale(older_than_s=config.timeout_s + 10.0)

    def memo_content(self, candidate: Candidate) -> tuple[str, ...] | None:
        """What the verdict depends on beyond the config, for the panel's memo
        (tgrs_agents.curation.memo): the interpreter and the sandbox layers in force, the code under
        test and the tests. None without code or tests (judged as usual: no sandbox either way)."""
        code = last_code_block(candidate.final_text)
        if code is None or not candidate.tests:
            return None
        return (self._python or sys.executable, str(self.isolation()), code, candidate.tests)

    def isolation(self) -> str | None:
        """The sandbox layers in force for this teacher's interpreter (None before its first run);
        without ``mntns`` the host's files were readable: the run summary says so."""
        return isolation_level(self._python)

    async def judge(self, candidate: Candidate) -> Verdict:
        code = last_code_block(candidate.final_text)
        if code is None:
            return self.verdict(False, rationale="no fenced code block in the final answer")
        tests = candidate.tests
        if tests is None or not tests.strip():
            raise TeacherError("record has no 'tests' to run", teacher=self.name)
        nonce = secrets.token_hex(16).encode()
        header = await asyncio.to_thread(_header, tests, code, strict=self.config.strict_types)  # may be long
        compiled = b""
        if (self._python or sys.executable) == sys.executable:  # the harness then skips `import ast`
            compiled = _compiled_tests(tests, header) or b""
            header += f" compiled={len(compiled)}"
        fds: list[int] = []
        report = b""
        try:
            tests_fd = memfd(header.encode() + b"\n" + compiled + tests.encode("utf-8"))
            fds.append(tests_fd)
            nonce_r, nonce_w = os.pipe()
            fds += nonce_r, nonce_w
            os.write(nonce_w, nonce)  # 32 bytes: the pipe holds them, then end-of-file
            os.close(fds.pop())
            report_r, report_w = os.pipe()
            fds += report_r, report_w
            result = await run_python(
                _HARNESS,
                limits=self._limits,
                python=self._python,
                files={"solution.py": code},
                args=[str(tests_fd), str(nonce_r), str(report_w)],
                pass_fds=(tests_fd, nonce_r, report_w),
            )
            os.set_blocking(report_r, False)  # every process of the sandbox is dead by now
            with contextlib.suppress(BlockingIOError):
                report = os.read(report_r, 4096)
        except OSError as e:
            raise TeacherError(f"could not start the sandbox: {e}", teacher=self.name) from e
        finally:
            for fd in fds:
                os.close(fd)
        passed = result.ok and report == nonce
        return self.verdict(passed, rationale=self._rationale(result, passed))

    def _rationale(self, result: SandboxResult, passed: bool) -> str:
        note = "" if "mntns" in result.isolation else _NO_MNTNS
        if passed:
            return "tests passed" + note
        if result.timed_out:
            return f"timed out after {self.config.timeout_s:g}s" + note
        rc = result.returncode
        what = f"exit code {rc}"
        if rc == 0:
            what += " before the tests finished (no completion report from the harness)"
        if rc is not None and rc < 0:
            with contextlib.suppress(ValueError):
                what += f" ({signal.Signals(-rc).name})"
        tail = (result.stderr.strip() or result.stdout.strip())[-_TAIL:]
        return (f"{what}: {tail}" if tail else what) + note


def _header(tests: str, code: str, *, strict: bool) -> str:
    """The harness's options. Parsing here, where ``ast`` is loaded already, spares each sandbox
    its import: ``rewrite`` only where the tests call ``unittest.main``, and the modules to import
    before the candidate (and so to snapshot): the tests' imports and the code's top-level ones."""
    preload = set(_test_imports(tests))
    with contextlib.suppress(SyntaxError, ValueError):  # the import shows a broken solution
        preload |= _imports(_top_level(ast.parse(code).body))
    rewrite = "unittest" in tests and "main" in tests
    names = ",".join(sorted(n for n in preload if re.fullmatch(r"[\w.]+", n)))
    return f"strict={int(strict)} rewrite={int(rewrite)} preload={names}"


@functools.lru_cache(maxsize=64)
def _compiled_tests(tests: str, header: str) -> bytes | None:
    """The tests compiled here exactly as the harness would (its own ``rewritten``), marshalled; None
    where compiling fails or warns (the sandbox then compiles them, and its stderr says why). The
    harness's ``import ast`` alone was a fifth of a strict candidate's time. Cached: a task's
    candidates share its tests (the header's preload part differs, its options do not)."""
    options = dict(item.partition("=")[::2] for item in header.split())
    strict, rewrite = options.get("strict") == "1", options.get("rewrite") == "1"
    source = tests.encode("utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if strict or rewrite:
                code = _harness()["rewritten"](source, strict)
            else:
                code = compile(source, "tests.py", "exec")
        except (SyntaxError, ValueError):
            return None
    return None if caught else marshal.dumps(code)


@functools.cache
def _harness() -> dict[str, Any]:
    """The harness's functions, for :func:`_compiled_tests` (its ``main`` runs only as ``__main__``)."""
    ns: dict[str, Any] = {"__name__": "tgrs_sandbox_harness"}
    exec(compile(_HARNESS, "sandbox_harness.py", "exec"), ns)
    return ns


@functools.lru_cache(maxsize=256)
def _test_imports(tests: str) -> frozenset[str]:
    """Cached: the candidates of one task share its tests."""
    try:
        return frozenset(_imports(ast.walk(ast.parse(tests))))
    except (SyntaxError, ValueError):  # the harness reports broken tests
        return frozenset()


def _imports(nodes: Iterable[ast.AST]) -> set[str]:
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out.add(node.module)
    return out


def _top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements run at import time (inside top-level if and try too, not in functions)."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If | ast.Try):
            for part in (stmt.body, stmt.orelse, *((stmt.finalbody, *(h.body for h in stmt.handlers))
                                                   if isinstance(stmt, ast.Try) else ())):
                yield from _top_level(part)
