"""JSONL files that survive kills, bad records and damage: the run directory's lowest layer.

* Whole files are replaced atomically (:func:`atomic_write`); appends happen in whole lines.
* A line cut short by a kill is the *last* line, and recovery cuts it (:func:`cut_partial_line`).
* A damaged line in the *middle* (an old two-writer run, a disk that filled mid-write, a hand edit)
  is set aside, not fatal: :func:`scan` skips it, and :func:`set_aside` moves it out of the file
  into ``torn-lines.jsonl`` (file, line number, raw text) so every later reader sees clean JSONL.
* What the writer cannot write is found *before* it is needed: :func:`unwritable` names the field
  of a record that does not serialise (an integer wider than 64 bits passes pydantic, then makes
  orjson fail), and :func:`candidate_problem` applies it to an input record at ingest, so such a
  record is set aside as invalid instead of crashing the recorder on every resume.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from ..chat import parse_arguments, template_messages
from ..types import Candidate

TORN = "torn-lines.jsonl"
_UNWRITABLE = (TypeError, orjson.JSONEncodeError)


def atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open("rb") as f:
        for raw in f:
            if raw.strip():
                yield orjson.loads(raw)


def cut_partial_line(path: Path) -> int:
    """Truncate ``path`` after its last newline; returns the bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        pos = size
        while pos > 0:
            step = min(1 << 16, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                keep = pos - step + nl + 1
                break
            pos -= step
        else:
            keep = 0
        f.truncate(keep)
    return size - keep


def has_line(rec: dict[str, Any]) -> dict[str, Any]:
    """A record check for outputs keyed by input position: the record, or KeyError/TypeError."""
    if not isinstance(rec["line"], int):
        raise TypeError("line is not an integer")
    return rec


def scan(path: Path, check: Callable[[dict[str, Any]], Any] = lambda r: r,
         bad: list[tuple[int, bytes]] | None = None) -> Iterator[Any]:
    """``check(record)`` for each whole line that parses as a JSON object and passes ``check``.

    Lines that do not (and a last line without its newline) are skipped and, with ``bad``, listed
    there as (line number, raw bytes).
    """
    if not path.exists():
        return
    with path.open("rb") as f:
        for no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                if not raw.endswith(b"\n"):
                    raise ValueError("no newline")
                rec = orjson.loads(raw)
                if not isinstance(rec, dict):
                    raise TypeError("not an object")
                value = check(rec)
            except (ValueError, TypeError, KeyError, AttributeError):
                if bad is not None:
                    bad.append((no, raw))
                continue
            yield value


def set_aside(path: Path, bad: list[tuple[int, bytes]]) -> str:
    """Move the ``bad`` lines of ``path`` to ``torn-lines.jsonl`` beside it; returns the warning.

    Safe to repeat after a kill: the file is replaced atomically once the lines are saved.
    """
    aside = path.with_name(TORN)
    with aside.open("ab") as f:
        for no, raw in bad:
            f.write(orjson.dumps({"file": path.name, "line_no": no,
                                  "raw": raw.decode("utf-8", "replace").rstrip("\n")}) + b"\n")
    drop = {no for no, _ in bad}
    tmp = path.with_name(path.name + ".tmp")
    with path.open("rb") as src, tmp.open("wb") as dst:
        for no, raw in enumerate(src, 1):
            if no not in drop:
                dst.write(raw)
    os.replace(tmp, path)
    first = min(drop)
    return (f"{path}:{first}: {len(bad)} damaged line(s) (not whole JSON records) set aside in {aside}; "
            "the candidates they held are judged again (verdicts already paid are reused)")


# --- what the writer can write ----------------------------------------------------------------
def sft_row(cand: Candidate) -> dict[str, Any]:
    """The trajectory fields of a decision record: what an SFT trainer reads (id, task_id, messages
    with tool-call arguments as objects, as TRL renders them, and tools).

    Equal to ``template_messages(cand.sft_record()["messages"])`` (tested), built in one dump whose
    fresh dicts are edited in place: it runs once per decided candidate, a third cheaper this way.
    """
    msgs = cand.model_dump(mode="json", include={"messages"}, exclude_none=True)["messages"]
    for m in msgs:
        calls = m.get("tool_calls")
        if calls:
            for tc in calls:
                fn = tc.get("function")
                if fn is not None and isinstance(fn.get("arguments"), str):
                    fn["arguments"] = parse_arguments(fn["arguments"])
            m.setdefault("content", "")
    return {"id": cand.id, "task_id": cand.task_id, "messages": msgs, "tools": cand.tools}


def unwritable(doc: Any, path: str = "") -> tuple[str, str] | None:
    """(field path, why) of the first value in ``doc`` that orjson cannot write; None if it can."""
    try:
        orjson.dumps(doc)
        return None
    except _UNWRITABLE as e:
        return _locate(doc, path, str(e))


def _locate(value: Any, path: str, why: str) -> tuple[str, str]:
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list | tuple):
        items = enumerate(value)
    else:
        items = ()
    for k, v in items:
        sub = f"{path}[{k}]" if isinstance(k, int) else (f"{path}.{k}" if path else str(k))
        try:
            orjson.dumps(v)
        except _UNWRITABLE as e:
            return _locate(v, sub, str(e))
        if isinstance(value, dict):
            try:
                orjson.dumps({k: None})
            except _UNWRITABLE as e:
                return sub, f"the key itself: {e}"
    return (path or "(record)")[:300], why


def candidate_problem(c: Candidate) -> tuple[str, str] | None:
    """Why a validated candidate could not be written back out (field, what), or None.

    Everything the run writes or hashes from it is checked: the whole record, with tool-call
    arguments parsed as the decision records carry them.
    """
    doc = c.model_dump(mode="json", exclude_none=True)
    doc["messages"] = template_messages(doc["messages"])
    found = unwritable(doc)
    if found is None:
        return None
    field, why = found
    return field, (f"a value the run cannot write back out as JSON ({why}); write numbers wider "
                   "than 64 bits as strings")


def sanitize(value: Any) -> Any:
    """A copy of ``value`` that any JSON writer can write (for records that are being set aside):
    strings with invalid code points replaced, integers wider than 64 bits as strings."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if -(1 << 63) <= value < (1 << 64) else str(value)
    if isinstance(value, dict):
        return {sanitize(str(k)): sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    return sanitize(str(value))
