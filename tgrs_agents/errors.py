"""One exception root for everything tgrs-agents raises on purpose.

::

    TgrsError
    ├── ConfigError          a panel / teacher / run file is wrong (names file, field, what was expected)
    ├── InputError           an input record is wrong (names file, line, field); set aside, never fatal
    ├── RunStoreError        the run directory cannot be used as asked (other panel, other input)
    ├── TeacherError         a teacher could not produce a verdict (carries teacher, attempt, status)
    └── BudgetExhausted      the next call would pass the run's budget

Errors never carry secrets: API keys are read from the environment at the last moment and are
never formatted into a message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class TgrsError(Exception):
    """Root of every error tgrs-agents raises on purpose."""


class ConfigError(TgrsError):
    """A configuration file (panel, teacher, run) is invalid."""

    def __init__(
        self, message: str, *, file: str | Path | None = None, field: str | None = None
    ) -> None:
        self.file = str(file) if file is not None else None
        self.field = field
        self.detail = message
        where = []
        if self.file:
            where.append(self.file)
        if field:
            where.append(f"field '{field}'")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class InputError(TgrsError):
    """One input record is invalid. Carries the line number and the field at fault."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.detail = message
        where = []
        if self.file:
            where.append(self.file + (f":{line}" if line is not None else ""))
        elif line is not None:
            where.append(f"line {line}")
        if field:
            where.append(f"field '{field}'")
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class RunStoreError(TgrsError):
    """The run directory holds a run that this command may not continue."""


class TeacherError(TgrsError):
    """A teacher failed to produce a verdict.

    ``retryable`` and ``retry_after`` are the adapter's classification; the shared retry policy
    (not the adapter) decides what to do with them.
    """

    def __init__(
        self,
        message: str,
        *,
        teacher: str | None = None,
        attempt: int | None = None,
        status: int | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        kind: str = "error",
        usage: Any = None,
    ) -> None:
        self.teacher = teacher
        self.attempt = attempt
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.kind = kind  # rate_limit | server | timeout | connection | malformed | auth | bad_request | error
        self.usage = usage  # tokens billed by a failed attempt (malformed output is still paid for)
        super().__init__(message)


class BudgetExhausted(TgrsError):
    """Starting the next call would take spending past the run's budget."""
