"""A content-keyed memo of verdicts: a deterministic local verifier never judges the same content twice.

A small student's samples repeat themselves: in the code demo, 8 samples of one task hold the same
code block again and again, and round K's student writes much of what round K-1's did. Each
``code_tests`` verdict is a sandbox process; judged once per distinct content, most of those
processes are never started.

A teacher takes part by declaring what it reads: ``memo_content(candidate)`` returns the exact
content its verdict depends on beyond its config (for ``code_tests``: the interpreter, the code
under test and the tests; for ``final_answer``: the extracted answer and the reference), or None
when it cannot say (that candidate is judged as usual). Only teachers whose verdict is a function
of that content declare it: the built-in verifiers, and a ``python`` teacher whose panel entry says
``deterministic = true``. Paid judges never do: their verdicts go through the ledger
(:mod:`tgrs_agents.paid.ledger`), which also counts what they cost.

The key is a SHA-256 of the teacher's class, its config identity (every field that decides its
verdicts, name included: :meth:`~tgrs_agents.teachers.base.TeacherConfig.identity`) and that
content, so two panels (or two rounds of the loop) share entries exactly when they would decide the
same. Error verdicts are never kept (a sandbox that could not start is tried again). Two candidates
with the same content in flight at once run the teacher once: the second waits for the first.

One memo is shared by every panel of the process (:func:`shared_memo`), bounded by entries and by
the size of the rationales it keeps; the least recently used entries go first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from ..types import Candidate, Verdict

_ENTRY_BYTES = 256  # a kept verdict's size beyond its rationale, roughly (key, object, fields)


def teacher_identity(teacher: Any) -> bytes | None:
    """What identifies a teacher's verdicts in the memo, or None: it declares no ``memo_content``."""
    if not callable(getattr(teacher, "memo_content", None)):
        return None
    config = getattr(teacher, "config", None)
    ident = config.identity() if config is not None and hasattr(config, "identity") else None
    cls = type(teacher)
    return json.dumps([cls.__module__, cls.__qualname__, ident], sort_keys=True, default=str).encode()


def memo_key(identity: bytes, teacher: Any, cand: Candidate) -> bytes | None:
    """The key of ``cand`` for ``teacher`` (of ``identity``), or None when it cannot be memoized."""
    try:
        parts = teacher.memo_content(cand)
    except Exception:  # noqa: BLE001 - a teacher that cannot say is judged as usual
        return None
    if parts is None:
        return None
    h = hashlib.sha256(identity)
    for part in parts:  # each part length-prefixed: ("ab", "c") and ("a", "bc") differ
        data = part.encode("utf-8", "surrogatepass") if isinstance(part, str) else bytes(part)
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.digest()


class VerdictMemo:
    """Verdicts by content key, least recently used first out; see the module docstring."""

    def __init__(self, max_entries: int = 32768, max_bytes: int = 32 << 20) -> None:
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self._done: OrderedDict[bytes, Verdict] = OrderedDict()
        self._flight: dict[bytes, asyncio.Event] = {}
        self.bytes = 0
        self.hits = self.runs = self.evictions = 0

    def __len__(self) -> int:
        return len(self._done)

    def clear(self) -> None:
        self._done.clear()
        self.bytes = 0

    async def get_or_run(self, key: bytes, run: Callable[[], Awaitable[Verdict]]) -> tuple[Verdict, bool]:
        """(the verdict for ``key``, whether it came from the memo). ``run`` is awaited only when
        no verdict is kept and none is being made; a failed or cancelled run hands the key to the
        next waiter, which then runs it itself."""
        while True:
            v = self._done.get(key)
            if v is not None:
                self._done.move_to_end(key)
                self.hits += 1
                return v, True
            pending = self._flight.get(key)
            if pending is None:
                break
            await pending.wait()
        done = self._flight[key] = asyncio.Event()
        try:
            self.runs += 1
            v = await run()
            if v.error is None:
                self._keep(key, v)
            return v, False
        finally:
            del self._flight[key]
            done.set()

    def _keep(self, key: bytes, v: Verdict) -> None:
        size = _ENTRY_BYTES + len(v.rationale)
        if size > self.max_bytes:
            return
        self._done[key] = v
        self.bytes += size
        while len(self._done) > self.max_entries or self.bytes > self.max_bytes:
            _, old = self._done.popitem(last=False)
            self.bytes -= _ENTRY_BYTES + len(old.rationale)
            self.evictions += 1

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._done), "bytes": self.bytes, "hits": self.hits, "runs": self.runs,
                "evictions": self.evictions}


def add_counts(before: Any, now: dict[str, int]) -> dict[str, int]:
    """Memo hits per teacher over every invocation of a run directory: ``before`` is what the
    last summary said (hits are not journaled), ``now`` this invocation's."""
    out = {k: int(v) for k, v in before.items()} if isinstance(before, dict) else {}
    for k, v in now.items():
        out[k] = out.get(k, 0) + v
    return out


_SHARED = VerdictMemo()


def shared_memo() -> VerdictMemo:
    """The process's memo: every panel uses it unless given its own."""
    return _SHARED
