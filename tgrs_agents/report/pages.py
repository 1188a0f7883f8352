"""The trajectory browser's data, joined from a :class:`~.data.RunData`'s spill one page at a time.

Two kinds of payload, each gzipped JSON in base64: the *index* (per candidate: id, task, status,
decider, score, round, reason, line and one mark per teacher, for the list and its filters) and the
*details* (per candidate: messages, tools offered, saved teachers and verdicts, for the row a user
opens). A small run embeds both in the page. Above ``PAGED_ABOVE`` candidates neither is in the
page: it carries only the index's shared tables (teachers, tasks, reasons, ...), and both are
written beside it as ``report-data/index-K.js`` and ``details-K.js``, scripts that hand their blob
to the page (``tgrsIndex(K, "...")``), so the browser loads them from ``file://`` as it needs
them. The messages and verdicts are never parsed again: they were serialised once, when the run
was read, and are joined here as bytes (``orjson.Fragment``), so memory holds one page at a time.
"""

from __future__ import annotations

import base64
import gzip
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .data import STATUS, RunData
from .spill import Blocks, gather

PAGED_ABOVE = 10_000  # candidates: above this the browser's data is paged from files beside the page
PAGE_ROWS = 2_000  # candidates per details file
INDEX_ROWS = 20_000  # candidates per index file
DATA_DIR = "report-data"
LEVEL = 4  # gzip: within a few % of level 6's size at half its time on these payloads
_INDEX_COLS = ("task", "st", "by", "score", "rnd", "reason", "line")


def pack(payload: Any) -> str:
    """gzipped JSON (``payload`` already serialised, or an object to serialise) in base64."""
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return base64.b64encode(gzip.compress(raw, compresslevel=LEVEL, mtime=0)).decode()


def json_list(values: list[Any], chunk: int = 4096) -> orjson.Fragment:
    """A long list as JSON, a chunk at a time: orjson sizes its buffer by the list's length (about
    256 bytes an item), which for a run's 250,000 task ids is 64 MB for a 3 MB answer."""
    return orjson.Fragment(b"[" + b",".join(orjson.dumps(values[i:i + chunk])[1:-1]
                                             for i in range(0, len(values), chunk)) + b"]")


def index_head(data: RunData) -> dict[str, Any]:
    """The index's shared tables: what the columns' numbers stand for."""
    return {"teachers": data.teachers, "names": data.names.values, "tasks": data.tasks.json(),
            "reasons": data.reasons.json(), "status": list(STATUS),
            "rounds": sorted({s.round for s in data.sources if s.round is not None})}


def index_json(data: RunData, start: int, stop: int, head: bool = True) -> bytes:
    """The browser's index of rows ``start`` to ``stop`` (with the shared tables when ``head``)."""
    rows = data.rows(start, stop)
    body = {"id": orjson.Fragment(data.ids_json(start, stop)),
            **{k: np.ascontiguousarray(rows[k]) for k in _INDEX_COLS},
            "marks": json_list(data.marks_of(start, stop))}
    return orjson.dumps({**index_head(data), **body} if head else body, option=orjson.OPT_SERIALIZE_NUMPY)


def _list(items: Any) -> orjson.Fragment:
    return orjson.Fragment(b"[" + b",".join(items) + b"]")


def details_json(data: RunData, start: int, stop: int) -> bytes:
    """The browser's details of rows ``start`` to ``stop``: messages (a JSON string each), tools offered,
    saved teachers and verdicts (``[teacher, passed, score, rationale, cached, cost, latency, error,
    service, wait]``, the last one per teacher), joined from the spill."""
    rows = data.rows(start, stop)
    mo, ml = rows["mo"].tolist(), rows["ml"].tolist()
    have = [j for j, n in enumerate(ml) if n]
    msgs = [b'""'] * len(rows)
    for j, b in zip(have, gather(data.spill, [mo[j] for j in have], [ml[j] for j in have]), strict=True):
        msgs[j] = b
    blocks, verdicts = Blocks(data.spill), []
    for off in rows["vh"].tolist():
        last = dict(data.verdicts_at(off, blocks))  # a teacher heard twice (a resumed run): its last verdict
        verdicts.append(b"[" + b",".join(last.values()) + b"]")
    sets = [s.encode() for s in data.saved_sets.values]
    return orjson.dumps({"tools": data.tools.values, "tl": np.ascontiguousarray(rows["tl"]), "msgs": _list(msgs),
                         "saved": _list(sets[k] for k in rows["saved"].tolist()), "v": _list(verdicts)},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def _pages(folder: Path, name: str, call: str, n: int, rows: int, make: Any) -> dict[str, Any]:
    for k, start in enumerate(range(0, n, rows)):
        (folder / f"{name}-{k}.js").write_text(f'{call}({k}, "{pack(make(start, min(start + rows, n)))}");\n')
    return {"pages": -(-n // rows), "rows": rows, "dir": folder.name}


def write_pages(data: RunData, folder: Path, rows: int = PAGE_ROWS, index_rows: int = INDEX_ROWS,
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write ``folder/details-K.js`` (``rows`` candidates each) and ``folder/index-K.js`` (``index_rows``
    each) to a new folder that then replaces the old one; returns (details, index) as the page's meta
    describes them. One page is in memory at a time."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    details = _pages(tmp, "details", "tgrsDetails", data.n, rows, lambda a, b: details_json(data, a, b))
    index = _pages(tmp, "index", "tgrsIndex", data.n, index_rows, lambda a, b: index_json(data, a, b, head=False))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return {**details, "dir": folder.name}, {**index, "dir": folder.name}
