"""Run untrusted Python in a throw-away sandbox: ``result = await run_python(source)``.

The first mode that works here is used (probed once); ``SandboxResult.isolation`` names its layers:

* ``pidns``: ``unshare --pid --fork --mount-proc``: the script is PID 1 of a new PID namespace; when
  it dies the kernel kills every process in it, even ones that called ``setsid``.
* ``netns``: ``unshare --net``: one loopback device, and it is down (no host 127.0.0.1 either).
* ``uid<N>`` (root): ``setpriv`` to a uid of the run's own, with no groups, from a range nothing uses
  (65534 if that range is not mapped). Root ignores ``RLIMIT_NPROC`` but this uid does not, and one
  run's fork bomb cannot use up another run's process count.
* ``userns`` (not root): ``unshare --user --map-root-user``; ``prlimit`` sets NPROC inside it.
* ``rlimits``: ``RLIMIT_AS`` (memory), ``RLIMIT_NPROC``, ``RLIMIT_FSIZE`` and ``RLIMIT_CORE=0``.
* ``nosocket`` (last resort, when there is no netns): an audit hook refuses IP connect, bind and
  DNS. It stops accidental network use, not a determined script.

At the end, whatever happened (exit, timeout, cancellation), everything gets SIGKILL: the
namespace's PID 1 and with it the namespace, or, without one, the process group and the run's uid.
``PR_SET_PDEATHSIG`` takes the sandbox down if this process dies. The cwd (also HOME and TMPDIR) is
a fresh temporary directory, removed afterwards; the environment is minimal (no API keys); output
is cut to ``max_output_bytes`` (head and tail). Not isolated: the filesystem (there is no chroot).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

log = logging.getLogger(__name__)
Mode = tuple[str, ...]  # layer names

_FSIZE = 64 << 20  # largest file the script may write (its stdout and stderr included)
_UID_RANGE = range(1_900_000_000, 1_900_065_536)  # not allocated by Linux distributions or systemd
_NOBODY = 65534
_uids_in_use: set[int] = set()
_chosen: dict[str, Mode] = {}  # interpreter -> the mode that worked
_libc = ctypes.CDLL(None, use_errno=True)

# Last resort without a netns: refuse IP sockets (AF_UNIX addresses are str, IP ones tuples).
_NOSOCKET_BOOT = """import runpy, sys
def _no_net(ev, args):
    if ev.startswith(("socket.geth", "socket.getaddrinfo")) or (ev in (
            "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg") and type(args[1]) is tuple):
        raise PermissionError(f"network access is disabled in the sandbox ({ev})")
sys.addaudithook(_no_net)
sys.argv[0] = "main.py"
runpy.run_path("main.py", run_name="__main__")
"""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock
    memory_mb: int = 512  # RLIMIT_AS of every process in the sandbox
    max_processes: int = 32  # RLIMIT_NPROC: processes and threads of the sandbox uid
    max_output_bytes: int = 65536  # per stream


@dataclass(frozen=True, slots=True)
class SandboxResult:
    returncode: int | None  # None when it was killed at the timeout
    timed_out: bool
    stdout: str
    stderr: str
    wall_s: float
    isolation: str  # the layers applied, e.g. "pidns+netns+uid1900001234+rlimits"

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def _modes() -> list[Mode]:
    """The modes that may work for this process, strongest first."""
    unshare, setpriv, prlimit = (shutil.which(tool) for tool in ("unshare", "setpriv", "prlimit"))
    root = os.geteuid() == 0
    candidates = [
        (("pidns", "netns", "uid", "rlimits"), root and unshare and setpriv),
        (("pidns", "netns", "rlimits"), root and unshare),  # as root, RLIMIT_NPROC has no effect
        (("uid", "rlimits", "nosocket"), root and setpriv),
        (("userns", "pidns", "netns", "rlimits"), not root and unshare and prlimit),
        (("rlimits", "nosocket"), True),
    ]
    return [mode for mode, ok in candidates if ok]


async def run_python(
    source: str, *, limits: SandboxLimits = SandboxLimits(), python: str | None = None
) -> SandboxResult:
    """Run ``source`` as a script in the strongest sandbox that works here."""
    python = (shutil.which(python) or python) if python else sys.executable
    if python not in _chosen:
        modes = _modes()
        for mode in modes:
            if (await _run(mode, "", SandboxLimits(), python)).ok:
                _chosen[python] = mode
                if mode != modes[0]:
                    log.warning("sandbox: strongest mode unavailable, using %s", "+".join(mode))
                break
    return await _run(_chosen.get(python, _modes()[-1]), source, limits, python)  # none: report why


async def _run(mode: Mode, source: str, limits: SandboxLimits, python: str) -> SandboxResult:
    workdir = tempfile.mkdtemp(prefix="tgrs-sandbox-")
    uid = _claim_uid() if "uid" in mode else None
    env = {"PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env |= {"HOME": workdir, "TMPDIR": workdir, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
    env |= {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}  # keep output printed before a kill
    proc: asyncio.subprocess.Process | None = None
    timed_out, start = False, time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
                f.write(source)
            if uid is not None:
                os.chown(workdir, uid, uid)
            proc = await asyncio.create_subprocess_exec(
                *_argv(mode, python, uid, limits),
                cwd=workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=functools.partial(_child_setup, limits, "userns" not in mode),
            )
            try:
                await asyncio.wait_for(proc.wait(), limits.timeout_s)
            except TimeoutError:
                timed_out = True
        finally:
            wall_s = time.monotonic() - start
            if proc is not None:
                await _terminate(proc, pidns="pidns" in mode, uid=uid)
            if uid is not None:
                _uids_in_use.discard(uid)
            shutil.rmtree(workdir, ignore_errors=True)
        return SandboxResult(
            returncode=None if timed_out or proc is None else proc.returncode,
            timed_out=timed_out,
            stdout=_read(out, limits.max_output_bytes),
            stderr=_read(err, limits.max_output_bytes),
            wall_s=wall_s,
            isolation="+".join(f"uid{uid}" if layer == "uid" else layer for layer in mode),
        )


def _argv(mode: Mode, python: str, uid: int | None, limits: SandboxLimits) -> list[str]:
    argv = ["unshare", "--fork", "--pid", "--net", "--mount-proc", "--kill-child"] if "pidns" in mode else []
    if "userns" in mode:  # RLIMIT_NPROC set inside the user namespace counts the sandbox only
        argv[1:1] = ["--user", "--map-root-user"]
        argv += ["prlimit", f"--nproc={limits.max_processes}:{limits.max_processes}", "--"]
    if uid is not None:
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--pdeathsig=SIGKILL", "--"]
    script = ["-c", _NOSOCKET_BOOT] if "nosocket" in mode else ["main.py"]
    return [*argv, python, "-B", "-s", *script]


def _child_setup(limits: SandboxLimits, nproc: bool) -> None:
    """In the forked child, before exec: die with the parent thread, then lower the rlimits."""
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    caps = {resource.RLIMIT_AS: limits.memory_mb << 20, resource.RLIMIT_CORE: 0}
    caps[resource.RLIMIT_FSIZE] = _FSIZE
    if nproc:
        caps[resource.RLIMIT_NPROC] = limits.max_processes
    for res, value in caps.items():
        resource.setrlimit(res, (value, value))


def _claim_uid() -> int:
    """A free uid from ``_UID_RANGE``, or the shared 65534 where this namespace does not map it."""
    with open("/proc/self/uid_map") as f:  # rows: inside outside count
        rows = [tuple(map(int, line.split())) for line in f]
    if not any(a <= _UID_RANGE.start and _UID_RANGE.stop <= a + n for a, _, n in rows):
        return _NOBODY
    while (uid := random.choice(_UID_RANGE)) in _uids_in_use:
        pass
    _uids_in_use.add(uid)
    return uid


async def _terminate(proc: asyncio.subprocess.Process, *, pidns: bool, uid: int | None) -> None:
    """SIGKILL everything. With a pidns, proc is unshare: kill its descendants (the namespace's
    PID 1 first of all) and let unshare reap them. Without, kill the group and the run's uid."""
    uid = None if pidns or uid == _NOBODY else uid  # never sweep a shared uid
    if not pidns:  # a group id is not reused while the group has members
        _kill(os.killpg, proc.pid)
    if proc.returncode is None or uid is not None:
        for pid in await asyncio.to_thread(_scan, proc.pid if proc.returncode is None else None, uid):
            _kill(os.kill, pid)
    try:
        await asyncio.wait_for(proc.wait(), 5.0)
    except TimeoutError:
        _kill(os.killpg, proc.pid)
        _kill(os.kill, proc.pid)
        await proc.wait()
    if uid is not None:  # what forked while the first sweep ran
        for pid in await asyncio.to_thread(_scan, None, uid):
            _kill(os.kill, pid)


def _kill(fn: Callable[[int, int], None], pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        fn(pid, signal.SIGKILL)


def _scan(root: int | None, uid: int | None) -> set[int]:
    """From /proc: the pids below ``root`` (by parent links) and the pids whose real uid is ``uid``."""
    found: set[int] = set()
    children: dict[int, list[int]] = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            ppid, real_uid = int(fields["PPid"]), int(fields["Uid"].split()[0])
        except (OSError, KeyError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
        if real_uid == uid:
            found.add(int(name))
    stack = [root] if root is not None else []
    while stack:
        kids = children.get(stack.pop(), [])
        found.update(kids)
        stack.extend(kids)
    return found


def _read(f: IO[bytes], limit: int) -> str:
    """The captured stream, cut to ``limit`` bytes: the head and the tail, with a marker between."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    data = f.read(limit if size <= limit else limit // 2)
    if size > limit:
        f.seek(size - (limit - limit // 2))
        data += f"\n[... {size - limit} bytes cut ...]\n".encode() + f.read()
    return data.decode("utf-8", errors="replace")
