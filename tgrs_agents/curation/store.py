"""The run directory: append-only JSONL outputs, group commits, and resume after any kill.

Files under ``DIR``::

    config.toml      the resolved panel             run.json       input and panel fingerprints, run id
    events.jsonl     the journal (run + decision events)
    verdicts.jsonl   one line per teacher verdict   accepted.jsonl / rejected.jsonl  decisions
    invalid.jsonl    input lines set aside          summary.json   counts, per-teacher figures
    passed.jsonl     (best_k only) candidates the policy accepted, before the per-task cut
    .lock            held by the one process that owns the run (tgrs_agents.curation.lock)
    torn-lines.jsonl damaged lines that recovery took out of the files above (rare)

Crash safety without fsync-per-record. A *paid* verdict (one that made a request) is written to
``verdicts.jsonl`` the moment it arrives (:meth:`RunStore.write_now`: one ``write`` of a whole line,
with O_APPEND); everything else is buffered and written in *group commits*, always in the order
verdicts -> decisions -> events. A ``kill -9`` therefore loses no paid verdict that had arrived, and
can only cut the tail of a commit. On resume every file is cut back to its last whole line (a
damaged line in the middle is set aside, see :mod:`tgrs_agents.curation.jsonl`); a candidate is done
iff its decision line survived (it is then skipped, never written twice); the verdicts of
candidates that were not done are read back and reused, so no teacher is paid twice.

fsync policy: none per record or per commit (``write`` hands the bytes to the kernel, which keeps
them across the death of the process); each file is fsynced once, when the run closes. So a power
cut or an OS crash can lose the last seconds of writes (recovery then cuts what is torn, and the
verdicts lost are still in the verdict ledger); a killed process loses nothing it wrote.

A write that fails (disk full, read-only, permissions) is undone back to the last whole line, the
store refuses further writes, and the error names the file and the cause: the run stops, and resumes
exactly where it stopped once the cause is fixed.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..errors import RunStoreError
from ..events import TeacherStats
from ..types import Usage, Verdict
from .jsonl import atomic_write, cut_partial_line, has_line, iter_jsonl, scan, set_aside, write_all
from .layout import CurateDir
from .lock import LOCK_NAME

__all__ = ["OUTPUTS", "DoneLines", "ResumeState", "RunStore", "atomic_write", "cut_partial_line",
           "input_fingerprint", "io_failure", "iter_jsonl", "verdict_from_record", "verdict_record"]

OUTPUTS = ("verdicts", "passed", "accepted", "rejected", "invalid", "events")
DECISIONS = ("accepted", "rejected", "invalid", "passed")
_COMMIT_BYTES = 1 << 20


def input_fingerprint(path: Path) -> str:
    if path.is_dir():  # a directory of trajectory files: its file list and their contents
        from ..formats import dir_fingerprint

        return dir_fingerprint(path)
    with path.open("rb") as f:
        head = f.read(1 << 16)
    return hashlib.sha256(head).hexdigest()[:16]


def io_failure(e: OSError, path: Path | str, doing: str = "cannot write") -> RunStoreError:
    """One line for an OS error on a run file: the file, the cause, and that the run resumes."""
    cause = e.strerror or str(e)
    if e.errno is not None and e.errno in errno.errorcode:
        cause += f" [{errno.errorcode[e.errno]}]"
    return RunStoreError(f"{e.filename or path}: {doing}: {cause}. Nothing decided is lost: fix the "
                         "cause and run the same command again, the run resumes where it stopped")


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
    run_id: str = ""  # this run's id, kept across resumes (the verdict ledger's ``owed``)


class RunStore:
    """Buffered, ordered, append-only writers for one run directory.

    ``failure`` is set by the first write that failed; from then on nothing more is buffered or
    committed (only paid verdicts are still tried, see :meth:`write_now`).
    ``warnings`` says what recovery set aside.
    """

    def __init__(self, out: str | Path) -> None:
        self.dir = Path(out)
        self.files = CurateDir(self.dir)  # the file names (tgrs_agents.curation.layout)
        self._buf: dict[str, list[bytes]] = {name: [] for name in OUTPUTS}
        self._pending = 0
        self._last_commit = time.monotonic()
        self._fds: dict[str, int] = {}
        self.failure: RunStoreError | None = None
        self.warnings: list[str] = []

    def path(self, name: str) -> Path:
        return self.files.jsonl(name)

    # --- opening and resuming ------------------------------------------------------------------
    def open(
        self, *, panel_toml: str, panel_fp: str, input_path: Path, force: bool = False,
        input_fp: str | None = None,
    ) -> ResumeState:
        """Recover (or start) the run; an OS error is a :class:`RunStoreError` naming the file.
        ``input_fp``: the input's fingerprint when its file is still growing (a streamed round)."""
        target = self.dir
        try:
            return self._open(panel_toml=panel_toml, panel_fp=panel_fp, input_path=input_path,
                              force=force, input_fp=input_fp)
        except OSError as e:
            raise io_failure(e, target, "cannot open the run") from None

    def _open(self, *, panel_toml: str, panel_fp: str, input_path: Path, force: bool,
              input_fp: str | None = None) -> ResumeState:
        self.dir.mkdir(parents=True, exist_ok=True)
        meta_path = self.files.meta
        in_fp = input_fp or input_fingerprint(input_path)
        state = ResumeState()
        run_id = None
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
                run_id = meta.get("run_id")
        state.run_id = run_id or uuid.uuid4().hex
        meta = {
            "input": str(input_path),
            "input_fingerprint": in_fp,
            "panel_fingerprint": panel_fp,
            "run_id": state.run_id,
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
            if p.is_file() and p.name != LOCK_NAME:  # the lock stays: this process holds it
                shutil.move(str(p), dest / p.name)

    def _records(self, name: str, check: Any = has_line) -> Any:
        """The records of an output, damaged lines set aside (once the scan is complete)."""
        bad: list[tuple[int, bytes]] = []
        yield from scan(self.path(name), check, bad)
        if bad:
            self.warnings.append(set_aside(self.path(name), bad))

    def _recover(self) -> ResumeState:
        state = ResumeState(resumed=True)
        self._undo_unfinished_finalize()
        for name in OUTPUTS:
            cut_partial_line(self.path(name))
        saved: dict[str, int] = {}
        for name in DECISIONS:
            for rec in self._records(name):
                state.done.add(rec["line"])
                state.counts[name] += 1
                for t in rec.get("saved", ()):
                    saved[t] = saved.get(t, 0) + 1
        for rec, v in self._records("verdicts", lambda r: (has_line(r), verdict_from_record(r))):
            state.stats.setdefault(v.teacher, TeacherStats()).add(v)
            if rec["line"] not in state.done:
                state.prior.setdefault(rec["line"], {})[v.teacher] = v
        for _ in self._records("events", lambda r: r):
            pass
        for t, n in saved.items():
            state.stats.setdefault(t, TeacherStats()).saved += n
        return state

    def on_disk(self) -> dict[str, int]:
        """Decision records per file as they are on disk (after a failed commit, the counts kept
        in memory include records that were never written)."""
        return {name: sum(1 for _ in scan(self.path(name), has_line)) for name in DECISIONS}

    def scan_done(self) -> DoneLines:
        """Lines already decided, read without changing anything (partial or damaged lines skipped)."""
        done = DoneLines()
        for name in DECISIONS:
            for rec in scan(self.path(name), has_line):
                done.add(rec["line"])
        return done

    # --- writing -------------------------------------------------------------------------------
    def append(self, name: str, record: dict[str, Any]) -> None:
        """Buffer a record for the next commit. A record that does not serialise raises here
        (TypeError / orjson.JSONEncodeError), before anything is buffered."""
        data = orjson.dumps(record) + b"\n"
        if self.failure is not None:
            return  # the store failed: nothing more is written (the run is stopping)
        self._buf[name].append(data)
        self._pending += len(data)

    def write_now(self, name: str, record: dict[str, Any]) -> bool:
        """Write one record at once (a paid verdict: see the module docstring). False when it could
        not be written (then ``failure`` says why); a record that does not serialise raises.

        Tried even after another write failed: a run that is stopping still journals the verdicts
        of the calls it drains (a whole line, or nothing)."""
        data = orjson.dumps(record) + b"\n"
        try:
            self._write(name, data)
        except RunStoreError:
            return False
        return True

    def _write(self, name: str, data: bytes) -> None:
        fd = self._fds[name]
        size = os.fstat(fd).st_size
        try:
            write_all(fd, data)
        except OSError as e:
            try:
                os.ftruncate(fd, size)  # undo a partial line, so the file ends on a whole one
            except OSError:
                pass  # recovery cuts it
            failure = io_failure(e, self.path(name))
            self.failure = self.failure or failure
            raise failure from None

    def maybe_commit(self, interval_s: float = 0.25) -> None:
        if self._pending >= _COMMIT_BYTES or time.monotonic() - self._last_commit >= interval_s:
            self.commit()

    def commit(self) -> None:
        """Write every buffer, in dependency order (verdicts before the decisions they support).

        Raises :class:`RunStoreError` (and drops what is buffered) if the store has failed."""
        try:
            for name in OUTPUTS:
                buf = self._buf[name]
                if buf and self.failure is None:
                    self._write(name, b"".join(buf))
                buf.clear()
        finally:
            if self.failure is not None:
                for buf in self._buf.values():
                    buf.clear()
            self._pending = 0
            self._last_commit = time.monotonic()
        if self.failure is not None:
            raise self.failure

    def close(self, wall_s: float | None = None) -> None:
        """Commit, fsync and close every file; raises :class:`RunStoreError` if a write failed."""
        try:
            self.commit()
        except RunStoreError:
            pass
        for name, fd in self._fds.items():
            try:
                if self.failure is None:
                    os.fsync(fd)
            except OSError as e:
                self.failure = io_failure(e, self.path(name))
            os.close(fd)
        self._fds.clear()
        if wall_s is not None and self.failure is None:
            meta_path = self.files.meta
            try:
                meta = json.loads(meta_path.read_text())
                meta["wall_s"] = wall_s
                atomic_write(meta_path, json.dumps(meta, indent=2))
            except OSError as e:
                self.failure = io_failure(e, meta_path)
        if self.failure is not None:
            raise self.failure

    def write_summary(self, summary: dict[str, Any]) -> None:
        try:
            atomic_write(self.files.summary, json.dumps(summary, indent=2))
        except OSError as e:
            self.failure = self.failure or io_failure(e, self.files.summary)
            raise self.failure from None

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
        # a paid call's split of its latency (service vs waiting for the limiter); absent otherwise
        **({"service_s": round(v.service_s, 6), "wait_s": round(v.wait_s, 6)} if v.service_s or v.wait_s else {}),
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
        service_s=rec.get("service_s", 0.0),
        wait_s=rec.get("wait_s", 0.0),
        cached=rec.get("cached", False),
        error=rec.get("error"),
    )
