"""The report's per-candidate columns on disk: fixed-width records in an unnamed scratch file.

While a run is read, every candidate's record (:data:`RECORD`: interned task, status, decider,
score, round, reason, line, ...) is appended to a :class:`RecordFile` a chunk at a time, in the
order the candidates were met. :meth:`RecordFile.sorted` then writes them in input order (round,
then line) to a second file, a chunk at a time, together with each candidate's verdict head and
labels; :class:`Column` reads one field of that file back by slice (or, chunk by chunk, whole), so
memory holds no column of the run, only the chunk in hand.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path
from typing import IO, Any

import numpy as np

RECORD = np.dtype([("task", "<i4"), ("st", "i1"), ("by", "<i4"), ("score", "<f8"), ("rnd", "<i4"),
                   ("reason", "<i4"), ("line", "<i8"), ("saved", "<i4"), ("tl", "<i4"), ("io", "<i8"),
                   ("il", "<i4"), ("mo", "<i8"), ("ml", "<i4")])
DECIDED = np.dtype([("t", "<f8"), ("s", "i1")])  # a decision's time and status (0 accepted, 1 rejected)
CHUNK = 1 << 15  # records per read or write


def _scratch(near: Path) -> IO[bytes]:
    try:
        return tempfile.TemporaryFile(prefix=".tgrs-report-", dir=near)
    except OSError:  # a read-only run directory: the system's temporary folder
        return tempfile.TemporaryFile(prefix="tgrs-report-")


class RecordFile:
    """Records of ``dtype`` in a scratch file: appended through a buffer, updated in place, read by slice."""

    def __init__(self, near: Path, dtype: np.dtype = RECORD) -> None:
        self.near, self.dtype = near, dtype
        self.f = _scratch(near)
        self._close = weakref.finalize(self, self.f.close)
        self.done = 0  # records on disk
        self.buf = np.zeros(CHUNK, dtype=dtype)
        self.nbuf = 0

    def __len__(self) -> int:
        return self.done + self.nbuf

    def append(self, values: tuple[Any, ...]) -> int:
        i = len(self)
        self.buf[self.nbuf] = values
        self.nbuf += 1
        if self.nbuf == CHUNK:
            self.flush()
        return i

    def flush(self) -> None:
        if self.nbuf:
            os.pwrite(self.f.fileno(), self.buf[:self.nbuf].tobytes(), self.done * self.dtype.itemsize)
            self.done += self.nbuf
            self.nbuf = 0

    def set(self, i: int, **fields: Any) -> None:
        """Change some fields of record ``i``."""
        if i >= self.done:
            for k, v in fields.items():
                self.buf[i - self.done][k] = v
            return
        rec = self.rows(i, i + 1)
        for k, v in fields.items():
            rec[0][k] = v
        os.pwrite(self.f.fileno(), rec.tobytes(), i * self.dtype.itemsize)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Records ``start`` to ``stop`` (a copy)."""
        stop = min(stop, len(self))
        if start >= stop:
            return np.zeros(0, dtype=self.dtype)
        if start >= self.done:
            return self.buf[start - self.done:stop - self.done].copy()
        if stop > self.done:
            return np.concatenate([self.rows(start, self.done), self.rows(self.done, stop)])
        size = self.dtype.itemsize
        raw = os.pread(self.f.fileno(), (stop - start) * size, start * size)
        return np.frombuffer(raw, dtype=self.dtype).copy()

    def field(self, name: str) -> np.ndarray:
        """One field of every record, read a chunk at a time."""
        n = len(self)
        out = np.empty(n, dtype=self.dtype[name])
        for a in range(0, n, CHUNK):
            out[a:a + CHUNK] = self.rows(a, a + CHUNK)[name]
        return out

    def sorted(self, order: np.ndarray, extra: dict[str, tuple[Any, Any]]) -> RecordFile:
        """The records in ``order`` in a new file, with ``extra`` fields ({name: (dtype, value of row i
        for an array of rows)})."""
        self.flush()
        dtype = np.dtype(self.dtype.descr + [(k, d) for k, (d, _) in extra.items()])
        out = RecordFile(self.near, dtype)
        size = self.dtype.itemsize
        fd = self.f.fileno()
        for a in range(0, len(order), CHUNK):
            idx = order[a:a + CHUNK]
            chunk = np.zeros(len(idx), dtype=dtype)
            lo, hi = int(idx.min()), int(idx.max()) + 1
            if hi - lo <= 4 * len(idx):  # close together: one read of their span
                span = np.frombuffer(os.pread(fd, (hi - lo) * size, lo * size), dtype=self.dtype)
                src = span[idx - lo]
            else:  # scattered (rows of several decision files): a read per run of neighbours
                src = np.empty(len(idx), dtype=self.dtype)
                ix = np.argsort(idx, kind="stable")
                s = idx[ix]
                breaks = np.flatnonzero(np.diff(s) > 64) + 1
                for part in np.split(np.arange(len(s)), breaks):
                    p0, p1 = int(s[part[0]]), int(s[part[-1]]) + 1
                    span = np.frombuffer(os.pread(fd, (p1 - p0) * size, p0 * size), dtype=self.dtype)
                    src[ix[part]] = span[s[part] - p0]
            for k in self.dtype.names or ():
                chunk[k] = src[k]
            for k, (_, get) in extra.items():
                chunk[k] = get(idx)
            out.buf, out.nbuf = chunk, len(chunk)
            out.flush()
        out.buf = np.zeros(0, dtype=dtype)
        return out

    def close(self) -> None:
        self._close()


class Column:
    """One field of a :class:`RecordFile`, as the report reads it: ``col[a:b]`` and ``col[i]`` read
    those records; ``np.asarray(col)`` (or iterating) reads the whole field a chunk at a time."""

    def __init__(self, records: RecordFile, name: str) -> None:
        self.records, self.name = records, name
        self.dtype = records.dtype[name]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            return np.ascontiguousarray(self.records.rows(start, stop)[self.name][::step])
        i = int(key) + (len(self) if int(key) < 0 else 0)
        if not 0 <= i < len(self):
            raise IndexError(key)
        return self.records.rows(i, i + 1)[self.name][0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.records.field(self.name)
        return out if dtype is None else out.astype(dtype)

    def __iter__(self) -> Any:
        return iter(self.__array__())
