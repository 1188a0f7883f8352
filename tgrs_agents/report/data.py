"""Read a run directory (one curate run, or an expert-iteration loop of them) for the report.

One pass over each run's decision files, failed events and verdicts gives, per candidate: its
decision, messages and tools, and every teacher's verdict. They become two compact blobs for the
page (gzipped JSON, base64): a small *index* (columns for filtering and the list) shown at once,
and the *details* (messages, verdicts) decompressed in the background.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ..curation.layout import CurateDir, LoopDir
from ..errors import RunStoreError
from .agreement import MISSING

STATUS = ("accepted", "rejected", "passed", "failed", "pending")  # passed: accepted, best_k not final
_DECISIONS = (("accepted", 0), ("rejected", 1), ("passed", 2))


@dataclass
class Source:
    round: int | None
    dir: Path
    summary: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _lines(path: Path) -> Any:
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


@dataclass
class RunData:
    kind: str
    summary: dict[str, Any]
    sources: list[Source]
    teachers: list[str] = field(default_factory=list)
    cols: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in (
        "id", "task", "st", "by", "score", "rnd", "reason", "line", "msgs", "tl", "saved")})
    verdicts: list[dict[str, list[Any]]] = field(default_factory=list)
    latency: dict[tuple[int | None, str], list[float]] = field(default_factory=dict)
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (t, status) of curate decisions
    tasks: _Interner = field(default_factory=_Interner)
    reasons: _Interner = field(default_factory=_Interner)
    names: _Interner = field(default_factory=_Interner)  # deciding teachers (and "best_k")
    tools: _Interner = field(default_factory=_Interner)
    _rows: dict[tuple[int | None, int], int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.cols["id"])

    def _row(self, rnd: int | None, line: int, cand_id: str, task: str, status: int, rec: dict[str, Any]) -> int:
        c = self.cols
        i = self._rows[(rnd, line)] = self.n
        c["id"].append(cand_id)
        c["task"].append(self.tasks(task))
        c["st"].append(status)
        by = rec.get("decided_by")
        c["by"].append(self.names(by) if by else -1)
        c["score"].append(round(float(rec.get("score") or 0.0), 4))
        c["rnd"].append(-1 if rnd is None else rnd)
        c["reason"].append(self.reasons(str(rec.get("reason") or "")))
        c["line"].append(line)
        msgs = rec.get("messages")
        c["msgs"].append(orjson.dumps(msgs).decode() if msgs is not None else "")
        c["tl"].append(self.tools(orjson.dumps(rec.get("tools") or []).decode()))
        c["saved"].append(rec.get("saved") or [])
        self.verdicts.append({})
        return i

    def read(self, src: Source) -> None:
        rnd = src.round
        for name, status in _DECISIONS:
            for raw in _lines(CurateDir(src.dir).jsonl(name)):
                rec = orjson.loads(raw)
                if (rnd, rec["line"]) not in self._rows:
                    self._row(rnd, rec["line"], str(rec.get("id", "")), str(rec.get("task_id", "")), status, rec)
        for raw in _lines(CurateDir(src.dir).jsonl("events")):
            if b'"accepted"' not in raw and b'"rejected"' not in raw and b'"failed"' not in raw:
                continue
            ev = orjson.loads(raw)
            kind = ev.get("type")
            if kind == "failed" and (rnd, ev.get("line")) not in self._rows:
                self._row(rnd, ev["line"], str(ev.get("candidate_id", "")), "", 3, ev)
            elif kind in ("accepted", "rejected") and "t" in ev:
                self.timeline.append((float(ev["t"]), 0 if kind == "accepted" else 1))
        for raw in _lines(CurateDir(src.dir).jsonl("verdicts")):
            v = orjson.loads(raw)
            key = (rnd, v["line"])
            i = self._rows.get(key)
            if i is None:
                i = self._row(rnd, v["line"], str(v.get("id", "")), "", 4, {"reason": "no decision recorded yet"})
            t = v["teacher"]
            if t not in self.teachers:
                self.teachers.append(t)
            err = v.get("error")
            self.verdicts[i][t] = [bool(v.get("passed")) if err is None else None, v.get("score"),
                                   v.get("rationale") or "", bool(v.get("cached")),
                                   v.get("cost_usd") or 0.0, v.get("latency_s") or 0.0, err]
            if not v.get("cached") and err is None:
                self.latency.setdefault((rnd, t), []).append(float(v.get("latency_s") or 0.0))
        self._from_input(src)

    def _from_input(self, src: Source) -> None:
        """Failed and pending candidates have no decision line: take their messages from the input."""
        want = {line: i for (r, line), i in self._rows.items() if r == src.round and not self.cols["msgs"][i]}
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
                        continue
                    self.cols["task"][i] = self.tasks(str(rec.get("task_id", "")))
                    self.cols["msgs"][i] = orjson.dumps(rec.get("messages")).decode()
                    self.cols["tl"][i] = self.tools(orjson.dumps(rec.get("tools") or []).decode())
                if not want:
                    break

    def finish(self) -> None:
        """Put the candidates in input order (round, then line)."""
        order = sorted(range(self.n), key=lambda i: (self.cols["rnd"][i], self.cols["line"][i]))
        for k, v in self.cols.items():
            self.cols[k] = [v[i] for i in order]
        self.verdicts = [self.verdicts[i] for i in order]
        self._rows.clear()

    def labels(self) -> np.ndarray:
        out = np.full((len(self.teachers), self.n), MISSING, dtype=np.int8)
        for ti, t in enumerate(self.teachers):
            for i, vs in enumerate(self.verdicts):
                v = vs.get(t)
                if v is not None and v[0] is not None:
                    out[ti, i] = 1 if v[0] else 0
        return out

    def panel(self) -> np.ndarray:
        st = np.asarray(self.cols["st"], dtype=np.int8)
        return np.select([st == 0, st == 1, st == 2], [1, 0, 1], MISSING).astype(np.int8)

    def marks(self, i: int) -> str:
        """One letter per teacher: P passed, F failed, E error, S saved by short-circuit, . not asked."""
        vs, saved = self.verdicts[i], self.cols["saved"][i]
        return "".join("S" if t in saved and t not in vs else "." if t not in vs else
                       "E" if vs[t][0] is None else "P" if vs[t][0] else "F" for t in self.teachers)


def load_run(run_dir: str | Path) -> RunData:
    kind, summary, sources = find_sources(Path(run_dir))
    data = RunData(kind, summary, sources)
    for s in sources:
        for t in s.summary.get("teachers", {}):
            if t not in data.teachers:
                data.teachers.append(t)
    for s in sources:
        data.read(s)
    data.finish()
    return data


def _pack(obj: Any) -> str:
    return base64.b64encode(gzip.compress(orjson.dumps(obj), compresslevel=6, mtime=0)).decode()


def payloads(data: RunData) -> tuple[str, str]:
    """(index, details) blobs for the page."""
    c = data.cols
    tix = {t: j for j, t in enumerate(data.teachers)}
    index = {
        "teachers": data.teachers, "names": data.names.values, "tasks": data.tasks.values,
        "reasons": data.reasons.values, "status": list(STATUS),
        "rounds": sorted({s.round for s in data.sources if s.round is not None}),
        **{k: c[k] for k in ("id", "task", "st", "by", "score", "rnd", "reason", "line")},
        "marks": [data.marks(i) for i in range(data.n)],
    }
    details = {
        "tools": data.tools.values, "tl": c["tl"], "msgs": c["msgs"], "saved": c["saved"],
        "v": [[[tix[t], *v] for t, v in vs.items()] for vs in data.verdicts],
    }
    return _pack(index), _pack(details)
