"""The verdict ledger: a content-addressed SQLite cache, so no verdict is paid for twice.

Key = sha256 of (the teacher's identity: kind, model, decoding parameters, endpoint; the hash of
its prompt template and rubric; the hash of the candidate's content: messages, tools, reference).
Operational knobs (limits, timeouts, prices, key variable) stay out of the key, so tuning them keeps
every cached verdict; changing the prompt or the rubric misses, as it must.

The file lives in the user's cache directory by default (``$TGRS_CACHE_DIR``, else
``$XDG_CACHE_HOME/tgrs-agents``, else ``~/.cache/tgrs-agents``), is shared across runs and rounds,
uses WAL so several runs (several processes) can share it, and is created with mode 0600. Only
verdicts without errors are stored; no key or secret ever is. A run checks the file before its first
call (``PRAGMA quick_check``): a ledger that cannot be opened or checked stops the run right there,
naming the file and offering ``--no-cache``, instead of turning every verdict into an error.

Each verdict is stored with its usage and cost and with ``owed``: the run that paid for it, until
that run's journal holds it (:meth:`Ledger.settle`). A run killed in between finds its own verdict
here on resume and counts its cost once (:meth:`Ledger.take`), neither as free nor twice; any other
run (or a later hit of the same run) gets it for free, as it should.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from ..errors import ConfigError
from ..types import Candidate, Verdict


def default_ledger_path() -> Path:
    root = os.environ.get("TGRS_CACHE_DIR")
    if root:
        return Path(root) / "verdicts.sqlite"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "tgrs-agents" / "verdicts.sqlite"


def content_hash(candidate: Candidate) -> str:
    """What the judge sees of a candidate: messages, tools and reference (not ids or metadata)."""
    blob = orjson.dumps(
        {
            "messages": [m.model_dump(mode="json", exclude_none=True) for m in candidate.messages],
            "tools": candidate.tools,
            "reference": candidate.reference,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(blob).hexdigest()


def teacher_key(identity: dict[str, Any], prompt_text: str) -> str:
    blob = json.dumps({"teacher": identity, "prompt": prompt_text}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Ledger:
    """SQLite verdict cache. Safe to share between processes (WAL, busy timeout).

    ``owner`` is the id of the run using it (set by the run; None: nothing is owed, e.g. a dry run).
    """

    def __init__(self, path: str | Path | None = None, *, owner: str | None = None) -> None:
        self.path = Path(path) if path else default_ledger_path()
        self.owner = owner
        self.failure: BaseException | None = None  # a write that failed mid-run (the run halts)
        self._db: sqlite3.Connection | None = None
        self.hits = 0
        self.misses = 0

    @property
    def db(self) -> sqlite3.Connection:
        """Opened on first use, so a run that fails its checks leaves no file behind."""
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            os.chmod(self.path, 0o600)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            try:
                self._wal(db)
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, teacher TEXT, "
                    "verdict TEXT NOT NULL, created REAL, owed TEXT)"
                )
                columns = {row[1] for row in db.execute("PRAGMA table_info(verdicts)")}
                if "owed" not in columns:  # a ledger written before verdicts carried their payer
                    try:
                        db.execute("ALTER TABLE verdicts ADD COLUMN owed TEXT")
                    except sqlite3.OperationalError as e:  # another process added it just now
                        if "duplicate column" not in str(e):
                            raise
            except BaseException:
                db.close()
                raise
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.chmod(side, 0o600)
            self._db = db
        return self._db

    @staticmethod
    def _wal(db: sqlite3.Connection) -> None:
        """Switch a fresh file to WAL. Two processes opening one new file at once can get "database
        is locked" here without SQLite's busy handler ever waiting (switching the journal mode takes
        an exclusive lock), so wait and try again, as the busy timeout would, for up to 30 s."""
        deadline = time.monotonic() + 30
        pause = 0.005
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.2)

    def check(self) -> None:
        """Open the file and run ``PRAGMA quick_check``: raise :class:`ConfigError` naming the file
        (and the way out) if it cannot be used. A run calls this before its first paid call."""
        try:
            rows = self.db.execute("PRAGMA quick_check").fetchall()
        except (sqlite3.Error, OSError) as e:
            raise ConfigError(self.advice(e), file=self.path) from None
        if rows != [("ok",)]:
            found = "; ".join(str(r[0]) for r in rows[:3])
            raise ConfigError(self.advice(f"PRAGMA quick_check: {found}"), file=self.path)

    def advice(self, cause: object) -> str:
        """What the user reads when the ledger fails: the cause and the two ways on."""
        return (f"the verdict ledger cannot be used ({cause}). Run with --no-cache, or --cache with "
                "another file; this file only caches verdicts (move it away to start a new one)")

    def get(self, key: str) -> Verdict | None:
        row = self.db.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Verdict.model_validate_json(row[0])

    def take(self, key: str) -> tuple[Verdict, bool] | None:
        """The stored verdict, and whether this run owes its cost: it paid for it, and its journal
        never got it (a kill in between). The debt is claimed here, once: a second take is free."""
        row = self.db.execute("SELECT verdict, owed FROM verdicts WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        owes = False
        if self.owner is not None and row[1] == self.owner:
            cur = self.db.execute("UPDATE verdicts SET owed = NULL WHERE key = ? AND owed = ?",
                                  (key, self.owner))
            owes = cur.rowcount == 1
        return Verdict.model_validate_json(row[0]), owes

    def put(self, key: str, verdict: Verdict) -> None:
        """Store a verdict with its usage; owed by this run until :meth:`settle`."""
        if verdict.error is not None:
            return
        self.db.execute(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?)",
            (key, verdict.teacher, verdict.model_dump_json(), time.time(), self.owner),
        )

    def settle(self, key: str) -> None:
        """This run's journal now holds the verdict: nothing is owed for it any more."""
        if self.owner is not None:
            self.db.execute("UPDATE verdicts SET owed = NULL WHERE key = ? AND owed = ?",
                            (key, self.owner))

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
