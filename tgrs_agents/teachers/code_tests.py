"""``kind = "code_tests"``: run the record's tests against the code in the final answer.

The code is the last fenced block of the final assistant message that is tagged ``python``,
``py`` or ``python3``, or has no tag (so a trailing block of sample output tagged ``text`` is
skipped). The teacher runs ``code + "\\n\\n" + tests`` as one script in the sandbox of
:mod:`tgrs_agents.teachers.sandbox`. The candidate passes when the script exits 0 before the
timeout. A candidate with no code block fails. A record with no ``tests`` is an error: nothing can
be judged without them.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import textwrap
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from ..errors import TeacherError
from ..types import Candidate, Verdict
from .base import BuildContext, Teacher, TeacherConfig
from .sandbox import SandboxLimits, SandboxResult, run_python

# An opening fence at the start of a line with an optional info string; the block ends at the
# next ``` (usually on a line of its own).
_FENCE = re.compile(r"^[ \t]*```[ \t]*([^\s`]*)[^\n]*\n(.*?)```", re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = frozenset({"", "python", "py", "python3"})
_TAIL = 400  # characters of stderr kept in a failing rationale


class CodeTestsConfig(TeacherConfig):
    kind: Literal["code_tests"] = "code_tests"
    timeout_s: float = Field(default=10.0, gt=0)
    memory_mb: int = Field(default=512, ge=16)
    max_processes: int = Field(default=32, ge=1)
    python: str | None = None  # the interpreter; default: the one running tgrs
    max_concurrency: int = Field(default=4, ge=1)  # each check is a process: keep it modest
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

    async def judge(self, candidate: Candidate) -> Verdict:
        code = last_code_block(candidate.final_text)
        if code is None:
            return self.verdict(False, rationale="no fenced code block in the final answer")
        tests = candidate.tests
        if tests is None or not tests.strip():
            raise TeacherError("record has no 'tests' to run", teacher=self.name)
        try:
            result = await run_python(code + "\n\n" + tests, limits=self._limits, python=self._python)
        except OSError as e:
            raise TeacherError(f"could not start the sandbox: {e}", teacher=self.name) from e
        return self.verdict(result.ok, rationale=self._rationale(result))

    def _rationale(self, result: SandboxResult) -> str:
        if result.ok:
            return "tests passed"
        if result.timed_out:
            return f"timed out after {self.config.timeout_s:g}s"
        rc = result.returncode
        what = f"exit code {rc}"
        if rc is not None and rc < 0:
            with contextlib.suppress(ValueError):
                what += f" ({signal.Signals(-rc).name})"
        tail = (result.stderr.strip() or result.stdout.strip())[-_TAIL:]
        return f"{what}: {tail}" if tail else what
