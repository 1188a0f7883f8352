"""Derived state that can be rebuilt: the id index of a run directory.

``ids.sqlite`` only remembers which input position first used each candidate id, and everything in
it can be read back from the outputs. So an index that cannot be opened or checked (a disk that
filled, a copy cut short, a file from another program) is not an error: it is deleted and rebuilt
from the decision and verdict records, and the run says so in its warnings. An index missing from a
resumed run is rebuilt the same way (without it, a repeated id of a decided candidate would pass).

Rebuilding from the records is exact because the input is read in order: every position not yet
decided is read again (and claims its id again) after the decided ones are in the index.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .ingest import IdIndex
from .jsonl import has_line, scan
from .store import RunStore

INDEX = "ids.sqlite"


def open_index(store: RunStore, resumed: bool) -> IdIndex:
    """The run's id index, rebuilt from ``store``'s outputs when it is damaged (or missing on resume)."""
    path = store.dir / INDEX
    problem = "it is missing" if resumed and not path.exists() else None
    if problem is None:
        try:
            index = IdIndex(path)
            row = index.db.execute("PRAGMA quick_check").fetchone()
            if row == ("ok",):
                return index
            index.close()
            problem = f"PRAGMA quick_check: {row[0] if row else 'no answer'}"
        except sqlite3.DatabaseError as e:
            problem = str(e)
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    index = IdIndex(path)
    first: dict[str, int] = {}
    for name in ("accepted", "rejected", "passed", "verdicts"):
        for rec in scan(store.path(name), has_line):
            cid = rec.get("id")
            if isinstance(cid, str) and rec["line"] < first.get(cid, 1 << 62):
                first[cid] = rec["line"]
    index.claim(sorted(first.items(), key=lambda kv: kv[1]))
    store.warnings.append(f"{path}: the id index could not be used ({problem}); rebuilt it from the "
                          f"outputs ({len(first)} ids)")
    return index
