"""How a sandbox is started: by a vfork (no ``preexec_fn``, which would make ``subprocess`` copy the
whole parent, torch and all, on the event loop), with the rlimits set by the boot and the parent
death signal by ``setpriv``, so nothing of the isolation is lost."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest

from tgrs_agents.teachers import sandbox
from tgrs_agents.teachers.sandbox import SandboxLimits, run_python

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")
HAS_SETPRIV = shutil.which("setpriv") is not None


@pytest.mark.skipif(not HAS_SETPRIV, reason="no setpriv: the sandbox falls back to a preexec_fn")
def test_the_sandbox_starts_without_a_preexec_fn_under_setpriv_pdeathsig(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    real = asyncio.create_subprocess_exec

    async def spy(*argv: Any, **kw: Any) -> Any:
        seen.append((argv, kw))
        return await real(*argv, **kw)

    monkeypatch.setattr(sandbox.asyncio, "create_subprocess_exec", spy)
    assert asyncio.run(run_python("print('hi')")).stdout == "hi\n"
    argv, kw = seen[-1]
    assert kw["preexec_fn"] is None
    assert list(argv[:3]) == [shutil.which("setpriv"), "--pdeathsig=SIGKILL", "--"]


def test_the_rlimits_hold_inside_the_sandbox() -> None:
    src = ("import resource\n"
           "for n in ('AS', 'FSIZE', 'CORE', 'NPROC'):\n"
           "    print(n, *resource.getrlimit(getattr(resource, 'RLIMIT_' + n)))\n")
    r = asyncio.run(run_python(src, limits=SandboxLimits(memory_mb=300, max_processes=7)))
    assert r.ok, r.stderr
    got = {line.split()[0]: tuple(map(int, line.split()[1:])) for line in r.stdout.splitlines()}
    assert got["AS"] == (300 << 20, 300 << 20)
    assert got["FSIZE"] == (64 << 20, 64 << 20)
    assert got["CORE"] == (0, 0)
    if "userns" not in r.isolation:  # there prlimit sets it, inside the user namespace
        assert got["NPROC"] == (7, 7)


def _alive(token: str) -> list[int]:
    pids = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    pids.append(int(name))
        except OSError:
            pass
    return pids


def test_the_sandbox_dies_with_the_process_that_started_it() -> None:
    token = f"tgrs-orphan-{uuid.uuid4().hex}"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import asyncio\n"
        "from tgrs_agents.teachers.sandbox import SandboxLimits, run_python\n"
        f"asyncio.run(run_python('import time; time.sleep(120)', args=[{token!r}],\n"
        "                        limits=SandboxLimits(timeout_s=120)))\n")])
    try:
        deadline = time.monotonic() + 60
        while not [p for p in _alive(token) if p != parent.pid] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [p for p in _alive(token) if p != parent.pid], "the sandbox never started"
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while _alive(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(token), "the sandbox outlived the process that started it"
