"""Read a run directory (one curate run, or an expert-iteration loop of them) for the report.

One streaming pass over each run's decision files, failed events and verdicts parses every record
once. Each candidate becomes a fixed-width record on disk (:mod:`.columns`: status, round, line,
score, interned task/reason/decider, where its id and messages lie in the spill); what the browser
shows of it -- its id, its messages as one JSON string, each verdict as one JSON array -- is
serialised there and then into spill files beside the run and remembered by offset, never held.
While reading, memory holds a line map, each candidate's last verdict offset and one label byte per
teacher (about 20 bytes a candidate); :meth:`RunData.finish` writes the records out in input order
with those, and frees them. Many distinct task ids are interned through SQLite (:mod:`.intern`).
Latency percentiles come from constant-size sketches. The browser's data is then joined from those
bytes in input order, one page of candidates at a time (:mod:`.pages`), with no second parse, and
the statistics are computed a chunk at a time (:mod:`.stats`).
"""

from __future__ import annotations

import functools
import json
import tempfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..curation.layout import CurateDir, LoopDir
from ..errors import RunStoreError
from ..events import Sketch
from .agreement import MISSING
from .columns import DECIDED, Column, RecordFile
from .intern import Interner
from .spill import VERDICT, Blocks, LatencyBatch, Spill, gather

STATUS = ("accepted", "rejected", "passed", "failed", "pending")  # passed: accepted, best_k not final
_DECISIONS = (("accepted", 0), ("rejected", 1), ("passed", 2))
_NONE = 255  # a label not given (MISSING as an unsigned byte)
_ERROR = 2  # asked, but the teacher failed: no judgement
_MARK = np.frombuffer(b"FPE", dtype=np.uint8)  # a label's letter (0 failed, 1 passed, 2 error)


@functools.lru_cache(maxsize=1024)
def _saved_names(text: str) -> tuple[str, ...]:
    """A short-circuit's saved teachers (one of a few distinct JSON lists), parsed once each."""
    return tuple(json.loads(text))


@dataclass
class Source:
    round: int | None
    dir: Path
    summary: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _lines(path: Path) -> Iterator[bytes]:
    """Every whole line of ``path`` (a torn last line is left out)."""
    if path.exists():
        with path.open("rb") as f:
            for raw in f:
                if raw.endswith(b"\n"):
                    yield raw


def find_sources(run_dir: Path) -> tuple[str, dict[str, Any], list[Source]]:
    """("loop" | "curate", the top summary, the curate runs with their round)."""
    loop, run = LoopDir(run_dir), CurateDir(run_dir)
    summary = _read_json(loop.summary)
    if "rounds" in summary:
        rounds = sorted({int(r["round"]) for r in summary["rounds"]} | set(loop.curated_rounds()))
        curated = [(r, loop.round(r).curate) for r in rounds if loop.round(r).curate.dir.is_dir()]
        return "loop", summary, [Source(r, c.dir, _read_json(c.summary)) for r, c in curated]
    if summary or run.jsonl("verdicts").exists() or run.jsonl("accepted").exists():
        return "curate", summary, [Source(None, run_dir, summary)]
    nested = CurateDir(run_dir / "curate")  # where `tgrs demo-curate` puts its run
    hint = f"; did you mean {nested.dir}?" if nested.summary.exists() else ""
    raise RunStoreError(f"{run_dir} is not a run directory (no summary.json, verdicts.jsonl or "
                        f"accepted.jsonl){hint}")


@dataclass
class RunData:
    """Every candidate of a run as records on disk (``cols``: one :class:`~.columns.Column` per field
    once :meth:`finish` ran; :meth:`rows` reads a slice of them), its id in ``idspill`` (a JSON string
    at ``io``/``il``), and where its messages (``mo``/``ml``) and verdicts lie, serialised, in the spill
    file: ``vh`` is the offset of a candidate's last verdict, each verdict there begins with the offset
    of the one before it (-1 for its first), so memory holds nothing per verdict; ``l0``, ``l1``, ...
    are its label from each teacher (0/1, ``_ERROR``, ``_NONE``)."""

    kind: str
    summary: dict[str, Any]
    sources: list[Source]
    teachers: list[str] = field(default_factory=list)
    cols: dict[str, Column] = field(default_factory=dict)  # once :meth:`finish` ran: input order, on disk
    vh: Any = field(default_factory=lambda: array("q"))  # while reading: each row's last verdict
    label_rows: list[bytearray] = field(default_factory=list)  # per teacher: 0/1, _ERROR, _NONE
    errors: dict[str, int] = field(default_factory=dict)  # error verdicts per teacher
    latency: dict[tuple[int | None, str], dict[str, Sketch]] = field(default_factory=dict)
    tasks: Interner = field(default_factory=Interner)
    reasons: Interner = field(default_factory=Interner)
    names: Interner = field(default_factory=Interner)  # deciding teachers (and "best_k")
    tools: Interner = field(default_factory=Interner)
    saved_sets: Interner = field(default_factory=Interner)  # JSON lists of saved teachers
    spill_dir: Path | None = None
    _rows: Any = field(default_factory=lambda: array("i"))  # line -> row (-1: none), of the source being read

    def __post_init__(self) -> None:
        self._tix: dict[str, int] = {t: i for i, t in enumerate(self.teachers)}
        near = self.spill_dir or (self.sources[0].dir if self.sources else Path(tempfile.gettempdir()))
        self.spill, self.idspill = Spill(near), Spill(near)
        for interner in (self.tasks, self.reasons, self.names, self.tools, self.saved_sets):
            interner.near = near  # many distinct values move to a scratch SQLite file there
        self.records = RecordFile(near)  # in the order met; :meth:`finish` sorts it to input order
        self.decided = RecordFile(near, DECIDED)  # curate decisions over time (time, 0 accepted / 1 rejected)
        self._orders: list[Any] = []  # per source read: its rows in line order

    @property
    def n(self) -> int:
        return len(self.records)

    @property
    def timeline(self) -> list[tuple[float, int]]:
        return list(zip(self.decided.field("t").tolist(), self.decided.field("s").tolist(), strict=True))

    def _teacher(self, name: str) -> int:
        t = self._tix.get(name)
        if t is None:
            t = self._tix[name] = len(self.teachers)
            self.teachers.append(name)
            self.label_rows.append(bytearray())
        return t

    def _row_of(self, line: int) -> int:
        return self._rows[line] if 0 <= line < len(self._rows) else -1

    def _row(self, rnd: int | None, line: int, cand_id: str, task: str, status: int, rec: dict[str, Any]) -> int:
        get, rows = rec.get, self._rows
        i = len(self.records)
        if line >= len(rows):
            rows.extend([-1] * (max(line + 1, 2 * len(rows)) - len(rows)))
        rows[line] = i
        io, il = self.idspill.put(orjson.dumps(cand_id))
        by = get("decided_by")
        saved, tools = get("saved"), get("tools")
        mo, ml = self._spill_messages(get("messages"))
        self.records.append((self.tasks(task), status, self.names(by) if by else -1,
                             round(float(get("score") or 0.0), 4), -1 if rnd is None else rnd,
                             self.reasons(str(get("reason") or "")), line,
                             self.saved_sets(orjson.dumps(saved).decode() if saved else "[]"),
                             self.tools(orjson.dumps(tools).decode() if tools else "[]"), io, il, mo, ml))
        self.vh.append(-1)
        return i  # its labels: _NONE until a verdict sets one (label rows grow as verdicts come)

    def _spill_messages(self, msgs: Any) -> tuple[int, int]:
        """Spill messages as the JSON string the browser parses ((0, 0): none)."""
        return self.spill.put(orjson.dumps(orjson.dumps(msgs).decode())) if msgs is not None else (0, 0)

    def read(self, src: Source) -> None:
        rnd = src.round
        self._rows = array("i")
        run = CurateDir(src.dir)
        for name, status in _DECISIONS:
            for raw in _lines(run.jsonl(name)):
                rec = orjson.loads(raw)
                if self._row_of(rec["line"]) < 0:
                    self._row(rnd, rec["line"], str(rec.get("id", "")), str(rec.get("task_id", "")), status, rec)
        for raw in _lines(run.jsonl("events")):
            if b'"accepted"' not in raw and b'"rejected"' not in raw and b'"failed"' not in raw:
                continue
            ev = orjson.loads(raw)
            kind = ev.get("type")
            if kind == "failed" and self._row_of(ev.get("line", -1)) < 0:
                self._row(rnd, ev["line"], str(ev.get("candidate_id", "")), "", 3, ev)
            elif kind in ("accepted", "rejected") and "t" in ev:
                self.decided.append((float(ev["t"]), 0 if kind == "accepted" else 1))
        lat: dict[tuple[str, str], LatencyBatch] = {}
        for raw in _lines(run.jsonl("verdicts")):
            self._verdict(rnd, orjson.loads(raw), lat)
        for (name, key), b in lat.items():
            self.latency.setdefault((rnd, name), {}).setdefault(key, Sketch()).merge(b.flush())
        self._from_input(src)
        rows = np.frombuffer(self._rows, dtype=np.int32)
        self._orders.append(rows[rows >= 0].copy())
        self._rows = array("i")

    def _verdict(self, rnd: int | None, v: dict[str, Any], lat: dict[tuple[str, str], LatencyBatch]) -> None:
        get, line, name = v.get, v["line"], v["teacher"]
        i = self._rows[line] if 0 <= line < len(self._rows) else -1
        if i < 0:
            i = self._row(rnd, line, str(get("id", "")), "", 4, {"reason": "no decision recorded yet"})
        t = self._tix.get(name)
        if t is None:
            t = self._teacher(name)
        err, passed = get("error"), bool(get("passed"))
        frag = orjson.dumps([t, passed if err is None else None, get("score"), get("rationale") or "",
                             bool(get("cached")), get("cost_usd") or 0.0, get("latency_s") or 0.0, err,
                             get("service_s"), get("wait_s")])
        vh = self.vh
        vh[i] = self.spill.put(VERDICT.pack(vh[i], len(frag), t) + frag)[0]
        lab = self.label_rows[t]
        if i >= len(lab):
            lab.extend(bytes([_NONE]) * (max(i + 1, 2 * len(lab)) - len(lab)))
        lab[i] = _ERROR if err is not None else int(passed)
        if err is not None:
            self.errors[name] = self.errors.get(name, 0) + 1
        elif not get("cached"):
            keys = ("latency_s", "service_s", "wait_s") if "service_s" in v or "wait_s" in v else ("latency_s",)
            for key in keys:  # a paid call: where its time went, too
                b = lat.get((name, key))
                if b is None:
                    b = lat[(name, key)] = LatencyBatch()
                b.add(float(get(key) or 0.0))

    def _from_input(self, src: Source) -> None:
        """Failed and pending candidates have no decision line: take their messages from the input."""
        rows = np.frombuffer(self._rows, dtype=np.int32)
        lines = np.flatnonzero(rows >= 0)
        no_msgs = self.records.field("ml")[rows[lines]] == 0
        want = dict(zip(lines[no_msgs].tolist(), rows[lines][no_msgs].tolist(), strict=True))
        path = Path(_read_json(CurateDir(src.dir).meta).get("input", ""))
        if not want or not path.is_file():
            return
        with path.open("rb") as f:
            for line, raw in enumerate(f, 1):
                i = want.pop(line, None)
                if i is not None:
                    try:
                        rec = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        rec = None
                    if isinstance(rec, dict):
                        mo, ml = self._spill_messages(rec.get("messages"))
                        self.records.set(i, task=self.tasks(str(rec.get("task_id", ""))), mo=mo, ml=ml,
                                         tl=self.tools(orjson.dumps(rec.get("tools") or []).decode()))
                    if not want:
                        break

    def finish(self) -> None:
        """Put the candidates in input order (round, then line), as numpy columns."""
        self.spill.flush()
        self.idspill.flush()
        n = len(self.records)
        # sources are read in round order and each one's rows listed in line order: that is input order
        order = np.concatenate(self._orders) if self._orders else np.zeros(0, np.int32)
        if len(order) != n:  # rows no line map saw (cannot happen for well-formed runs): sort them
            order = np.lexsort((self.records.field("line"), self.records.field("rnd")))
        vh = np.frombuffer(self.vh, dtype=np.int64) if n else np.zeros(0, np.int64)
        labs = [np.frombuffer(bytes(lab[:n]) + bytes([_NONE]) * (n - len(lab)), dtype=np.uint8)
                for lab in self.label_rows]  # rows grew lazily
        extra: dict[str, tuple[Any, Any]] = {"vh": ("<i8", vh.__getitem__)}
        for t, lab in enumerate(labs):
            extra[f"l{t}"] = ("u1", lab.__getitem__)
        raw, self.records = self.records, self.records.sorted(order, extra)
        raw.close()
        self.vh, self.label_rows, self._orders = array("q"), [], []
        self.cols = {k: Column(self.records, k) for k in self.records.dtype.names or ()}

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` to ``stop`` (input order) as records: one field a column."""
        return self.records.rows(start, stop)

    def verdicts(self, i: int, blocks: Blocks) -> list[tuple[int, bytes]]:
        """Row ``i``'s verdicts, (teacher, JSON array), in the order they were written."""
        return self.verdicts_at(int(self.cols["vh"][i]), blocks)

    def verdicts_at(self, off: int, blocks: Blocks) -> list[tuple[int, bytes]]:
        """The verdicts of the row whose last verdict is spilled at ``off``, in the order written."""
        out = []
        while off >= 0:
            prev, n, t = VERDICT.unpack(blocks.get(off, VERDICT.size))
            out.append((t, blocks.get(off + VERDICT.size, n)))
            off = prev
        return out[::-1]

    def ids(self, start: int = 0, stop: int | None = None) -> list[str]:
        return orjson.loads(self.ids_json(start, self.n if stop is None else stop))

    def ids_json(self, start: int, stop: int) -> bytes:
        """Rows ``start`` to ``stop``'s ids as a JSON list, joined from the blob."""
        rows = self.rows(start, stop)
        return b"[" + b",".join(gather(self.idspill, rows["io"].tolist(), rows["il"].tolist())) + b"]"

    def labels(self) -> np.ndarray:
        out = np.full((len(self.teachers), self.n), MISSING, dtype=np.int8)
        for ti in range(len(self.teachers)):
            raw = np.asarray(self.cols[f"l{ti}"])
            out[ti] = np.where(raw <= 1, raw, MISSING).astype(np.int8)
        return out

    def panel(self) -> np.ndarray:
        st = np.asarray(self.cols["st"], dtype=np.int8)
        return np.select([st == 0, st == 1, st == 2], [1, 0, 1], MISSING).astype(np.int8)

    def saved(self, i: int) -> list[str]:
        return list(_saved_names(self.saved_sets.values[int(self.cols["saved"][i])]))

    def independent(self) -> np.ndarray:
        """Candidates whose every verdict was given regardless of the others: none was cut short by the
        cascade (agreement statistics count only these; see :mod:`.agreement`)."""
        empty = np.array([s == "[]" for s in self.saved_sets.values] or [True])
        return empty[np.asarray(self.cols["saved"], dtype=np.int64)] if self.n else np.zeros(0, bool)

    def marks_of(self, start: int, stop: int) -> list[str]:
        """Per row, one letter per teacher: P passed, F failed, E error, S saved by short-circuit, . not asked."""
        T = len(self.teachers)
        if not T or start >= stop:
            return [""] * max(stop - start, 0)
        sets = [_saved_names(s) for s in self.saved_sets.values]
        grid = np.empty((stop - start, T), dtype=np.uint8)
        rows = self.rows(start, stop)
        saved = rows["saved"].astype(np.int64)
        for t, name in enumerate(self.teachers):
            raw = rows[f"l{t}"]
            in_set = np.array([name in s for s in sets] or [False])[saved]
            grid[:, t] = np.where(raw <= 2, _MARK[np.minimum(raw, 2)], np.where(in_set, ord("S"), ord(".")))
        flat = grid.tobytes().decode("ascii")
        return [flat[j:j + T] for j in range(0, len(flat), T)]

    def marks(self, i: int) -> str:
        return self.marks_of(i, i + 1)[0]

    def close(self) -> None:
        self.spill.close()
        self.idspill.close()
        self.records.close()
        self.decided.close()
        for interner in (self.tasks, self.reasons, self.names, self.tools, self.saved_sets):
            interner.close()


def load_run(run_dir: str | Path) -> RunData:
    kind, summary, sources = find_sources(Path(run_dir))
    data = RunData(kind, summary, sources, spill_dir=Path(run_dir))
    for s in sources:
        for t in s.summary.get("teachers", {}):
            data._teacher(t)
    for s in sources:
        data.read(s)
    data.finish()
    return data


def payloads(data: RunData) -> tuple[str, str]:
    """(index, details) blobs for a page that embeds all of its data."""
    from .pages import details_json, index_json, pack

    return pack(index_json(data, 0, data.n)), pack(details_json(data, 0, data.n))
