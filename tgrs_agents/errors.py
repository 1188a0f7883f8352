"""One exception root for everything tgrs-agents raises on purpose.

::

    TgrsError
    ├── ConfigError          a panel / teacher / run file is wrong (names file, field, what was expected)
    ├── InputError           an input record is wrong (names file, line, field); set aside, never fatal
    ├── RunStoreError        the run directory cannot be used as asked (other panel, other input)
    ├── TeacherError         a paid call or a teacher failed (carries teacher, attempt, status, kind)
    └── CallsStopped         no further paid call may start: the one signal that stops a run
        ├── BudgetExhausted  the next call would pass the run's budget
        └── Halted           an endpoint refused the key or stopped answering, or the ledger failed

Errors never carry secrets: API keys are read from the environment at the last moment and are
never formatted into a message.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from .types import Usage


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


ErrorKind = Literal["rate_limit", "server", "overloaded", "timeout", "conflict", "connection",
                    "malformed", "auth", "bad_request", "error"]
"""What went wrong, as the retry policy and the limiter read it:

``rate_limit`` 429; ``server`` 5xx; ``overloaded`` Anthropic's 529; ``timeout`` the client's timeout
or a 408; ``conflict`` 409; ``connection`` no response; ``malformed`` an answer that does not parse
(paid for, asked again once); ``auth`` 401/403; ``bad_request`` any other 4xx; ``error`` everything
else (a teacher's own failure). A budget refusal is not a kind: it is :class:`BudgetExhausted`."""

ERROR_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))


class TeacherError(TgrsError):
    """A paid call or a teacher failed to produce its result.

    ``retryable``, ``retry_after`` and ``kind`` are the adapter's classification; the shared retry
    policy (not the adapter) decides what to do with them. ``usage`` is what the failed attempts
    were billed (malformed output is still paid for); ``headers`` are the response's headers, so the
    limiter learns the limits a 429 states without the adapter knowing about the limiter.
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
        kind: ErrorKind = "error",
        usage: Usage | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"TeacherError kind must be one of {sorted(ERROR_KINDS)}; got {kind!r}")
        self.teacher = teacher
        self.attempt = attempt
        self.status = status
        self.retryable = retryable
        self.retry_after = retry_after
        self.kind: ErrorKind = kind
        self.usage = usage
        self.headers = headers
        super().__init__(message)


class CallsStopped(TgrsError):
    """No further paid call may start: the one signal that stops a run.

    Raised before an attempt and never turned into anything else on its way up: every layer and the
    panel stop starting calls, let the calls in flight finish, and the candidate without a verdict
    stays pending. ``usage`` is what the call's earlier attempts were already billed (nothing, when
    the first attempt was refused), so their cost is kept on the record.
    """

    def __init__(self, message: str, *, teacher: str | None = None,
                 usage: Usage | None = None) -> None:
        self.teacher = teacher
        self.usage = usage
        super().__init__(message)


class BudgetExhausted(CallsStopped):
    """Starting the next call would take spending past the run's budget.

    The one budget-stop signal: raised by :meth:`~tgrs_agents.paid.cost.Budget.reserve` before an
    attempt and never turned into anything else on its way up. ``usage`` is what the call's earlier
    attempts were already billed (nothing, when the first attempt was refused), so their cost is
    kept on the record while the run stops cleanly and the candidate stays pending.
    """


class Halted(CallsStopped):
    """A paid call may not start: its endpoint refused the key or stopped answering (the circuit
    breaker, :mod:`tgrs_agents.paid.breaker`), or the verdict ledger cannot be used.

    The run stops starting calls, drains those in flight, and ends with this error (exit non-zero).
    """

    def __init__(self, message: str, *, teacher: str | None = None, usage: Usage | None = None) -> None:
        super().__init__(message, teacher=teacher, usage=usage)
        self.message = message

    def again(self, usage: Usage | None = None) -> Halted:
        """The same stop, raised anew for another call (each carries its own usage)."""
        return Halted(self.message, teacher=self.teacher, usage=usage)
