"""Reading candidate trajectories from JSONL: validation, clear reasons, duplicate ids.

Input is streamed in chunks; nothing grows with the file except the on-disk id index (SQLite), so a
file of millions of lines reads in flat memory. A bad line becomes an :class:`Invalid` record with
the file, line, field and what was expected; it never stops the run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..types import Candidate
from .panel_file import format_loc
from .store import DoneLines


@dataclass(frozen=True, slots=True)
class Invalid:
    line: int
    field: str | None
    reason: str
    id: str | None = None
    raw: str = ""

    def record(self) -> dict[str, Any]:
        return {"line": self.line, "id": self.id, "field": self.field, "reason": self.reason,
                "raw": self.raw}


def explain(err: ValidationError) -> tuple[str | None, str]:
    """The first problem of a pydantic error as (field path, what was expected)."""
    e = err.errors(include_url=False)[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p[:1].islower() and "[" in p))
    # drop union member tags such as 'str' or 'list[dict[str,any]]' that pydantic adds to a loc
    loc = tuple(p for p in loc if p not in ("str", "int", "float", "bool", "none", "function-after"))
    field = format_loc(loc) or None
    kind, ctx, got = e["type"], e.get("ctx", {}), e.get("input")
    if kind == "json_invalid":
        return None, f"not valid JSON ({ctx.get('error', 'parse error')})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return field, f"expected a JSON object; got {type(got).__name__}"
    if kind == "missing":
        return field, "required field is missing"
    if kind == "literal_error":
        return field, f"expected one of {ctx.get('expected')}; got {got!r}"
    if field and field.endswith("content") and kind in ("string_type", "list_type", "dict_type"):
        return field, "expected a string, a list of content-part objects, or null"
    if kind == "string_too_short":
        return field, "expected a non-empty string"
    if kind == "too_short":
        return field, "expected a non-empty list" if isinstance(got, list) else "expected a non-empty string"
    if kind == "string_type":
        return field, f"expected a string; got {type(got).__name__}"
    if kind == "list_type":
        return field, f"expected a list; got {type(got).__name__}"
    return field, e["msg"].removeprefix("Value error, ")


def parse_line(raw: bytes, line: int, source: str) -> Candidate | Invalid:
    try:
        return Candidate.model_validate_json(raw)
    except ValidationError as err:
        field, what = explain(err)
        cid = _guess_id(raw)
        where = f"{source}:{line}" + (f": field '{field}'" if field else "")
        text = raw.decode("utf-8", "replace")
        return Invalid(line, field, f"{where}: {what}", cid, text[:500])


def _guess_id(raw: bytes) -> str | None:
    import orjson

    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    cid = doc.get("id") if isinstance(doc, dict) else None
    return cid if isinstance(cid, str) else None


class IdIndex:
    """Which input line first used each candidate id (SQLite, on disk, WAL).

    Re-reading a line after a crash finds its own entry, so the index is safe to replay.
    """

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA cache_size=-8000")
        self.db.execute("CREATE TABLE IF NOT EXISTS ids (id TEXT PRIMARY KEY, line INTEGER) WITHOUT ROWID")

    def claim(self, batch: list[tuple[str, int]]) -> dict[int, int]:
        """Register ``(id, line)`` pairs; returns {line: first line} for lines that repeat an id."""
        if not batch:
            return {}
        first: dict[str, int] = {}
        ids = list({cid for cid, _ in batch})
        for i in range(0, len(ids), 500):
            part = ids[i : i + 500]
            q = f"SELECT id, line FROM ids WHERE id IN ({','.join('?' * len(part))})"
            first.update(self.db.execute(q, part).fetchall())
        dups: dict[int, int] = {}
        new: list[tuple[str, int]] = []
        for cid, line in batch:
            seen = first.get(cid)
            if seen is None:
                first[cid] = line
                new.append((cid, line))
            elif seen != line:
                dups[line] = seen
        if new:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR IGNORE INTO ids VALUES (?, ?)", new)
            self.db.execute("COMMIT")
        return dups

    def close(self) -> None:
        self.db.close()


def read_chunks(
    path: Path, done: DoneLines, index: IdIndex, *, chunk: int = 512
) -> Iterator[tuple[int, list[tuple[int, Candidate | Invalid]]]]:
    """Yield ``(lines read so far, [(line, candidate or invalid), ...])`` for lines not yet done.

    Blank lines are skipped (and counted). The id index is committed before a chunk is handed
    on, so no decision can be written for an id the index does not know.
    """
    source = str(path)
    batch: list[tuple[int, Candidate | Invalid]] = []
    n = 0
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if n in done or not raw.strip():
                continue
            batch.append((n, parse_line(raw, n, source)))
            if len(batch) >= chunk:
                yield n, _dedupe(batch, index, source)
                batch = []
    yield n, _dedupe(batch, index, source)


def _dedupe(
    batch: list[tuple[int, Candidate | Invalid]], index: IdIndex, source: str
) -> list[tuple[int, Candidate | Invalid]]:
    ids = [(c.id, line) for line, c in batch if isinstance(c, Candidate)]
    dups = index.claim(ids)
    if not dups:
        return batch
    out: list[tuple[int, Candidate | Invalid]] = []
    for line, c in batch:
        if isinstance(c, Candidate) and line in dups:
            c = Invalid(
                line, "id", f"{source}:{line}: field 'id': expected a unique id; {c.id!r} was "
                f"first used on line {dups[line]}", c.id,
            )
        out.append((line, c))
    return out
