"""One owner per run directory (``tgrs_agents.curation.lock``): a second process on the same ``--out``
stops at once naming the holder's pid, the kernel frees the lock when the holder dies (even by
``kill -9``), ``--force`` archives everything but the lock, and ``tgrs run`` directories are locked
too. Without the lock, two ``tgrs curate`` processes on one directory both ran: every decision was
written twice and every paid verdict paid twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tgrs_agents.cli import main as cli_main
from tgrs_agents.curation.layout import LoopDir
from tgrs_agents.curation.lock import LOCK_NAME, run_lock
from tgrs_agents.errors import RunStoreError
from tgrs_agents.tasks.arithmetic_data import write_synthetic

ROOT = Path(__file__).resolve().parents[2]
VERIFIERS = ROOT / "teachers" / "panel-verifiers.toml"
HOLD = "import sys, time\nfrom tgrs_agents.curation.lock import run_lock\nwith run_lock(sys.argv[1]):\n" \
       "    print('locked', flush=True)\n    time.sleep(120)\n"
SLOW = "import asyncio\n\nasync def check(candidate):\n    await asyncio.sleep(0.03)\n    return True\n"


@pytest.fixture(autouse=True)
def private_verdict_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRS_CACHE_DIR", str(tmp_path / "cache"))


def holder(directory: Path) -> subprocess.Popen[str]:
    """Another process that holds ``directory``'s lock until it is killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "locked"
    return p


def curate(inp: Path, panel: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tgrs_agents", "curate", str(inp), "--panel", str(panel),
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def test_the_lock_is_exclusive_and_released_on_exit(tmp_path: Path) -> None:
    d = tmp_path / "run"
    with run_lock(d) as path:
        assert path == d / LOCK_NAME and path.read_text().strip() == str(os.getpid())
        with pytest.raises(RunStoreError, match=rf"^{d} is in use by pid {os.getpid()}:"):
            with run_lock(d):
                pass
    with run_lock(d):  # released: taken again
        pass


def test_a_directory_that_cannot_be_written_is_one_error_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunStoreError, match=rf"^{blocker}.*: cannot use the run directory: "):
        with run_lock(blocker / "run"):
            pass


def test_a_second_curate_on_the_same_dir_stops_at_once_and_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 40, seed=3)
    out = tmp_path / "run"
    other = holder(out)
    try:
        t0 = time.monotonic()
        p = curate(inp, VERIFIERS, out)
        assert time.monotonic() - t0 < 30
        assert p.returncode == 2
        assert p.stderr.strip().splitlines()[-1].startswith(f"tgrs: error: {out} is in use by pid {other.pid}")
        assert sorted(x.name for x in out.iterdir()) == [LOCK_NAME]  # nothing read or written
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    p = curate(inp, VERIFIERS, out)  # the kernel released the dead holder's lock
    assert p.returncode == 0, p.stderr
    assert len(jsonl(out / "accepted.jsonl")) + len(jsonl(out / "rejected.jsonl")) == 40


def test_two_curate_processes_on_one_dir_one_runs_the_other_is_refused(tmp_path: Path) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 400, seed=4)
    helper = tmp_path / "slow.py"
    helper.write_text(SLOW)
    panel = tmp_path / "panel.toml"
    panel.write_text(f'policy = "unanimous"\n\n[[teacher]]\nname = "slow"\nkind = "python"\n'
                     f'function = "{helper}:check"\nmax_concurrency = 4\n')
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tgrs_agents", "curate", str(inp), "--panel", str(panel), "--out", str(out),
           "--quiet"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "verdicts.jsonl").exists() or not (out / "verdicts.jsonl").stat().st_size:
        assert first.poll() is None and time.monotonic() < deadline, "the first run did not start"
        time.sleep(0.02)
    second = curate(inp, panel, out)
    assert first.poll() is None  # the second was refused while the first was still running
    assert second.returncode == 2 and f"is in use by pid {first.pid}" in second.stderr
    assert first.wait(timeout=120) == 0
    lines = Counter(r["line"] for name in ("accepted", "rejected") for r in jsonl(out / f"{name}.jsonl"))
    assert len(lines) == 400 and max(lines.values()) == 1  # every decision once
    verdicts = Counter(r["line"] for r in jsonl(out / "verdicts.jsonl"))
    assert len(verdicts) == 400 and max(verdicts.values()) == 1  # every verdict paid once


def test_force_archives_everything_but_the_lock(tmp_path: Path) -> None:
    inp = write_synthetic(tmp_path / "in.jsonl", 10, seed=5)
    out = tmp_path / "run"
    assert curate(inp, VERIFIERS, out).returncode == 0
    other = write_synthetic(tmp_path / "other.jsonl", 10, seed=6)
    p = subprocess.run([sys.executable, "-m", "tgrs_agents", "curate", str(other), "--panel", str(VERIFIERS),
                        "--out", str(out), "--quiet", "--force"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    (archive,) = [x for x in out.iterdir() if x.name.startswith("archive-")]
    assert (out / LOCK_NAME).exists() and not (archive / LOCK_NAME).exists()
    assert (archive / "accepted.jsonl").exists()

    loop = LoopDir(tmp_path / "loop")
    loop.dir.mkdir()
    (loop.dir / "summary.json").write_text("{}")
    with run_lock(loop.dir):
        dest = loop.archive()
        assert (loop.dir / LOCK_NAME).exists() and not (dest / LOCK_NAME).exists()


def test_a_tgrs_run_directory_has_one_owner_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from tgrs_agents.loop import rounds

    started: list[str] = []
    monkeypatch.setattr(rounds.ExpertIteration, "run", lambda self: started.append("run") or {})
    out = tmp_path / "demo"
    other = holder(out)
    try:
        rc = cli_main(["demo", "--quick", "--rounds", "1", "--out", str(out)])
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    err = capsys.readouterr().err
    assert rc == 2 and started == []
    assert err.strip() == f"tgrs: error: {out} is in use by pid {other.pid}: another tgrs process owns this " \
                          "run directory; wait for it to end, or use another --out"
