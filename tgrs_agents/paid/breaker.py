"""Fail fast, once, with the cause: an endpoint that refuses the key or cannot be reached stops the run.

Without this, a wrong API key (401 on every call) or a refused connection burns through the whole
input: every candidate is tried (with retries), every verdict is an error, and the run ends with
exit 0. One :class:`Breaker` per endpoint (shared by every teacher on it, like its limiter) watches
each attempt:

* a 401 or 403 trips it at once: the key is wrong for every call, not for this one;
* ``failures`` consecutive attempts that got no answer at all (connection refused or reset, DNS,
  timeouts) trip it; any answer from the server (a 200, a 429, a 5xx) resets the count.

The attempt that trips it ends as it would have (its error is journaled as that verdict's error);
from then on no attempt is sent to the endpoint: each raises :class:`Halted` before it takes a rate
token (and again after, if it was waiting for one).

:class:`~tgrs_agents.errors.Halted` is a :class:`~tgrs_agents.errors.CallsStopped` on purpose: that is the one signal
every layer and the panel already treat as "stop starting calls" (calls in flight finish, their
usage is kept, the candidate stays pending and the directory resumes). Unlike the budget, the run
then ends with an error: one line naming the teacher, the status, the base URL and the environment
variable the key was read from (never the key).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import Halted, TeacherError

NO_ANSWER = frozenset({"connection", "timeout"})  # the attempt got no response from the server


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a message about an endpoint names: the teacher, its base URL, the key's variable."""

    teacher: str
    base_url: str | None = None
    key_env: str | None = None

    @classmethod
    def of(cls, adapter: object) -> Endpoint:
        config = getattr(adapter, "config", None)
        return cls(teacher=str(getattr(adapter, "name", "?")),
                   base_url=getattr(adapter, "base_url", None) or None,
                   key_env=getattr(config, "api_key_env", None))

    def where(self) -> str:
        return self.base_url or "its endpoint"


class Breaker:
    """The circuit breaker of one endpoint (see the module docstring)."""

    def __init__(self, failures: int = 20) -> None:
        self.failures = max(1, failures)
        self.consecutive = 0
        self.down: Halted | None = None

    def check(self) -> None:
        """Before an attempt: raise if the endpoint is down."""
        if self.down is not None:
            raise self.down.again()

    def ok(self) -> None:
        self.consecutive = 0

    def failed(self, e: TeacherError, who: Endpoint) -> None:
        """After a failed attempt: trip on a 401/403 or on the ``failures``-th attempt in a row
        without an answer. The attempt's own error goes on as it is (it is a real answer, journaled
        as the verdict's error); every attempt after it is refused by :meth:`check`."""
        if self.down is not None:
            return
        if e.kind == "auth":
            key = f"the API key in ${who.key_env}" if who.key_env else "its API key"
            self.down = Halted(
                f"teacher {who.teacher!r}: HTTP {e.status or 401} from {who.where()}: {key} was refused "
                f"({str(e)[:160]}); no more calls were sent to this endpoint. Fix the key (or base_url) "
                "and run the same command again: the run resumes where it stopped", teacher=who.teacher)
        elif e.kind in NO_ANSWER:
            self.consecutive += 1
            if self.consecutive >= self.failures:
                self.down = Halted(
                    f"teacher {who.teacher!r}: {self.consecutive} attempts in a row got no answer from "
                    f"{who.where()} (last: {e}); no more calls were sent to this endpoint. Check that it "
                    "is up and that base_url is right, then run the same command again: the run resumes "
                    "where it stopped", teacher=who.teacher)
        else:
            self.consecutive = 0  # the server answered (a 5xx or a 429 is an answer)
