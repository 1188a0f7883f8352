"""Helpers for the reader tests: read a file the way ``tgrs curate`` does, and check tool-call pairing."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tgrs_agents.curate.ingest import IdIndex, Invalid, read_chunks
from tgrs_agents.curate.store import DoneLines
from tgrs_agents.types import Candidate

FIXTURES = Path(__file__).parent / "fixtures"
REAL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "formats"


def read(path: Path, tmp: Path, fmt: str = "auto", done: DoneLines | None = None,
         ) -> tuple[dict[int, Candidate], dict[int, Invalid]]:
    """{position: candidate}, {position: set-aside record}, through ``read_chunks``."""
    index = IdIndex(Path(tempfile.mkdtemp(dir=tmp)) / "ids.sqlite")  # a fresh index per read
    good: dict[int, Candidate] = {}
    bad: dict[int, Invalid] = {}
    try:
        for _, chunk in read_chunks(path, done or DoneLines(), index, fmt=fmt):
            for pos, item in chunk:
                (bad if isinstance(item, Invalid) else good)[pos] = item  # type: ignore[index]
    finally:
        index.close()
    return good, bad


def assert_paired(c: Candidate) -> None:
    """Every tool message answers a call made earlier and not yet answered (a source may reuse an id in
    a later turn, as SWE-agent's replays do), and every call has an id."""
    waiting: set[str] = set()
    for i, m in enumerate(c.messages):
        for tc in m.tool_calls or []:
            assert tc.id, f"{c.id}: messages[{i}] has a tool call without an id"
            waiting.add(tc.id)
        if m.role == "tool":
            assert m.tool_call_id in waiting, f"{c.id}: messages[{i}] answers {m.tool_call_id!r}, not waiting"
            waiting.discard(m.tool_call_id)


def calls(c: Candidate) -> list[tuple[str, str, str]]:
    return [(tc.id or "", tc.function.name, str(tc.function.arguments))
            for m in c.messages for tc in m.tool_calls or []]


def roles(c: Candidate) -> list[str]:
    return [m.role for m in c.messages]


def extra(m: Any, key: str) -> Any:
    return (m.model_extra or {}).get(key)
