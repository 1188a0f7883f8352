"""Repeated ids across shards: a pre-pass, so a sharded run sets aside exactly what one process does.

One process reads the input in order and sets aside every candidate whose id an earlier line already
used (``expected a unique id; 'x' was first used on line N``), and never judges it. A shard sees only
its own lines, so a repeat whose first use lies in an earlier shard would be judged (and paid) a
second time. The pre-pass closes that gap in two steps, both streaming (nothing is held whole):

1. :func:`scan_shard`, on each worker in parallel: the shard's bytes are copied into its own input
   file and read with the run's reader, and the id of each *valid* candidate's first use in the
   shard is written to ``shards/NNN/ids.jsonl`` (a record set aside for another reason claims no
   id, as in one process; an id minted from content is minted the same way).
2. :func:`cross_shard_repeats`, in the driver: the shards' id lists, in shard order, go through one
   on-disk :class:`~tgrs_agents.curation.ingest.IdIndex` (SQLite), which answers which ids an
   earlier shard used first; each shard gets ``shards/NNN/foreign.jsonl``: ``[id, first line]``,
   the line in the shard's own numbering (zero or below: before its first line).

:func:`seed_index` then enters those ids into the shard run's own id index before it starts, so
the shard's reader sets the repeats aside with the single-process reason (the merge turns the line
numbers into lines of the whole input) and no teacher ever sees them. Every file is written aside and
renamed, so a worker or driver killed mid-way leaves either none or a whole one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from ..curation.ingest import IdIndex, check_format, read_chunks
from ..curation.lock import run_lock
from ..curation.recover import INDEX, open_index
from ..curation.store import DoneLines, RunStore, input_fingerprint
from ..types import Candidate

IDS, FOREIGN, BATCH = "ids.jsonl", "foreign.jsonl", 5000


def _atomic_lines(path: Path, rows: Iterator[list]) -> int:
    tmp = path.with_name(path.name + ".part")
    n = 0
    with tmp.open("wb") as f:
        for row in rows:
            f.write(orjson.dumps(row) + b"\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return n


def _rows(path: Path) -> Iterator[list]:
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                yield orjson.loads(raw)


def scan_shard(shard_input: Path, fmt: str) -> int:
    """Write ``ids.jsonl`` beside ``shard_input``: ``[id, line]`` of each id's first valid use in the
    shard (kept if it exists: a finished scan). Returns the ids written (or found)."""
    out = shard_input.with_name(IDS)
    if out.exists():
        return sum(1 for _ in _rows(out))
    index = IdIndex(Path(":memory:"))  # repeats within the shard come back set aside: skipped here

    def ids() -> Iterator[list]:
        for _, chunk in read_chunks(shard_input, DoneLines(), index, fmt=fmt):
            for line, item in chunk:
                if isinstance(item, Candidate):
                    yield [item.id, line]

    try:
        return _atomic_lines(out, ids())
    finally:
        index.close()


def cross_shard_repeats(shard_dirs: Sequence[Path], offsets: Sequence[int], work: Path) -> int:
    """Write each shard's ``foreign.jsonl`` (kept when every shard has one); returns the repeats found."""
    if all((d / FOREIGN).exists() for d in shard_dirs):
        return sum(sum(1 for _ in _rows(d / FOREIGN)) for d in shard_dirs)
    db = work / "ids-cluster.sqlite"
    for suffix in ("", "-wal", "-shm"):  # made afresh: a driver killed mid-way left it half-done
        Path(str(db) + suffix).unlink(missing_ok=True)
    index = IdIndex(db)
    total = 0
    try:
        for d, off in zip(shard_dirs, offsets, strict=True):
            def foreign(d: Path = d, off: int = off) -> Iterator[list]:
                batch: list[tuple[str, int]] = []
                for cid, line in _rows(d / IDS):
                    batch.append((cid, off + line))
                    if len(batch) >= BATCH:
                        yield from _repeats(index, batch, off)
                        batch = []
                yield from _repeats(index, batch, off)

            total += _atomic_lines(d / FOREIGN, foreign())
    finally:
        index.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return total


def _repeats(index: IdIndex, batch: list[tuple[str, int]], off: int) -> Iterator[list]:
    dups = index.claim(batch)  # {global line: the global line of the id's first use}
    for cid, line in batch:
        if line in dups:
            yield [cid, dups[line] - off]


def seed_index(shard_dir: Path, fmt: object, panel_fp: str, *, force: bool) -> int:
    """Enter the ids earlier shards used first into the shard run's id index; returns how many.

    A run the shard cannot resume (another panel, another reader) under ``force`` is archived here
    first, as the run itself would archive it (which would take the seeded index along); an index
    that cannot be used is rebuilt from the outputs first (:func:`~tgrs_agents.curation.recover.open_index`)."""
    with run_lock(shard_dir / "run"):  # as the run itself: nothing is touched while another owns it
        return _seed(shard_dir, fmt, panel_fp, force)


def _seed(shard_dir: Path, fmt: object, panel_fp: str, force: bool) -> int:
    run_dir = shard_dir / "run"
    store = RunStore(run_dir)
    resumed = store.files.meta.exists()
    if resumed and force:
        stale = store.mismatch(panel_fp=panel_fp, input_fp=input_fingerprint(shard_dir / "input.jsonl"))
        if stale or check_format(run_dir, fmt, force=True):  # type: ignore[arg-type]
            store._archive()
            resumed = False
    path = shard_dir / FOREIGN
    if not path.exists() or not path.stat().st_size:
        return 0
    index = open_index(store, resumed) if resumed else IdIndex(run_dir / INDEX)
    n = 0
    try:
        batch: list[tuple[str, int]] = []
        for cid, line in _rows(path):
            batch.append((cid, line))
            if len(batch) >= BATCH:
                index.claim(batch)
                n, batch = n + len(batch), []
        index.claim(batch)
        n += len(batch)
    finally:
        index.close()
    return n
