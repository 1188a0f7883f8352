"""The refine stage's journal of paid rewrites (``round-K/refine/rewrites.jsonl``), so a killed stage
pays for no rewrite twice.

A refiner's rewrite is a paid call. Each one is appended here the moment it arrives (written, flushed
and synced, as the curate run journals a paid verdict) under the candidate's id and a hash of the
candidate as it was sent, and the stage run again takes it from here instead of asking the refiner:
only the rewrites in flight at the kill are paid again. The student's scores are not kept: they are
free, and the choice is recomputed from them. A torn last line (the kill came mid-write) is not a
rewrite; a record that is not one is a one-line error naming the file and line.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson

from ..errors import InputError
from ..types import Candidate


def _key(c: Candidate) -> str:
    return f"{c.id}:{hashlib.sha256(c.model_dump_json().encode()).hexdigest()[:16]}"


class RewriteJournal:
    """Rewrites by candidate (the same id and content), read back at start; :meth:`add` keeps one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.done: dict[str, Candidate] = {}
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            for line, raw in enumerate(f, start=1):
                if not raw.endswith(b"\n"):
                    break  # cut short by a kill: that rewrite is paid again
                try:
                    rec = orjson.loads(raw)
                    self.done[rec["key"]] = Candidate.model_validate(rec["rewrite"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                    raise InputError(f"expected a rewrite record {{key, rewrite}} ({type(e).__name__}); "
                                     "delete the file to pay for the rewrites again", file=self.path, line=line,
                                     field="rewrite") from None

    def get(self, original: Candidate) -> Candidate | None:
        return self.done.get(_key(original))

    def add(self, original: Candidate, rewrite: Candidate) -> None:
        key = _key(original)
        raw = orjson.dumps({"key": key, "id": original.id, "rewrite": rewrite.model_dump(mode="json")}) + b"\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        self.done[key] = rewrite
