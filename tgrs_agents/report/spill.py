"""The report's scratch space: serialised fragments spilled to an unnamed file and read back by
offset (:class:`Spill`, :class:`Blocks`), and latencies gathered into a sketch a batch at a time
(:class:`LatencyBatch`), so that reading a run keeps nothing per verdict in memory.
"""

from __future__ import annotations

import os
import struct
import tempfile
import weakref
from array import array
from pathlib import Path
from typing import IO

import numpy as np

from ..events import Sketch


class Spill:
    """An unnamed scratch file of serialised fragments: ``put`` returns (offset, length)."""

    def __init__(self, near: Path) -> None:
        try:
            self.f: IO[bytes] = tempfile.TemporaryFile(prefix=".tgrs-report-", dir=near, buffering=0)
        except OSError:  # a read-only run directory: the system's temporary folder
            self.f = tempfile.TemporaryFile(prefix="tgrs-report-", buffering=0)
        self.pos = 0
        self.buf = bytearray()  # what is not written yet, from offset ``pos - len(buf)``
        self._close = weakref.finalize(self, self.f.close)

    def put(self, b: bytes) -> tuple[int, int]:
        off = self.pos
        self.buf += b
        self.pos += len(b)
        if len(self.buf) >= 1 << 20:
            self.flush()
        return off, len(b)

    def get(self, off: int, n: int) -> bytes:
        return os.pread(self.f.fileno(), n, off)

    def flush(self) -> None:
        if self.buf:
            self.f.write(self.buf)
            self.buf = bytearray()

    def close(self) -> None:
        self._close()


def gather(spill: Spill, offs: list[int], lens: list[int], gap: int = 1 << 16) -> list[bytes]:
    """Spilled fragments, in the order asked: one read per run of them lying close together."""
    out: list[bytes] = [b""] * len(offs)
    ix = sorted(range(len(offs)), key=offs.__getitem__)
    j = 0
    while j < len(ix):
        k, lo = j, offs[ix[j]]
        hi = lo + lens[ix[j]]
        used = lens[ix[j]]
        while k + 1 < len(ix) and offs[ix[k + 1]] <= hi + gap and offs[ix[k + 1]] - lo <= 4 * used + gap:
            k += 1
            hi = max(hi, offs[ix[k]] + lens[ix[k]])
            used += lens[ix[k]]
        buf = spill.get(lo, hi - lo)
        for m in ix[j:k + 1]:
            out[m] = buf[offs[m] - lo:offs[m] - lo + lens[m]]
        j = k + 1
    return out


VERDICT = struct.Struct("<qii")  # a spilled verdict's head: the offset of the row's previous one, length, teacher


class Blocks:
    """Reads of the spill through a few cached 1 MiB blocks (a page's verdicts lie close together)."""

    SIZE = 1 << 20

    def __init__(self, spill: Spill, keep: int = 8) -> None:
        self.spill, self.keep = spill, keep
        self.cache: dict[int, bytes] = {}

    def get(self, off: int, n: int) -> bytes:
        b, at = divmod(off, self.SIZE)
        if at + n > self.SIZE:  # across a block's end
            return self.spill.get(off, n)
        block = self.cache.get(b)
        if block is None:
            if len(self.cache) >= self.keep:
                del self.cache[next(iter(self.cache))]
            block = self.cache[b] = self.spill.get(b * self.SIZE, self.SIZE)
        return block[at:at + n]


class LatencyBatch:
    """Latencies gathered a batch at a time into a :class:`Sketch` (one numpy pass per batch)."""

    __slots__ = ("buf", "sketch")
    BATCH = 1 << 15

    def __init__(self) -> None:
        self.sketch = Sketch()
        self.buf = array("d")

    def add(self, x: float) -> None:
        self.buf.append(x)
        if len(self.buf) >= self.BATCH:
            self.flush()

    def flush(self) -> Sketch:
        if self.buf:
            x = np.frombuffer(self.buf, dtype=np.float64)
            us = x * 1e6
            big = us > 1.0
            idx = np.zeros(len(x), dtype=np.int64)
            idx[big] = np.ceil(np.log(us[big]) / Sketch._LOG).astype(np.int64)
            keys, counts = np.unique(idx, return_counts=True)
            sk = self.sketch
            for k, c in zip(keys.tolist(), counts.tolist(), strict=True):
                sk.counts[k] = sk.counts.get(k, 0) + c
            sk.n += len(x)
            sk.total += float(x.sum())
            self.buf = array("d")
        return self.sketch
