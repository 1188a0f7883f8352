"""Crash safety of ``tgrs curate``: SIGKILL a real run at random moments, then let it finish.

The finished run directory must hold exactly what an uninterrupted run on the same input holds
(accepted / rejected / invalid as sets of lines, verdicts, summary counts), no candidate may be
decided twice, no (candidate, teacher) verdict may be journalled twice, and no teacher call whose
verdict reached ``verdicts.jsonl`` before a kill may be made again after it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from tgrs_agents.tasks.arithmetic_data import write_synthetic

ROOT = Path(__file__).resolve().parents[2]
VERIFIERS = ROOT / "teachers" / "panel-verifiers.toml"

# Fields that legitimately differ between two runs of the same input (timings, resume counters).
VOLATILE = frozenset({"latency_s", "t", "wall_s", "mean_latency_s", "reused_from_journal"})
DECISION_FILES = ("accepted", "rejected", "invalid")
COUNT_KEYS = ("input_lines", "valid", "accepted", "rejected", "invalid", "failed", "passed", "pending",
              "calls", "calls_saved")
TEACHER_KEYS = ("calls", "calls_saved", "errors", "passed", "cache_hits")

# An async python teacher that is slow (so verdicts are in flight when the kill lands) and logs
# every call, before returning, to the file named by $TGRS_TEST_CALL_LOG (one O_APPEND write each).
SLOW_TEACHER = '''
import asyncio
import os

from tgrs_agents.teachers.checks import answer_matches_tool

_LOG = os.environ.get("TGRS_TEST_CALL_LOG")
_FD = os.open(_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if _LOG else None


async def check(candidate):
    await asyncio.sleep(0.004)
    result = answer_matches_tool(candidate)
    if _FD is not None:
        os.write(_FD, (candidate.id + "\\n").encode())
    return result
'''


@pytest.fixture(autouse=True)
def private_verdict_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every curate run's verdict ledger out of the user's cache directory."""
    monkeypatch.setenv("TGRS_CACHE_DIR", str(tmp_path / "cache"))


def slow_panel(path: Path, helper: Path, max_concurrency: int) -> Path:
    """format (regex) -> answer (final_answer) -> slow (async python). ``max_concurrency`` is an
    operational knob: panels that differ only in it share a fingerprint, so they give equal runs."""
    path.write_text(
        'policy = "unanimous"\n\n'
        '[[teacher]]\nname = "format"\nkind = "regex"\npattern = "Answer:\\\\s*-?\\\\d"\ncost_rank = 0\n\n'
        '[[teacher]]\nname = "answer"\nkind = "final_answer"\ncost_rank = 1\n\n'
        f'[[teacher]]\nname = "slow"\nkind = "python"\nfunction = "{helper}:check"\ncost_rank = 2\n'
        f"max_concurrency = {max_concurrency}\n"
    )
    return path


def curate_cmd(inp: Path, panel: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "tgrs_agents", "curate", str(inp), "--panel", str(panel),
            "--out", str(out), "--quiet"]


def run_curate(inp: Path, panel: Path, out: Path, env: dict[str, str] | None = None) -> None:
    p = subprocess.run(curate_cmd(inp, panel, out), capture_output=True, text=True, timeout=300,
                       env=env)
    assert p.returncode == 0, f"curate failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"


def whole_lines(path: Path) -> list[bytes]:
    """The complete lines of a JSONL file (a torn last line, left by a kill, is not one)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    return [ln for ln in data[: data.rfind(b"\n") + 1].splitlines() if ln.strip()]


def records(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(ln) for ln in whole_lines(path)]


def normalise(rec: dict[str, Any]) -> dict[str, Any]:
    """A record without its volatile (top-level) fields."""
    return {k: v for k, v in rec.items() if k not in VOLATILE}


def line_set(path: Path) -> set[bytes]:
    return {orjson.dumps(normalise(r), option=orjson.OPT_SORT_KEYS) for r in records(path)}


def counts(summary: dict[str, Any]) -> dict[str, Any]:
    c = {k: summary[k] for k in COUNT_KEYS}
    c["teachers"] = {t: {k: st[k] for k in TEACHER_KEYS} for t, st in summary["teachers"].items()}
    return c


def total(run: Path) -> int:
    """Input lines a finished run decided or set aside."""
    s = json.loads((run / "summary.json").read_text())
    return int(s["valid"] + s["invalid"])


def check_invariants(out: Path) -> None:
    """What must hold in a run directory at every instant, killed or not."""
    decided: list[str] = []
    lines: list[int] = []
    for name in (*DECISION_FILES, "passed"):
        for r in records(out / f"{name}.jsonl"):
            lines.append(r["line"])
            if name != "invalid":
                decided.append(r["id"])
    dup_ids = [k for k, n in Counter(decided).items() if n > 1]
    assert not dup_ids, f"candidates decided twice: {dup_ids[:5]}"
    dup_lines = [k for k, n in Counter(lines).items() if n > 1]
    assert not dup_lines, f"input lines recorded twice: {dup_lines[:5]}"
    pairs = Counter((r["id"], r["line"], r["teacher"]) for r in records(out / "verdicts.jsonl"))
    dup_pairs = [k for k, n in pairs.items() if n > 1]
    assert not dup_pairs, f"(candidate, teacher) verdicts journalled twice: {dup_pairs[:5]}"


def assert_same_run(got: Path, want: Path) -> None:
    for name in DECISION_FILES:
        g, w = line_set(got / f"{name}.jsonl"), line_set(want / f"{name}.jsonl")
        assert g == w, (
            f"{name}.jsonl differs from the uninterrupted run: {len(g - w)} extra, {len(w - g)} missing; "
            f"e.g. extra {sorted(g - w)[:1]} missing {sorted(w - g)[:1]}"
        )
        assert len(whole_lines(got / f"{name}.jsonl")) == len(g), f"duplicate lines in {name}.jsonl"
    assert line_set(got / "verdicts.jsonl") == line_set(want / "verdicts.jsonl")
    sg = json.loads((got / "summary.json").read_text())
    sw = json.loads((want / "summary.json").read_text())
    assert counts(sg) == counts(sw)
    assert sg["pending"] == 0 and sg["failed"] == 0 and sg["stopped"] is None


def progress_marker(out: Path, call_log: Path | None) -> int:
    """Bytes of work this directory (or the call log) shows; grows while a run makes progress."""
    paths = [out / "verdicts.jsonl", out / "invalid.jsonl"] + ([call_log] if call_log else [])
    return sum(p.stat().st_size for p in paths if p.exists())


def kill_repeatedly(
    inp: Path, panel: Path, out: Path, *, rng: random.Random, kills: int, first_max_s: float,
    max_delay_s: float, env: dict[str, str] | None = None, call_log: Path | None = None,
) -> list[dict[str, Any]]:
    """Start ``tgrs curate`` ``kills`` times on ``out`` and SIGKILL it each time.

    The first session is killed at a random moment up to ``first_max_s`` after it starts (in
    start-up, recovery or early work); each later one at a random moment up to ``max_delay_s``
    after it has shown progress of its own. Returns, per kill, whether the process was still
    running, and what the directory and call log held right after it died.
    """
    snapshots: list[dict[str, Any]] = []
    for k in range(kills):
        before = progress_marker(out, call_log)
        proc = subprocess.Popen(curate_cmd(inp, panel, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, env=env)
        try:
            if k == 0:
                time.sleep(rng.uniform(0.0, first_max_s))
            else:
                deadline = time.monotonic() + 60
                while (proc.poll() is None and progress_marker(out, call_log) <= before
                       and time.monotonic() < deadline):
                    time.sleep(0.01)
                time.sleep(rng.uniform(0.0, max_delay_s))
            alive = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(timeout=60)
            err = proc.stderr.read().decode() if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
        assert proc.returncode in (0, -signal.SIGKILL), f"curate crashed ({proc.returncode}):\n{err}"
        snap: dict[str, Any] = {
            "alive": alive,
            "decided": sum(len(whole_lines(out / f"{name}.jsonl")) for name in DECISION_FILES),
        }
        if call_log is not None:  # what the slow teacher had been asked, and what was journalled
            check_invariants(out)
            snap["slow_verdict_ids"] = {
                r["id"] for r in records(out / "verdicts.jsonl") if r["teacher"] == "slow"
            }
            logged = [ln.decode() for ln in whole_lines(call_log)]
            snap["calls_logged"], snap["logged_ids"] = len(logged), set(logged)
        snapshots.append(snap)
    return snapshots


@pytest.mark.slow
def test_sigkill_at_random_moments_then_finish_equals_uninterrupted(tmp_path: Path) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 30_000, seed=11, bad_every=89, per_task=4)
    ref = tmp_path / "ref"
    t0 = time.monotonic()
    run_curate(inp, VERIFIERS, ref)
    t_ref = time.monotonic() - t0  # kill moments scale with this machine's speed
    out = tmp_path / "killed"
    snaps = kill_repeatedly(inp, VERIFIERS, out, rng=random.Random(20240611), kills=6,
                            first_max_s=0.25 * t_ref, max_delay_s=0.05 * t_ref)
    print("decided after each kill:", [s["decided"] for s in snaps])
    assert sum(s["alive"] for s in snaps) >= 4, "too few kills landed while curate was running"
    assert snaps[-1]["decided"] < total(ref), "the killed sessions finished the run; nothing was tested"
    run_curate(inp, VERIFIERS, out)
    check_invariants(out)
    assert_same_run(out, ref)


@pytest.mark.slow
def test_sigkill_with_verdicts_in_flight_never_pays_twice(tmp_path: Path) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 5_000, seed=12, bad_every=101, per_task=3)
    helper = tmp_path / "slow_teacher.py"
    helper.write_text(SLOW_TEACHER)
    fast = slow_panel(tmp_path / "fast.toml", helper, max_concurrency=64)
    slow = slow_panel(tmp_path / "slow.toml", helper, max_concurrency=4)
    ref = tmp_path / "ref"
    run_curate(inp, fast, ref)

    out = tmp_path / "killed"
    log = tmp_path / "calls.log"
    env = {**os.environ, "TGRS_TEST_CALL_LOG": str(log)}
    # the slow teacher bounds the pace (4 at a time, 4 ms each), so fixed moments suit any machine
    snaps = kill_repeatedly(inp, slow, out, rng=random.Random(7), kills=6, first_max_s=0.8,
                            max_delay_s=0.6, env=env, call_log=log)
    print("decided after each kill:", [s["decided"] for s in snaps])
    assert sum(s["alive"] for s in snaps) >= 4, "too few kills landed while curate was running"
    assert snaps[-1]["decided"] < total(ref), "the killed sessions finished the run; nothing was tested"
    assert any(s["logged_ids"] - s["slow_verdict_ids"] for s in snaps), (
        "no kill caught a slow verdict in flight; the test did not exercise what it is for"
    )
    run_curate(inp, slow, out, env=env)
    check_invariants(out)
    assert_same_run(out, ref)

    calls = [ln.decode() for ln in whole_lines(log)]
    for k, s in enumerate(snaps):
        again = s["slow_verdict_ids"].intersection(calls[s["calls_logged"]:])
        assert not again, (
            f"kill {k}: teacher 'slow' was called again for {len(again)} candidates whose verdict "
            f"was already in verdicts.jsonl, e.g. {sorted(again)[:3]}"
        )
    # every journalled slow verdict was paid for, and the run as a whole asked for each one
    final = Counter(r["id"] for r in records(out / "verdicts.jsonl") if r["teacher"] == "slow")
    assert set(final) <= set(calls)
    assert sum(final.values()) == json.loads((out / "summary.json").read_text())["teachers"]["slow"]["calls"]
