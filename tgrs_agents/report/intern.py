"""Interning the report's strings (task ids, reasons, ...) as small integers, in first-seen order.

A few distinct values stay in a dict. A run with many (a task id per few candidates: 250,000 in a
million-candidate run) moves them, above ``IN_MEMORY`` values, to an unnamed SQLite file beside the
run, with a small dict of recent values in front, so memory does not grow with them; the values are
read back in order a chunk at a time (:meth:`Interner.json`).
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import orjson

IN_MEMORY = 50_000  # distinct values kept in a dict; above this they move to SQLite
_RECENT = 8_192  # values remembered in front of SQLite
_CHUNK = 4_096


class Interner:
    def __init__(self, near: Path | None = None, in_memory: int | None = None) -> None:
        self.index: dict[str, int] = {}
        self._values: list[str] = []
        self.near, self.in_memory = near, IN_MEMORY if in_memory is None else in_memory
        self.db: sqlite3.Connection | None = None
        self.n = 0

    def __call__(self, value: str) -> int:
        i = self.index.get(value)
        if i is not None:
            return i
        if self.db is None:
            i = self.index[value] = self.n
            self._values.append(value)
            self.n += 1
            if self.n > self.in_memory:
                self._to_disk()
            return i
        row = self.db.execute("SELECT i FROM t WHERE v = ?", (value,)).fetchone()
        if row is None:
            i = self.n
            self.db.execute("INSERT INTO t (i, v) VALUES (?, ?)", (i, value))
            self.n += 1
        else:
            i = row[0]
        if len(self.index) >= _RECENT:
            self.index.clear()
        self.index[value] = i
        return i

    def _to_disk(self) -> None:
        where = self.near if self.near is not None and os.access(self.near, os.W_OK) else None
        fd, path = tempfile.mkstemp(prefix=".tgrs-report-", suffix=".sqlite", dir=where)
        os.close(fd)
        try:
            db = sqlite3.connect(path)
        finally:
            os.unlink(path)  # the open connection keeps it; nothing is left behind
        db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA cache_size=-4000;"
                         "CREATE TABLE t (i INTEGER PRIMARY KEY, v TEXT NOT NULL UNIQUE);")
        db.executemany("INSERT INTO t (i, v) VALUES (?, ?)", enumerate(self._values))
        self.db, self._values = db, []
        self.index.clear()

    def __len__(self) -> int:
        return self.n

    def chunks(self) -> Iterator[list[str]]:
        """Every value in order, a chunk at a time."""
        if self.db is None:
            for a in range(0, self.n, _CHUNK):
                yield self._values[a:a + _CHUNK]
            return
        cur = self.db.execute("SELECT v FROM t ORDER BY i")
        while rows := cur.fetchmany(_CHUNK):
            yield [r[0] for r in rows]

    @property
    def values(self) -> list[str]:
        """Every value, in order (a list: for the few values of a small table)."""
        return self._values if self.db is None else [v for c in self.chunks() for v in c]

    def json(self) -> orjson.Fragment:
        """Every value as a JSON list, built a chunk at a time."""
        return orjson.Fragment(b"[" + b",".join(orjson.dumps(c)[1:-1] for c in self.chunks()) + b"]")

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
