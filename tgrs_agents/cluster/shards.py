"""Shards of an input file: line-aligned byte ranges, and the merge of the shards' outputs.

:func:`plan` cuts a file into ``n`` byte ranges whose ends fall just after a newline, reading only
a line around each cut, so nothing is loaded whole; :func:`copy_range` streams one range into the
shard's own input file (written aside and renamed: a worker killed mid-copy leaves none, and a copy
that exists is whole). Each shard is then an ordinary curate run in its own directory, resumable by
its own journal. :func:`merge` concatenates the shards' data files, in shard order, into the run
directory's usual files, with an invalid record's ``line`` made a line of the whole input again,
and :func:`merged_summary` makes the shards' summaries one.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

CHUNK = 1 << 20
DATA_FILES = ("accepted", "rejected", "passed", "invalid", "verdicts")
SUMMED = ("input_lines", "valid", "accepted", "rejected", "invalid", "failed", "passed", "pending", "calls",
          "calls_saved", "cost_usd", "cost_usd_invocation", "rate_limited")


def plan(path: str | Path, n: int) -> list[tuple[int, int]]:
    """``n`` (or fewer, for a short file) byte ranges ``[start, end)`` covering ``path``, each ending
    just after a newline (the last at the end of the file)."""
    size = os.path.getsize(path)
    cuts = [0]
    with open(path, "rb") as f:
        for i in range(1, n):
            pos = max(size * i // n, cuts[-1])
            if pos >= size:
                break
            f.seek(pos)
            if pos > 0:
                f.seek(pos - 1)  # a cut right after a newline stays where it is
            f.readline()
            end = f.tell()
            if cuts[-1] < end < size:
                cuts.append(end)
    cuts.append(size)
    return [(a, b) for a, b in itertools.pairwise(cuts) if b > a]


def copy_range(src: str | Path, start: int, end: int, dst: str | Path) -> int:
    """Stream bytes ``[start, end)`` of ``src`` into ``dst`` (atomically); returns the lines in it.
    An existing ``dst`` is a finished copy: it is only counted."""
    dst = Path(dst)
    lines = 0
    if dst.exists():
        with dst.open("rb") as f:
            while chunk := f.read(CHUNK):
                lines += chunk.count(b"\n")
        return lines
    tmp = dst.with_name(dst.name + ".part")
    with open(src, "rb") as f, tmp.open("wb") as out:
        f.seek(start)
        left = end - start
        while left > 0 and (chunk := f.read(min(CHUNK, left))):
            out.write(chunk)
            lines += chunk.count(b"\n")
            left -= len(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, dst)
    return lines


def merge(run_dirs: Sequence[Path], line_offsets: Sequence[int], out: Path, *,
          shard_inputs: Sequence[str] = (), source: str | None = None) -> dict[str, int]:
    """Concatenate each shard's data files into ``out``; rows per file.

    A row's ``line`` becomes its line in the whole input (``line_offsets``: the lines before each
    shard), and an invalid row's ``file`` and ``reason`` name ``source`` and that line instead of the
    shard's own input file, so the rows read as a single-process run's."""
    rows: dict[str, int] = {}
    fixes = [_Fix(off, shard_inputs[i] if i < len(shard_inputs) else None, source)
             for i, off in enumerate(line_offsets)]
    for name in DATA_FILES:
        target = out / f"{name}.jsonl"
        tmp = target.with_name(target.name + ".part")
        n = 0
        with tmp.open("wb") as w:
            for d, fix in zip(run_dirs, fixes, strict=True):
                src = d / f"{name}.jsonl"
                if not src.exists():
                    continue
                with src.open("rb") as r:
                    for raw in r:
                        if raw.strip():
                            w.write(fix(raw))
                            n += 1
            w.flush()
            os.fsync(w.fileno())
        os.replace(tmp, target)
        rows[name] = n
    return rows


_FIRST = re.compile(r"(was first used on line )(-?\d+)")  # below 1: in an earlier shard (.ids)


class _Fix:
    """One shard's rows rewritten as rows of the whole input."""

    def __init__(self, offset: int, shard_input: str | None, source: str | None) -> None:
        self.offset = offset
        self.path = shard_input if source is not None else None
        self.source = source
        self.where = re.compile(re.escape(self.path) + r":(\d+)") if self.path else None

    def __call__(self, raw: bytes) -> bytes:
        if not self.offset and self.path is None:
            return raw if raw.endswith(b"\n") else raw + b"\n"
        doc = orjson.loads(raw)
        if not isinstance(doc, dict):
            return raw if raw.endswith(b"\n") else raw + b"\n"
        if isinstance(doc.get("line"), int):
            doc["line"] += self.offset
        if self.path is not None and self.where is not None:
            if doc.get("file") == self.path:
                doc["file"] = self.source
            if isinstance(doc.get("reason"), str) and self.path in doc["reason"]:
                reason = self.where.sub(lambda m: f"{self.source}:{int(m[1]) + self.offset}", doc["reason"])
                # a repeated id names the line of its first use, in the shard's numbering
                doc["reason"] = _FIRST.sub(lambda m: f"{m[1]}{int(m[2]) + self.offset}", reason)
        return orjson.dumps(doc) + b"\n"


def merged_summary(parts: list[dict[str, Any]], rows: dict[str, int], workers: int) -> dict[str, Any]:
    """The shards' summaries as one: counts and costs summed, per teacher too; the rest from the first."""
    s = dict(parts[0]) if parts else {}
    for k in SUMMED:
        vals: list[float] = [p[k] for p in parts if isinstance(p.get(k), int | float)]
        if vals:
            s[k] = round(sum(vals), 6) if any(isinstance(v, float) for v in vals) else sum(vals)
    teachers: dict[str, dict[str, Any]] = {}
    for p in parts:
        for name, st in (p.get("teachers") or {}).items():
            if name not in teachers:
                teachers[name] = dict(st)
                continue
            acc = teachers[name]
            for k, v in st.items():
                if isinstance(v, int | float) and not isinstance(v, bool) and isinstance(acc.get(k), int | float):
                    acc[k] = acc[k] + v
    s["teachers"] = teachers
    s["warnings"] = [w for p in parts for w in p.get("warnings") or ()]
    s["stopped"] = next((p["stopped"] for p in parts if p.get("stopped")), None)
    s["wall_s"] = max((p.get("wall_s") or 0.0 for p in parts), default=0.0)
    s["jury"] = None  # per shard: see shards/NNN/run/summary.json
    s["engine"] = {"name": "ray", "workers": workers, "shards": len(parts), "rows": rows}
    return s
