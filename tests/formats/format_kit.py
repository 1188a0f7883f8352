"""Helpers for the reader tests: read a file the way ``tgrs curate`` does, check tool-call pairing, and
run ``tgrs curate`` as a process (a panel with a free recorded-reward stage and a slow checker)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from tgrs_agents.curation.ingest import IdIndex, Invalid, read_chunks
from tgrs_agents.curation.store import DoneLines
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


# ------------------------------------------------------------------------------------ curate runs

SLOW = """
import asyncio

async def check(candidate):
    await asyncio.sleep(0.01)
    return "cancelled" in candidate.final_text
"""


def panel(tmp_path: Path) -> Path:
    (tmp_path / "slow.py").write_text(SLOW)
    p = tmp_path / "panel.toml"
    p.write_text('policy = "unanimous"\n\n[[teacher]]\nname = "reward"\nkind = "metadata"\nfield = "reward"\n'
                 'threshold = 1.0\n\n[[teacher]]\nname = "slow"\nkind = "python"\n'
                 f'function = "{tmp_path / "slow.py"}:check"\ncost_rank = 1\nmax_concurrency = 2\n')
    return p


def cmd(inp: Path, pnl: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tgrs_agents", "curate", str(inp), "--panel", str(pnl), "--out", str(out),
            "--quiet", *extra]


def decided(out: Path) -> dict[str, set[tuple[int, str | None]]]:
    res = {}
    for name in ("accepted", "rejected", "invalid"):
        path = out / f"{name}.jsonl"
        recs = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
        res[name] = {(r["line"], r["id"]) for r in recs}
        assert len(res[name]) == len(recs), f"{name}: a record was written twice"
    return res


def count(out: Path) -> int:
    return sum(len(p.read_text().splitlines()) for n in ("accepted", "rejected") if (p := out / f"{n}.jsonl").exists())


def kill_after(command: list[str], out: Path, decided_at_least: int = 150) -> None:
    """Start ``command`` and SIGKILL it once ``out`` holds that many decisions (it must still be running)."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while count(out) < decided_at_least and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
