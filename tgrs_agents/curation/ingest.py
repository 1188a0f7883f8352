"""Reading candidate trajectories: validation, clear reasons, duplicate ids.

The file (or a directory of files, read as one input) is read by a reader of
:mod:`tgrs_agents.formats` (``openai`` JSONL by default, or the one ``auto`` picks): a position is
a line number for line formats and a record index for JSON arrays and zips (in a directory: plus
the last position of the files before), and a resumed run skips exactly the positions already
decided. Input is streamed
in chunks; nothing grows with the file except the on-disk id index (SQLite), so a file of millions
of records reads in flat memory. A bad record becomes an :class:`Invalid` record with the file,
position, field and what was expected (also a record every teacher would mis-read: no text or tool
call in its final assistant turn, content parts of an unknown type; and one that breaks the OpenAI
rules chat templates and the API enforce: see :func:`convert_one`); it never stops the run.
"""

from __future__ import annotations

import json
import sqlite3
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from ..errors import InputError, RunStoreError
from ..formats import Format, Unreadable, check_openai, check_readable, input_files, resolve
from ..formats.base import MINTED
from ..formats.openai import unpack_strings
from ..types import Candidate
from .jsonl import candidate_problem
from .panel_file import pydantic_problem
from .store import DoneLines


@dataclass(frozen=True, slots=True)
class Invalid:
    line: int
    field: str | None
    reason: str
    id: str | None = None
    raw: str = ""
    file: str | None = None

    def record(self) -> dict[str, Any]:
        return {"line": self.line, "id": self.id, "field": self.field, "reason": self.reason,
                "raw": self.raw, "file": self.file}


def where(source: str, pos: int, unit: str = "line") -> str:
    """``file:line`` for line formats, ``file: record N`` for arrays and zips."""
    return f"{source}:{pos}" if unit == "line" else f"{source}: record {pos}"


def _invalid(pos: int, source: str, unit: str, field: str | None, what: str, cid: str | None,
             raw: str) -> Invalid:
    at = where(source, pos, unit) + (f": field '{field}'" if field else "")
    return Invalid(pos, field, f"{at}: {what}", cid, raw[:500], source)


_DIGIT_RUNS = bytes(48 if 48 <= b <= 57 else 32 for b in range(256))  # digits -> "0", the rest " "
_LONG_NUMBER = b"0" * 19  # 19 digits: where integers may pass 64 bits


def writable_as_read(raw: bytes) -> bool:
    """True if a record validated straight from these JSON bytes can surely be written back.

    Only two things in valid JSON can make a value orjson will not write: a lone surrogate (only
    through a ``\\u`` escape) and an integer wider than 64 bits (a run of 19 digits or more),
    directly or inside a tool call's arguments string. Bytes with neither need no round trip
    (about 5 us a record instead of 20); the others take :func:`candidate_problem`, which names the field.
    """
    return b"\\u" not in raw and _LONG_NUMBER not in raw.translate(_DIGIT_RUNS)


def _readable(c: Candidate, pos: int, source: str, unit: str, raw: str,
              require_assistant: bool, writable: bool = False) -> Candidate | Invalid:
    problem = check_readable(c, require_assistant=require_assistant)
    if problem is None and not writable:
        problem = candidate_problem(c)
    if problem is None:
        return c
    return _invalid(pos, source, unit, problem[0], problem[1], c.id, raw)


def parse_line(raw: bytes, line: int, source: str, *, unit: str = "line") -> Candidate | Invalid:
    """One ``openai`` record, validated straight from its JSON bytes (``messages`` / ``tools`` stored
    as JSON strings are decoded first)."""
    text = raw.decode("utf-8", "replace")
    try:
        c = Candidate.model_validate_json(raw)
    except ValidationError as err:
        try:
            doc = unpack_strings(orjson.loads(raw))
        except orjson.JSONDecodeError:
            doc = None
        if doc is not None:
            return parse_record(doc, line, source, unit=unit, raw=text, require_assistant=False)
        field, what = pydantic_problem(err)
        return _invalid(line, source, unit, field, what, _guess_id(raw), text)
    return _readable(c, line, source, unit, text, require_assistant=False, writable=writable_as_read(raw))


def parse_record(doc: dict[str, Any], pos: int, source: str, *, unit: str = "record", raw: str = "",
                 require_assistant: bool = True) -> Candidate | Invalid:
    """One canonical candidate dict (a reader's output), validated and checked for silent mis-reads."""
    try:
        c = Candidate.model_validate(doc)
    except ValidationError as err:
        field, what = pydantic_problem(err)
        cid = doc.get("id") if isinstance(doc, dict) and isinstance(doc.get("id"), str) else None
        return _invalid(pos, source, unit, field, what, cid, raw or _excerpt(doc))
    return _readable(c, pos, source, unit, raw or _excerpt(doc), require_assistant)


def _excerpt(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw[:500].decode("utf-8", "replace")
    if isinstance(raw, Path):
        return ""
    if isinstance(raw, list) and raw and isinstance(raw[0], tuple):  # a group of JSONL lines
        return _excerpt(raw[0][1])
    if isinstance(raw, tuple):  # (record, header)
        return _excerpt(raw[0])
    try:
        return orjson.dumps(raw, default=str)[:500].decode("utf-8", "replace")
    except TypeError:
        return ""


def _guess_id(raw: Any) -> str | None:
    if isinstance(raw, bytes):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
    cid = raw.get("id") if isinstance(raw, dict) else None
    return cid if isinstance(cid, str) else None


def convert_one(fmt: Format, convert: Any, raw: Any, pos: int, source: str, unit: str) -> Candidate | Invalid:
    """One source record through its reader and the ingest gate; whatever goes wrong becomes an
    :class:`Invalid`.

    The gate is here, where every reader's output passes: the shape (pydantic), no silent mis-read
    (:func:`~tgrs_agents.formats.check_readable`), then the OpenAI rules between fields
    (:func:`~tgrs_agents.formats.check_openai`). :func:`parse_line` alone does not apply the last:
    ``tgrs export`` reads curated files with it and repairs tool-call pairing itself.
    """
    try:
        doc = convert(raw)
    except Unreadable as e:
        return _invalid(pos, source, unit, e.field, e.expected, _guess_id(raw), _excerpt(raw))
    except Exception as e:  # noqa: BLE001 - an odd record must not stop the run
        return _invalid(pos, source, unit, None, f"the {fmt.name} reader could not read it "
                        f"({type(e).__name__}: {e})", _guess_id(raw), _excerpt(raw))
    if isinstance(doc, bytes):
        out = parse_line(doc, pos, source, unit=unit)
    else:
        out = parse_record(doc, pos, source, unit=unit, raw=_excerpt(raw),
                           require_assistant=fmt.require_assistant)
    if isinstance(out, Invalid):
        return out
    problem = check_openai(out)
    if problem is None:
        return out
    field, what = problem
    if fmt.name not in ("openai", "openai-ft"):  # the path is in the converted record, not the source's
        what += f" (the path is in the OpenAI messages the {fmt.name} reader made)"
    return _invalid(pos, source, unit, field, what, out.id, doc.decode("utf-8", "replace")
                    if isinstance(doc, bytes) else _excerpt(raw))


FORMAT_FILE = "input-format.json"


def recorded_format(run_dir: Path) -> dict[str, Any] | None:
    """The reader an earlier session on ``run_dir`` used (its positions mean that reader's units)."""
    path = Path(run_dir) / FORMAT_FILE
    return json.loads(path.read_text()) if path.exists() else None


def check_format(run_dir: Path, fmt: Format, *, force: bool) -> bool:
    """Whether ``run_dir`` was read with another reader (then, without ``force``, refuse)."""
    old = recorded_format(run_dir)
    if old is None or old.get("format") == fmt.name:
        return False
    if not force:
        raise RunStoreError(
            f"refusing to continue the run in {run_dir}: it read its input as {old.get('format')!r}, and this "
            f"run would read it as {fmt.name!r} (positions and decisions would not match). Use --input-format "
            f"{old.get('format')} to continue it, or --force to archive that run and start afresh."
        )
    return True


def input_unit(path: Path, fmt: Format) -> str:
    """What a position of ``path`` counts: the reader's unit for a file; ``record`` across a directory."""
    return "record" if Path(path).is_dir() else fmt.open(Path(path)).unit


def remember_format(run_dir: Path, fmt: Format, unit: str) -> None:
    path = Path(run_dir) / FORMAT_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"format": fmt.name, "unit": unit}))
    tmp.replace(path)


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
    path: Path, done: DoneLines, index: IdIndex, *, chunk: int = 512, fmt: str | Format = "auto"
) -> Iterator[tuple[int, list[tuple[int, Candidate | Invalid]]]]:
    """Yield ``(positions read so far, [(position, candidate or invalid), ...])`` for positions not yet done.

    ``path``: a file, or a directory of files read as one input in sorted order (record ``n`` of a
    file is at position ``n`` plus the last position of the files before it: see
    :mod:`tgrs_agents.formats.dirs`). ``fmt``: a reader, or its name, or ``auto``. Blank lines are
    skipped (and counted). The id index is committed before a chunk is handed on, so no decision can
    be written for an id the index does not know. A file that breaks (a JSON array cut short, a zip
    that is not one) sets aside one record and ends that file's read.
    """
    path = Path(path)
    reader = fmt if isinstance(fmt, Format) else resolve(path, fmt)[0]
    places = Places(single=not path.is_dir())
    batch: list[tuple[int, Candidate | Invalid]] = []
    n = 0
    for n, read in _walk(path, reader, places):
        if n in done:
            continue
        item = read()
        if isinstance(item, Invalid) and item.line != n:  # a file of a directory: its own position in the text
            item = replace(item, line=n)
        batch.append((n, item))
        if len(batch) >= chunk:
            yield n, _dedupe(batch, index, places)
            batch = []
    yield n, _dedupe(batch, index, places)


def _walk(path: Path, reader: Format, places: Places) -> Iterator[tuple[int, Callable[[], Candidate | Invalid]]]:
    """``(input position, how to read it)`` for every record of every file of the input, in order."""
    offset = 0
    for file in input_files(path, reader):
        source, last, unit = str(file), 0, "record"
        try:
            src = reader.open(file)
            unit = src.unit
            places.add(offset, source, unit)
            for last, raw in src.records:
                yield offset + last, partial(convert_one, reader, src.convert, raw, last, source, unit)
        except Exception as e:  # noqa: BLE001 - a broken file sets one record aside, never stops the run
            if not places.starts or places.starts[-1] != offset or places.files[-1][0] != source:
                places.add(offset, source, unit)
            last += 1
            detail = e.detail if isinstance(e, InputError) else f"{type(e).__name__}: {e}"
            yield offset + last, partial(_invalid, last, source, unit, None, f"the file ends here: {detail}",
                                         None, "")
        offset += last


class Places:
    """Where an input position is: its file and its position in that file (a directory has many files)."""

    def __init__(self, *, single: bool = True) -> None:
        self.single = single
        self.starts: list[int] = []  # file k holds positions starts[k] + 1 .. starts[k + 1]
        self.files: list[tuple[str, str]] = []  # (file, unit)

    def add(self, offset: int, source: str, unit: str) -> None:
        self.starts.append(offset)
        self.files.append((source, unit))

    def file(self, pos: int) -> tuple[str, int, str]:
        k = bisect_left(self.starts, pos) - 1  # the last file that starts before pos (empty files hold none)
        source, unit = self.files[k]
        return source, pos - self.starts[k], unit

    def where(self, pos: int) -> str:
        source, at, unit = self.file(pos)
        return where(source, at, unit)


def _dedupe(
    batch: list[tuple[int, Candidate | Invalid]], index: IdIndex, places: Places
) -> list[tuple[int, Candidate | Invalid]]:
    ids = [(c.id, line) for line, c in batch if isinstance(c, Candidate)]
    dups = index.claim(ids)
    if not dups:
        return batch
    out: list[tuple[int, Candidate | Invalid]] = []
    for line, c in batch:
        if isinstance(c, Candidate) and line in dups:
            same = " (the id was minted from the content: the same trajectory again)" if MINTED.match(c.id) else ""
            source, _, unit = places.file(line)
            if places.single:
                first = f"{'on line' if unit == 'line' else 'by record'} {dups[line]}"
            else:
                first = f"at {places.where(dups[line])}"
            c = Invalid(line, "id", f"{places.where(line)}: field 'id': expected a unique id; {c.id!r} was "
                        f"first used {first}{same}", c.id, file=source)
        out.append((line, c))
    return out
