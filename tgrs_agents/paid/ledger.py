"""The verdict ledger: a content-addressed SQLite cache, so no verdict is paid for twice.

Key = sha256 of (the teacher's identity: kind, model, decoding parameters, endpoint; the hash of
its prompt template and rubric; the hash of the candidate's content: messages, tools, reference).
Operational knobs (limits, timeouts, prices, key variable) stay out of the key, so tuning them keeps
every cached verdict; changing the prompt or the rubric misses, as it must.

The file lives in the user's cache directory by default (``$TGRS_CACHE_DIR``, else
``$XDG_CACHE_HOME/tgrs-agents``, else ``~/.cache/tgrs-agents``), is shared across runs and rounds,
uses WAL so several runs can share it, and is created with mode 0600. Only verdicts without errors
are stored; no key or secret ever is.
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
    """SQLite verdict cache. Safe to share between processes (WAL, busy timeout)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_ledger_path()
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
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, teacher TEXT, "
                "verdict TEXT NOT NULL, created REAL)"
            )
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.chmod(side, 0o600)
            self._db = db
        return self._db

    def get(self, key: str) -> Verdict | None:
        row = self.db.execute("SELECT verdict FROM verdicts WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Verdict.model_validate_json(row[0])

    def put(self, key: str, verdict: Verdict) -> None:
        if verdict.error is not None:
            return
        self.db.execute(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?)",
            (key, verdict.teacher, verdict.model_dump_json(), time.time()),
        )

    def __len__(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
