"""The run directory's record of batches: ``batches.jsonl`` (append-only) and ``batches/<key>.jsonl``.

A batch is paid for once it reaches the provider, so what it holds must be on disk *before*:
:meth:`BatchJournal.intend` writes the items (``batches/<key>.jsonl``, the exact request bodies
with their candidate ids) and then an ``intent`` record, each fsync'd. Later records say what
became of it: ``submitted`` (the provider's batch id), ``cancel`` (we asked), ``ended`` (its
answers were handed on; resubmitted items name the child batch). Replaying the file gives each
batch's :class:`BatchEntry`; a torn last line (a kill mid-write) is ignored.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import Item, custom_id

JOURNAL = "batches.jsonl"


@dataclass
class BatchEntry:
    """What the journal knows of one batch (replayed from its records)."""

    key: str
    provider: str
    n: int
    t: float  # wall time of the intent
    root: str
    attempt: int = 0  # 0: first submission; k: the k-th resubmission of failed items
    parent: str | None = None
    batch_id: str | None = None
    adopted: bool = False
    cancel_asked: bool = False
    ended: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def open(self) -> bool:
        return self.ended is None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BatchJournal:
    def __init__(self, run_dir: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(run_dir)
        self.path = self.dir / JOURNAL
        self.items_dir = self.dir / "batches"
        self.clock = clock

    @staticmethod
    def new_key() -> str:
        return "b" + secrets.token_hex(6)

    def _append(self, rec: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if new:
            _fsync_dir(self.dir)

    def intend(self, key: str, provider: str, items: Sequence[Item], *, parent: BatchEntry | None = None) -> None:
        """Journal a batch before it is submitted: its items first, then the intent record."""
        self.items_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.items_dir / f"{key}.jsonl.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for cand, body in items:
                f.write(json.dumps({"id": cand, "body": body}, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.items_dir / f"{key}.jsonl")
        _fsync_dir(self.items_dir)
        self._append({"ev": "intent", "key": key, "provider": provider, "n": len(items), "t": self.clock(),
                      "root": parent.root if parent else key, "attempt": parent.attempt + 1 if parent else 0,
                      "parent": parent.key if parent else None})

    def record(self, key: str, ev: str, **fields: Any) -> None:
        self._append({"ev": ev, "key": key, "t": self.clock(), **fields})

    def items(self, key: str) -> list[Item]:
        """(candidate id, body) in the batch's order (its custom_ids are ``<key>_<n>``)."""
        with open(self.items_dir / f"{key}.jsonl", encoding="utf-8") as f:
            return [(r["id"], r["body"]) for r in map(json.loads, f)]

    def requests(self, key: str) -> list[Item]:
        """What goes to the provider: (custom_id, body)."""
        return [(custom_id(key, n), body) for n, (_, body) in enumerate(self.items(key))]

    def load(self) -> dict[str, BatchEntry]:
        out: dict[str, BatchEntry] = {}
        if not self.path.exists():
            return out
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a torn last line: that record never happened
            key, ev = r.get("key"), r.get("ev")
            if ev == "intent":
                out[key] = BatchEntry(key, r["provider"], r["n"], r["t"], r["root"], r["attempt"], r["parent"])
            elif key in out:
                e = out[key]
                if ev == "submitted":
                    e.batch_id, e.adopted = r["batch_id"], bool(r.get("adopted"))
                elif ev == "cancel":
                    e.cancel_asked = True
                elif ev == "ended":
                    e.ended, e.counts = r["status"], r.get("counts") or {}
        return out
