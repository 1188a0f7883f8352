"""The run directory: append-only JSONL outputs, group commits, and resume after any kill.

Files under ``DIR``::

    config.toml      the resolved panel             run.json       input and panel fingerprints
    events.jsonl     the journal (run + decision events)
    verdicts.jsonl   one line per teacher verdict   accepted.jsonl / rejected.jsonl  decisions
    invalid.jsonl    input lines set aside          summary.json   counts, per-teacher figures
    passed.jsonl     (best_k only) candidates the policy accepted, before the per-task cut

Crash safety without fsync-per-record: records are buffered and written in *group commits*, always
in the order verdicts -> decisions -> events, each file opened with O_APPEND. A ``kill -9`` can
only lose the tail of a commit. On resume every file is cut back to its last whole line; a
candidate is done iff its decision line survived (it is then skipped, never written twice); the
verdicts of candidates that were not done are read back and reused, so no teacher is paid twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import RunStoreError
from ..events import TeacherStats
from ..types import Usage, Verdict
from .layout import CurateDir

OUTPUTS = ("verdicts", "passed", "accepted", "rejected", "invalid", "events")
_COMMIT_BYTES = 1 << 20


def atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def input_fingerprint(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(1 << 16)
    return hashlib.sha256(head).hexdigest()[:16]


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


class DoneLines:
    """A growable bitmap of input line numbers that are finished (one bit per line)."""

    def __init__(self) -> None:
        self._bits = bytearray(1 << 12)
        self.count = 0

    def add(self, line: int) -> None:
        byte = line >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        mask = 1 << (line & 7)
        if not self._bits[byte] & mask:
            self._bits[byte] |= mask
            self.count += 1

    def __contains__(self, line: int) -> bool:
        byte = line >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (line & 7)))


@dataclass
class ResumeState:
    """What an earlier session on this directory left behind."""

    resumed: bool = False
    done: DoneLines = field(default_factory=DoneLines)
    counts: dict[str, int] = field(
        default_factory=lambda: {"accepted": 0, "rejected": 0, "invalid": 0, "passed": 0}
    )
    prior: dict[int, dict[str, Verdict]] = field(default_factory=dict)
    stats: dict[str, TeacherStats] = field(default_factory=dict)
    wall_s: float = 0.0


class RunStore:
    """Buffered, ordered, append-only writers for one run directory."""

    def __init__(self, out: str | Path) -> None:
        self.dir = Path(out)
        self.files = CurateDir(self.dir)  # the file names (tgrs_agents.curate.layout)
        self._buf: dict[str, list[bytes]] = {name: [] for name in OUTPUTS}
        self._pending = 0
        self._last_commit = time.monotonic()
        self._fds: dict[str, int] = {}

    def path(self, name: str) -> Path:
        return self.files.jsonl(name)

    # --- opening and resuming ------------------------------------------------------------------
    def open(
        self, *, panel_toml: str, panel_fp: str, input_path: Path, force: bool = False
    ) -> ResumeState:
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.files.meta
        in_fp = input_fingerprint(input_path)
        state = ResumeState()
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            problems = self.mismatch(panel_fp=panel_fp, input_fp=in_fp)
            if problems and not force:
                raise self.refusal(problems)
            if problems:
                self._archive()
            else:
                state = self._recover()
                state.wall_s = float(meta.get("wall_s", 0.0))
        meta = {
            "input": str(input_path),
            "input_fingerprint": in_fp,
            "panel_fingerprint": panel_fp,
            "wall_s": state.wall_s,
        }
        atomic_write(meta_path, json.dumps(meta, indent=2))
        atomic_write(self.files.config, panel_toml)
        for name in OUTPUTS:
            self._fds[name] = os.open(self.path(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        return state

    def mismatch(self, *, panel_fp: str, input_fp: str) -> list[str]:
        """Why this directory's run is not the one asked for (empty: it is, or there is none yet)."""
        if not self.files.meta.exists():
            return []
        meta = json.loads(self.files.meta.read_text())
        problems = []
        if meta.get("panel_fingerprint") != panel_fp:
            problems.append(
                f"it was started with another panel (fingerprint {meta.get('panel_fingerprint')}"
                f", this one is {panel_fp}; see {self.dir / 'config.toml'})"
            )
        if meta.get("input_fingerprint") != input_fp:
            problems.append(f"it was started on another input ({meta.get('input')})")
        return problems

    def refusal(self, problems: list[str]) -> RunStoreError:
        return RunStoreError(
            f"refusing to continue the run in {self.dir}: " + "; ".join(problems)
            + ". Use another --out, or --force to archive that run and start afresh."
        )

    def _archive(self) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self.dir / f"archive-{stamp}"
        n = 1
        while dest.exists():  # two --force runs in one second
            n += 1
            dest = self.dir / f"archive-{stamp}-{n}"
        dest.mkdir()
        for p in self.dir.iterdir():
            if p.is_file():
                shutil.move(str(p), dest / p.name)

    def _recover(self) -> ResumeState:
        state = ResumeState(resumed=True)
        self._undo_unfinished_finalize()
        for name in OUTPUTS:
            cut_partial_line(self.path(name))
        saved: dict[str, int] = {}
        for name in ("accepted", "rejected", "invalid", "passed"):
            for rec in iter_jsonl(self.path(name)):
                state.done.add(rec["line"])
                state.counts[name] += 1
                for t in rec.get("saved", ()):
                    saved[t] = saved.get(t, 0) + 1
        for rec in iter_jsonl(self.path("verdicts")):
            v = verdict_from_record(rec)
            state.stats.setdefault(v.teacher, TeacherStats()).add(v)
            if rec["line"] not in state.done:
                state.prior.setdefault(rec["line"], {})[v.teacher] = v
        for t, n in saved.items():
            state.stats.setdefault(t, TeacherStats()).saved += n
        return state

    def scan_done(self) -> DoneLines:
        """Lines already decided, read without changing anything (a partial last line is skipped)."""
        done = DoneLines()
        for name in ("accepted", "rejected", "invalid", "passed"):
            p = self.path(name)
            if not p.exists():
                continue
            with p.open("rb") as f:
                for raw in f:
                    if raw.endswith(b"\n"):
                        done.add(orjson.loads(raw)["line"])
        return done

    # --- writing -------------------------------------------------------------------------------
    def append(self, name: str, record: dict[str, Any]) -> None:
        data = orjson.dumps(record) + b"\n"
        self._buf[name].append(data)
        self._pending += len(data)

    def maybe_commit(self, interval_s: float = 0.25) -> None:
        if self._pending >= _COMMIT_BYTES or time.monotonic() - self._last_commit >= interval_s:
            self.commit()

    def commit(self) -> None:
        """Write every buffer, in dependency order (verdicts before the decisions they support)."""
        for name in OUTPUTS:
            buf = self._buf[name]
            if buf:
                data = b"".join(buf)
                buf.clear()
                view = memoryview(data)
                while view:
                    n = os.write(self._fds[name], view)
                    view = view[n:]
        self._pending = 0
        self._last_commit = time.monotonic()

    def close(self, wall_s: float | None = None) -> None:
        self.commit()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if wall_s is not None:
            meta_path = self.files.meta
            meta = json.loads(meta_path.read_text())
            meta["wall_s"] = wall_s
            atomic_write(meta_path, json.dumps(meta, indent=2))

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.files.summary, json.dumps(summary, indent=2))

    # --- best_k finalisation (idempotent) ------------------------------------------------------
    def _undo_unfinished_finalize(self) -> None:
        marker = self.files.finalize
        if not marker.exists():
            return
        m = json.loads(marker.read_text())
        if m.get("status") == "done":
            return
        with self.path("rejected").open("rb+") as f:
            f.truncate(m["rejected_size"])
        self.path("accepted").unlink(missing_ok=True)
        marker.unlink()

    def finalized(self) -> bool:
        marker = self.files.finalize
        return marker.exists() and json.loads(marker.read_text()).get("status") == "done"

    def finalize_best_k(self, keep: set[int], dropped: dict[int, tuple[int, int]]) -> int:
        """Move the k best of each task from passed.jsonl to accepted.jsonl; the rest to rejected."""
        self.commit()
        marker = self.files.finalize
        size = self.path("rejected").stat().st_size
        atomic_write(marker, json.dumps({"status": "started", "rejected_size": size}))
        tmp = self.path("accepted").with_suffix(".jsonl.tmp")
        n = 0
        with tmp.open("wb") as acc:
            for rec in iter_jsonl(self.path("passed")):
                if rec["line"] in keep:
                    acc.write(orjson.dumps(rec) + b"\n")
                    n += 1
                else:
                    rank, of = dropped[rec["line"]]
                    rec["reason"] = (
                        f"rejected by best_k: ranked {rank} of {of} accepted in task "
                        f"{rec['task_id']!r}; {rec['reason']}"
                    )
                    rec["decided_by"] = "best_k"
                    self.append("rejected", rec)
        self.commit()
        os.replace(tmp, self.path("accepted"))
        atomic_write(marker, json.dumps({"status": "done", "rejected_size": size}))
        return n


def verdict_record(line: int, cand_id: str, v: Verdict) -> dict[str, Any]:
    return {
        "id": cand_id,
        "line": line,
        "teacher": v.teacher,
        "passed": v.passed,
        "score": v.score,
        "rationale": v.rationale,
        "cached": v.cached,
        "cost_usd": v.usage.cost_usd,
        "requests": v.usage.requests,
        "input_tokens": v.usage.input_tokens,
        "output_tokens": v.usage.output_tokens,
        "latency_s": round(v.latency_s, 6),
        "error": v.error,
    }


def verdict_from_record(rec: dict[str, Any]) -> Verdict:
    return Verdict(
        teacher=rec["teacher"],
        passed=rec["passed"],
        score=rec["score"],
        rationale=rec.get("rationale", ""),
        usage=Usage(
            requests=rec.get("requests", 0 if rec.get("cached") else 1),  # older journals lack it
            input_tokens=rec.get("input_tokens", 0),
            output_tokens=rec.get("output_tokens", 0),
            cost_usd=rec.get("cost_usd", 0.0),
        ),
        latency_s=rec.get("latency_s", 0.0),
        cached=rec.get("cached", False),
        error=rec.get("error"),
    )
