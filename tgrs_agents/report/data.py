"""Read a run directory (one curate run, or an expert-iteration loop of them) for the report.

Memory stays flat in the size of the run: one pass over each run's decision files, failed events
and verdicts keeps, per candidate, only a few numbers in compact arrays (status, round, line,
score, interned task/reason/decider, one label per teacher) and *where* its messages and verdicts
lie on disk (file and byte offset), never the messages, rationales or verdict records themselves;
latency percentiles come from constant-size sketches. The browser's data is then built from those
offsets in input order, one page of candidates at a time (:meth:`RunData.details`): a small run
embeds it in the page as one gzipped blob, a large one writes it beside the page in files the
browser loads as it needs them (see :mod:`.html`).
"""

from __future__ import annotations

import base64
import functools
import gzip
import json
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

from ..curation.layout import CurateDir, LoopDir
from ..errors import RunStoreError
from ..events import Sketch
from .agreement import MISSING

STATUS = ("accepted", "rejected", "passed", "failed", "pending")  # passed: accepted, best_k not final
_DECISIONS = (("accepted", 0), ("rejected", 1), ("passed", 2))
_NONE = 255  # a label not given (MISSING as an unsigned byte)
_ERROR = 2  # asked, but the teacher failed: no judgement


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


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of every whole line of ``path`` (a torn last line is left out)."""
    if path.exists():
        with path.open("rb") as f:
            off = 0
            for raw in f:
                if raw.endswith(b"\n"):
                    yield off, raw
                off += len(raw)


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


class _Interner:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.values: list[str] = []

    def __call__(self, value: str) -> int:
        i = self.index.get(value)
        if i is None:
            i = self.index[value] = len(self.values)
            self.values.append(value)
        return i


def _columns() -> dict[str, Any]:
    return {"id": [], "task": array("i"), "st": array("b"), "by": array("i"), "score": array("d"),
            "rnd": array("i"), "reason": array("i"), "line": array("q"), "saved": array("i"),
            "tl": array("i"), "src": array("i"), "off": array("q")}


@dataclass
class RunData:
    """Every candidate of a run as compact columns (numpy arrays once :meth:`finish` ran; ``id`` is a
    list) plus where its messages (``src``, ``off``) and verdicts (``vrow``, ``voff``) are on disk."""

    kind: str
    summary: dict[str, Any]
    sources: list[Source]
    teachers: list[str] = field(default_factory=list)
    cols: dict[str, Any] = field(default_factory=_columns)
    files: list[Path] = field(default_factory=list)  # what ``src`` and ``vsrc`` index
    vrow: Any = field(default_factory=lambda: array("i"))  # per verdict: its candidate's row
    vsrc: Any = field(default_factory=lambda: array("i"))
    voff: Any = field(default_factory=lambda: array("q"))
    label_rows: list[bytearray] = field(default_factory=list)  # per teacher: 0/1, _ERROR, _NONE
    errors: dict[str, int] = field(default_factory=dict)  # error verdicts per teacher
    latency: dict[tuple[int | None, str], dict[str, Sketch]] = field(default_factory=dict)
    t_decided: Any = field(default_factory=lambda: array("d"))  # curate decisions over time
    s_decided: Any = field(default_factory=lambda: array("b"))
    tasks: _Interner = field(default_factory=_Interner)
    reasons: _Interner = field(default_factory=_Interner)
    names: _Interner = field(default_factory=_Interner)  # deciding teachers (and "best_k")
    tools: _Interner = field(default_factory=_Interner)
    saved_sets: _Interner = field(default_factory=_Interner)  # JSON lists of saved teachers
    _rows: dict[int, int] = field(default_factory=dict)  # line -> row, of the source being read

    @property
    def n(self) -> int:
        return len(self.cols["id"])

    @property
    def timeline(self) -> list[tuple[float, int]]:
        return list(zip(self.t_decided, self.s_decided, strict=True))

    def _teacher(self, name: str) -> int:
        if name not in self.teachers:
            self.teachers.append(name)
        while len(self.label_rows) < len(self.teachers):
            self.label_rows.append(bytearray([_NONE]) * self.n)
        return self.teachers.index(name)

    def _file(self, path: Path) -> int:
        if path not in self.files:
            self.files.append(path)
        return self.files.index(path)

    def _row(self, rnd: int | None, line: int, cand_id: str, task: str, status: int, rec: dict[str, Any],
             src: int, off: int) -> int:
        c = self.cols
        i = self._rows[line] = self.n
        c["id"].append(cand_id)
        c["task"].append(self.tasks(task))
        c["st"].append(status)
        by = rec.get("decided_by")
        c["by"].append(self.names(by) if by else -1)
        c["score"].append(round(float(rec.get("score") or 0.0), 4))
        c["rnd"].append(-1 if rnd is None else rnd)
        c["reason"].append(self.reasons(str(rec.get("reason") or "")))
        c["line"].append(line)
        c["saved"].append(self.saved_sets(orjson.dumps(rec.get("saved") or []).decode()))
        c["tl"].append(self.tools(orjson.dumps(rec.get("tools") or []).decode()))
        c["src"].append(src if rec.get("messages") is not None else -1)
        c["off"].append(off)
        for lab in self.label_rows:
            lab.append(_NONE)
        return i

    def read(self, src: Source) -> None:
        rnd = src.round
        self._rows = {}
        run = CurateDir(src.dir)
        for name, status in _DECISIONS:
            fi = self._file(run.jsonl(name))
            for off, raw in _lines(run.jsonl(name)):
                rec = orjson.loads(raw)
                if rec["line"] not in self._rows:
                    self._row(rnd, rec["line"], str(rec.get("id", "")), str(rec.get("task_id", "")), status, rec,
                              fi, off)
        for _, raw in _lines(run.jsonl("events")):
            if b'"accepted"' not in raw and b'"rejected"' not in raw and b'"failed"' not in raw:
                continue
            ev = orjson.loads(raw)
            kind = ev.get("type")
            if kind == "failed" and ev.get("line") not in self._rows:
                self._row(rnd, ev["line"], str(ev.get("candidate_id", "")), "", 3, ev, -1, 0)
            elif kind in ("accepted", "rejected") and "t" in ev:
                self.t_decided.append(float(ev["t"]))
                self.s_decided.append(0 if kind == "accepted" else 1)
        vf = self._file(run.jsonl("verdicts"))
        for off, raw in _lines(run.jsonl("verdicts")):
            v = orjson.loads(raw)
            i = self._rows.get(v["line"])
            if i is None:
                i = self._row(rnd, v["line"], str(v.get("id", "")), "", 4, {"reason": "no decision recorded yet"},
                              -1, 0)
            t = self._teacher(v["teacher"])
            err = v.get("error")
            self.vrow.append(i)
            self.vsrc.append(vf)
            self.voff.append(off)
            self.label_rows[t][i] = _ERROR if err is not None else int(bool(v.get("passed")))
            if err is not None:
                self.errors[v["teacher"]] = self.errors.get(v["teacher"], 0) + 1
            elif not v.get("cached"):
                sk = self.latency.setdefault((rnd, v["teacher"]), {})
                sk.setdefault("latency_s", Sketch()).add(float(v.get("latency_s") or 0.0))
                if "service_s" in v or "wait_s" in v:  # a paid call: where its time went
                    sk.setdefault("service_s", Sketch()).add(float(v.get("service_s") or 0.0))
                    sk.setdefault("wait_s", Sketch()).add(float(v.get("wait_s") or 0.0))
        self._from_input(src)
        self._rows = {}

    def _from_input(self, src: Source) -> None:
        """Failed and pending candidates have no decision line: take their messages from the input."""
        c = self.cols
        want = {line: i for line, i in self._rows.items() if c["src"][i] < 0}
        path = Path(_read_json(CurateDir(src.dir).meta).get("input", ""))
        if not want or not path.is_file():
            return
        fi = self._file(path)
        with path.open("rb") as f:
            off = 0
            for line, raw in enumerate(f, 1):
                i = want.pop(line, None)
                if i is not None:
                    try:
                        rec = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        rec = None
                    if isinstance(rec, dict):
                        c["task"][i] = self.tasks(str(rec.get("task_id", "")))
                        c["tl"][i] = self.tools(orjson.dumps(rec.get("tools") or []).decode())
                        if rec.get("messages") is not None:
                            c["src"][i], c["off"][i] = fi, off
                    if not want:
                        break
                off += len(raw)

    def finish(self) -> None:
        """Put the candidates in input order (round, then line), as numpy columns."""
        c = self.cols
        order = np.lexsort((np.frombuffer(c["line"], dtype=np.int64), np.frombuffer(c["rnd"], dtype=np.int32)))
        dtypes = {"b": np.int8, "i": np.int32, "q": np.int64, "d": np.float64}
        for k, v in c.items():
            if k == "id":
                c[k] = [v[i] for i in order]
            else:
                c[k] = np.frombuffer(v, dtype=dtypes[v.typecode])[order] if len(v) else np.zeros(0, dtypes[v.typecode])
        self.label_rows = [bytearray(np.frombuffer(lab, dtype=np.uint8)[order].tobytes()) for lab in self.label_rows]
        rank = np.empty(len(order), dtype=np.int64)
        rank[order] = np.arange(len(order))
        vrow = rank[np.frombuffer(self.vrow, dtype=np.int32)] if len(self.vrow) else np.zeros(0, np.int64)
        by_row = np.argsort(vrow, kind="stable")  # a candidate's verdicts in file order
        self.vrow = vrow[by_row]
        self.vsrc = np.frombuffer(self.vsrc, dtype=np.int32)[by_row] if len(self.vsrc) else np.zeros(0, np.int32)
        self.voff = np.frombuffer(self.voff, dtype=np.int64)[by_row] if len(self.voff) else np.zeros(0, np.int64)

    def labels(self) -> np.ndarray:
        out = np.full((len(self.teachers), self.n), MISSING, dtype=np.int8)
        for ti, lab in enumerate(self.label_rows):
            raw = np.frombuffer(bytes(lab), dtype=np.uint8)
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

    def marks(self, i: int) -> str:
        """One letter per teacher: P passed, F failed, E error, S saved by short-circuit, . not asked."""
        saved = self.saved(i)
        return "".join("PFE"[(1, 0, 2).index(lab[i])] if lab[i] != _NONE else "S" if name in saved else "."
                       for name, lab in zip(self.teachers, self.label_rows, strict=True))

    # --- reading back from disk ------------------------------------------------------------------
    def _handle(self, fi: int) -> IO[bytes]:
        h = self._open.get(fi)
        if h is None:
            h = self._open[fi] = self.files[fi].open("rb")
        return h

    def _read_at(self, fi: int, off: int) -> dict[str, Any] | None:
        h = self._handle(fi)
        h.seek(off)
        try:
            rec = orjson.loads(h.readline())
        except orjson.JSONDecodeError:
            return None
        return rec if isinstance(rec, dict) else None

    def _verdict(self, j: int) -> dict[str, Any] | None:
        return self._read_at(int(self.vsrc[j]), int(self.voff[j]))

    def details(self, start: int, stop: int) -> dict[str, Any]:
        """The browser's details of rows ``start`` to ``stop``: messages, tools, saved teachers and
        verdicts, read back from the run's files."""
        tix = {t: j for j, t in enumerate(self.teachers)}
        c = self.cols
        out: dict[str, Any] = {"tools": self.tools.values, "tl": [], "msgs": [], "saved": [], "v": []}
        lo = int(np.searchsorted(self.vrow, start))
        try:
            for i in range(start, stop):
                rec = self._read_at(int(c["src"][i]), int(c["off"][i])) if c["src"][i] >= 0 else None
                msgs = rec.get("messages") if rec is not None else None
                out["msgs"].append(orjson.dumps(msgs).decode() if msgs is not None else "")
                out["tl"].append(int(c["tl"][i]))
                out["saved"].append(self.saved(i))
                vs: dict[str, list[Any]] = {}
                while lo < len(self.vrow) and self.vrow[lo] == i:
                    v = self._verdict(lo)
                    lo += 1
                    if v is None:
                        continue
                    vs[v["teacher"]] = [bool(v.get("passed")) if v.get("error") is None else None, v.get("score"),
                                        v.get("rationale") or "", bool(v.get("cached")), v.get("cost_usd") or 0.0,
                                        v.get("latency_s") or 0.0, v.get("error"), v.get("service_s"),
                                        v.get("wait_s")]
                out["v"].append([[tix[t], *v] for t, v in vs.items()])
        finally:
            self.close()
        return out

    def close(self) -> None:
        for h in self._open.values():
            h.close()
        self._open.clear()

    def __post_init__(self) -> None:
        self._open: dict[int, IO[bytes]] = {}


def load_run(run_dir: str | Path) -> RunData:
    kind, summary, sources = find_sources(Path(run_dir))
    data = RunData(kind, summary, sources)
    for s in sources:
        for t in s.summary.get("teachers", {}):
            data._teacher(t)
    for s in sources:
        data.read(s)
    data.finish()
    return data


def pack(obj: Any) -> str:
    return base64.b64encode(gzip.compress(orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY),
                                          compresslevel=6, mtime=0)).decode()


def index_of(data: RunData) -> dict[str, Any]:
    """The browser's index: a few columns per candidate, for the list and its filters."""
    c = data.cols
    return {
        "teachers": data.teachers, "names": data.names.values, "tasks": data.tasks.values,
        "reasons": data.reasons.values, "status": list(STATUS),
        "rounds": sorted({s.round for s in data.sources if s.round is not None}),
        **{k: c[k] for k in ("id", "task", "st", "by", "score", "rnd", "reason", "line")},
        "marks": [data.marks(i) for i in range(data.n)],
    }


def payloads(data: RunData) -> tuple[str, str]:
    """(index, details) blobs for a page that embeds all of its data."""
    return pack(index_of(data)), pack(data.details(0, data.n))
