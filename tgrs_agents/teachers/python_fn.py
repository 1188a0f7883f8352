"""``kind = "python"``: a user function judges the candidate.

``function = "package.module:name"`` or ``"path/to/file.py:name"`` (relative to the panel file).
The function takes the :class:`~tgrs_agents.types.Candidate` and returns a bool, a score in
[0, 1] (passed when ``score >= threshold``), a ``(passed_or_score, rationale)`` pair, or a
:class:`~tgrs_agents.types.Verdict`. It may be ``async``. A sync function runs on the event loop
unless ``thread = true`` (use that for anything slower than a millisecond). With ``deterministic =
true`` the function promises that its verdict depends only on the candidate's content (everything
but its ``id``): the panel then judges each distinct content once (tgrs_agents.curation.memo).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..errors import ConfigError, TeacherError
from ..types import Candidate, Verdict
from .base import BuildContext, Teacher, TeacherConfig


class PythonConfig(TeacherConfig):
    kind: Literal["python"] = "python"
    function: str = Field(pattern=r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$")
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    thread: bool = False
    deterministic: bool = False  # the same content always gets the same verdict: memoized
    OPERATIONAL: ClassVar[frozenset[str]] = TeacherConfig.OPERATIONAL | {"deterministic"}


def load_function(spec: str, base_dir: Path) -> Callable[..., Any]:
    """Import ``module:name`` or ``file.py:name`` (a file relative to ``base_dir``): the one loader of
    user code named in a config (python verifiers, tool factories). Each failure says what is wrong:
    ``ValueError`` (not MODULE:FUNCTION), ``FileNotFoundError``, ``ImportError`` (the module, or the
    file's own code failed: the cause chained), ``AttributeError`` (no such name), ``TypeError``
    (not callable)."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(f"{spec!r} is not MODULE:FUNCTION or FILE.py:FUNCTION")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser()
        path = path if path.is_absolute() else Path(base_dir) / path
        if not path.is_file():
            raise FileNotFoundError(f"file not found: {path}")
        mod_name = f"_tgrs_user_{abs(hash(str(path.resolve())))}"
        module = sys.modules.get(mod_name)
        if module is None:
            spec_ = importlib.util.spec_from_file_location(mod_name, path)
            if spec_ is None or spec_.loader is None:
                raise ImportError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec_)
            sys.modules[mod_name] = module
            try:
                spec_.loader.exec_module(module)
            except Exception as e:
                del sys.modules[mod_name]
                raise ImportError(f"importing {path} failed: {type(e).__name__}: {e}") from e
        where = str(path)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise ImportError(f"cannot import module {target!r}: {type(e).__name__}: {e}") from e
        where = f"module {target!r}"
    fn = getattr(module, attr, None)
    if fn is None:
        raise AttributeError(f"{where} has no {attr!r}")
    if not callable(fn):
        raise TypeError(f"{where}: {attr!r} is not callable")
    return fn  # type: ignore[no-any-return]


class PythonTeacher(Teacher):
    Config = PythonConfig
    config: PythonConfig

    def __init__(self, config: PythonConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(config, ctx)
        try:
            self._fn = load_function(config.function, self.ctx.base_dir)
        except Exception as e:  # noqa: BLE001 - any import failure is a config error here
            raise ConfigError(
                f"expected an importable function 'module:name' or 'file.py:name'; "
                f"{type(e).__name__}: {e}",
                file=self.ctx.source,
                field=f"teacher.{config.name}.function",
            ) from None
        self._async = inspect.iscoroutinefunction(self._fn)
        # a plain sync function never suspends: the panel calls it in line, with no task or semaphore
        # (a memoised one, ``deterministic = true``, keeps the memo, which only non-inline teachers use)
        self.inline = not (self._async or config.thread or config.deterministic)  # type: ignore[misc]

    def memo_content(self, candidate: Candidate) -> tuple[str] | None:
        """Everything but the id, where the panel file says ``deterministic = true``; else None."""
        if not self.config.deterministic:
            return None
        return (candidate.model_dump_json(exclude={"id"}),)

    async def judge(self, candidate: Candidate) -> Verdict:
        try:
            if self._async:
                out = await self._fn(candidate)
            elif self.config.thread:
                out = await asyncio.to_thread(self._fn, candidate)
            else:
                out = self._fn(candidate)
        except Exception as e:  # noqa: BLE001 - a user function's bug is this teacher's error
            raise TeacherError(
                f"{self.config.function} raised {type(e).__name__}: {e}", teacher=self.name
            ) from e
        return self._to_verdict(out)

    def _to_verdict(self, out: Any) -> Verdict:
        rationale = ""
        if isinstance(out, Verdict):
            return out.model_copy(update={"teacher": self.name})
        if isinstance(out, tuple) and len(out) == 2:
            out, rationale = out[0], str(out[1])
        if isinstance(out, bool):
            return self.verdict(out, rationale=rationale)
        if isinstance(out, int | float):
            score = float(out)
            if not 0.0 <= score <= 1.0:
                raise TeacherError(
                    f"{self.config.function} returned score {score}; expected a value in [0, 1]",
                    teacher=self.name,
                )
            return self.verdict(score >= self.config.threshold, score, rationale)
        raise TeacherError(
            f"{self.config.function} returned {type(out).__name__}; expected bool, a score in "
            "[0, 1], (value, rationale) or a Verdict",
            teacher=self.name,
        )
