"""Run untrusted Python in a throw-away sandbox: ``result = await run_python(source)``.

The first mode that works here is used (probed once); ``SandboxResult.isolation`` names its layers
and :func:`isolation_level` says which are in force, for a run summary:

* ``pidns``: ``unshare --pid --fork``: the script is PID 1 of a new PID namespace; when it dies
  the kernel kills every process in it, even ones that called ``setsid``.
* ``netns``: ``unshare --net``: one loopback device, and it is down (no host 127.0.0.1 either).
* ``mntns``: a private mount namespace whose root is an empty tmpfs holding only read-only binds
  of the system library dirs and the interpreter's prefixes, a few devices, a fresh ``/proc``,
  and writable ``/tmp``, ``/var/tmp``, ``/dev/shm`` and working dir (see
  :mod:`~tgrs_agents.teachers.sandbox_boot`). No other host file is visible (no input file, no
  run directory, no home), and what the script writes is gone when it ends.
* ``uid<N>`` (root): a uid of the run's own, with no groups and no way back to root, from a range
  nothing uses (65534 if that range is not mapped). Root ignores ``RLIMIT_NPROC`` but this uid
  does not, and one run's fork bomb cannot use up another run's process count.
* ``userns`` (not root): ``unshare --user --map-root-user``; ``prlimit`` sets NPROC inside it.
* ``rlimits``: ``RLIMIT_AS`` (memory), ``RLIMIT_NPROC``, ``RLIMIT_FSIZE`` and ``RLIMIT_CORE=0``, set
  by the boot before anything else runs (not in a ``preexec_fn``: see :func:`_pdeathsig`).
* ``nosocket`` (last resort, when there is no netns): an audit hook refuses IP connect, bind and
  DNS. It stops accidental network use, not a determined script.

At the end, whatever happened (exit, timeout, cancellation), everything gets SIGKILL: the
namespace's PID 1 and with it the namespace, or, without one, the process group and the run's uid.
``PR_SET_PDEATHSIG`` takes the sandbox down if this process dies. The cwd (also HOME and TMPDIR) is
a fresh directory, removed afterwards; the environment is minimal (no API keys); output is cut to
``max_output_bytes`` (head and tail). Without ``mntns`` the host's filesystem is visible (with the
rights of the run's uid) and files the run's uid left in the temp dirs are deleted after the run.
A kill -9 of this process can leave working dirs behind: :func:`sweep_stale` removes them.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import ctypes
import functools
import logging
import marshal
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)
Mode = tuple[str, ...]  # layer names

_FSIZE = 64 << 20  # largest file the script may write (its stdout and stderr included)
_UID_RANGE = range(1_900_000_000, 1_900_065_536)  # not allocated by Linux distributions or systemd
_NOBODY = 65534
_uids_in_use: set[int] = set()
_chosen: dict[str, Mode] = {}  # interpreter -> the mode that worked
_libc = ctypes.CDLL(None, use_errno=True)

_BOOT = (Path(__file__).with_name("sandbox_boot.py")).read_text(encoding="utf-8")  # runs as ``-c``
# For this very interpreter, the boot and main.py travel compiled (marshal): compiling them in every
# sandbox took longer than the mount namespace does (the harness alone: 6 ms a call).
_BOOT_COMPILED = "import marshal, binascii\nexec(marshal.loads(binascii.a2b_base64({!r})))"
_PROBE = "import decimal, json\n"  # loads an extension module: the library dirs are there
_TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


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
        (("pidns", "netns", "uid", "mntns", "rlimits"), root and unshare),  # the boot drops root
        (("pidns", "netns", "uid", "rlimits"), root and unshare and setpriv),
        (("pidns", "netns", "rlimits"), root and unshare),  # as root, RLIMIT_NPROC has no effect
        (("uid", "rlimits", "nosocket"), root and setpriv),
        (("userns", "pidns", "netns", "mntns", "rlimits"), not root and unshare and prlimit),
        (("userns", "pidns", "netns", "rlimits"), not root and unshare and prlimit),
        (("rlimits", "nosocket"), True),
    ]
    return [mode for mode, ok in candidates if ok]


def isolation_level(python: str | None = None) -> str | None:
    """The layers in force for ``python`` (default: this interpreter), e.g.
    ``"pidns+netns+uid+mntns+rlimits"``; None until a first run has probed them."""
    python = (shutil.which(python) or python) if python else sys.executable
    mode = _chosen.get(python)
    return "+".join(mode) if mode is not None else None


async def run_python(
    source: str,
    *,
    limits: SandboxLimits = SandboxLimits(),
    python: str | None = None,
    files: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    pass_fds: Sequence[int] = (),
) -> SandboxResult:
    """Run ``source`` as the script ``main.py`` in the strongest sandbox that works here.

    ``files`` are written next to it (name -> text), ``args`` follow it in ``sys.argv``, and
    ``pass_fds`` stay open in it under the same numbers.
    """
    python = (shutil.which(python) or python) if python else sys.executable
    if python not in _chosen:
        modes = _modes()
        for mode in modes:
            if (await _run(mode, _PROBE, SandboxLimits(), python)).ok:
                _chosen[python] = mode
                if mode != modes[0]:
                    log.warning("sandbox: strongest mode unavailable, using %s", "+".join(mode))
                break
    mode = _chosen.get(python, _modes()[-1])  # none worked: run anyway, so the result says why
    return await _run(mode, source, limits, python, files=files, args=args, pass_fds=pass_fds)


async def _run(
    mode: Mode,
    source: str,
    limits: SandboxLimits,
    python: str,
    *,
    files: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    pass_fds: Sequence[int] = (),
) -> SandboxResult:
    workdir = tempfile.mkdtemp(prefix="tgrs-sandbox-")
    uid = _claim_uid() if "uid" in mode else None
    env = {"PATH": f"{os.path.dirname(python)}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    env |= {"HOME": workdir, "TMPDIR": workdir, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
    env |= {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}  # keep output printed before a kill
    # with a mount namespace the boot starts as root and drops to uid once the mounts are done;
    # without, setpriv starts it as uid (the interpreter sees the host's files with that uid's rights)
    boot_uid = uid if "mntns" in mode and uid is not None else ""
    spec = {"workdir": workdir, "uid": boot_uid, "mntns": int("mntns" in mode), "nosocket": int("nosocket" in mode)}
    spec["tmpfs_mb"] = _FSIZE >> 20  # tmpfs pages escape RLIMIT_AS: keep it small
    # the rlimits, set by the boot before it does anything else (see _argv: no preexec_fn)
    spec |= {"as_mb": limits.memory_mb, "fsize": _FSIZE}
    spec["nproc"] = "" if "userns" in mode else limits.max_processes  # prlimit sets it in a userns
    code = _compiled(source) if python == sys.executable else None
    proc: asyncio.subprocess.Process | None = None
    code_fd: int | None = None
    timed_out, start = False, time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            code_fd = None if code is None else memfd(code)
            spec["code_fd"] = "" if code_fd is None else code_fd
            for name, text in {"main.py": source, **(files or {})}.items():
                with open(os.path.join(workdir, name), "w", encoding="utf-8") as f:
                    f.write(text)
            if uid is not None:  # also the mark by which sweep_stale knows a left-behind dir
                os.chown(workdir, uid, uid)
            proc = await asyncio.create_subprocess_exec(
                *_argv(mode, python, uid, limits),
                *(f"{key}={value}" for key, value in spec.items()),
                "--",
                *args,
                cwd=workdir,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                pass_fds=(*pass_fds, *(() if code_fd is None else (code_fd,))),
                start_new_session=True,
                preexec_fn=None if _setpriv() else _pdeathsig,  # None: a vfork, not a copy of this process
            )
            try:
                await asyncio.wait_for(proc.wait(), limits.timeout_s)
            except TimeoutError:
                timed_out = True
        finally:
            wall_s = time.monotonic() - start
            if code_fd is not None:
                os.close(code_fd)
            if proc is not None:
                await _terminate(proc, pidns="pidns" in mode, uid=uid)
            if uid is not None:
                if "mntns" not in mode and uid != _NOBODY:  # its files in /tmp and the like
                    await asyncio.to_thread(_remove_owned, range(uid, uid + 1), float("-inf"))
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
    """The command line up to the boot's spec (``key=value`` items, ``--``, the script's args).
    ``setpriv --pdeathsig`` first: the sandbox dies with this process's thread (kept across the
    execs that follow), without a ``preexec_fn``."""
    setpriv = _setpriv()
    argv = [setpriv, "--pdeathsig=SIGKILL", "--"] if setpriv else []
    if "pidns" in mode:
        argv += ["unshare", "--user", "--map-root-user"] if "userns" in mode else ["unshare"]
        argv += ["--fork", "--pid", "--net", "--kill-child"]
        argv += ["--mount", "--propagation", "private"] if "mntns" in mode else ["--mount-proc"]
    if "userns" in mode:  # RLIMIT_NPROC set inside the user namespace counts the sandbox only
        argv += ["prlimit", f"--nproc={limits.max_processes}:{limits.max_processes}", "--"]
    if uid is not None and "mntns" not in mode:
        argv += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--pdeathsig=SIGKILL", "--"]
    return [*argv, python, "-B", "-s", "-c", _boot_arg(python == sys.executable)]


@functools.lru_cache(maxsize=2)
def _boot_arg(same_interpreter: bool) -> str:
    if not same_interpreter:
        return _BOOT
    code = _compiled(_BOOT, "<boot>")
    assert code is not None, "the boot compiles"
    return _BOOT_COMPILED.format(binascii.b2a_base64(code))


@functools.lru_cache(maxsize=8)
def _compiled(source: str, filename: str = "main.py") -> bytes | None:
    """``source`` compiled and marshalled, or None where it does not compile cleanly: a syntax
    error or warning is left to the sandbox, to show up on its stderr as it always did."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = compile(source, filename, "exec")
        except (SyntaxError, ValueError):
            return None
    return None if caught else marshal.dumps(code)


def memfd(data: bytes) -> int:
    """An unlinked in-memory file holding ``data``, at offset 0, for a sandbox to inherit and read."""
    try:
        fd = os.memfd_create("tgrs-sandbox")
    except (AttributeError, OSError):  # not Linux: an unlinked temporary file does as well
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _pdeathsig() -> None:
    """In the forked child, before exec, where there is no ``setpriv``: die with the parent thread.
    (Any ``preexec_fn`` makes ``subprocess`` fork a full copy of this process instead of a vfork:
    with torch loaded that cost 28 ms a sandbox, on the event loop.)"""
    _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


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


def sweep_stale(older_than_s: float, *, now: float | None = None) -> list[str]:
    """Delete what killed runs left in the temp dirs: working dirs and files owned by a uid of the
    sandbox's private range, last changed more than ``older_than_s`` ago, whose uid runs no
    process (a live run of another process keeps its files). Returns the paths deleted."""
    return _remove_owned(_UID_RANGE, older_than_s, now=now)


def _remove_owned(uids: range, older_than_s: float, *, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    stale: dict[str, int] = {}
    for d in dict.fromkeys((tempfile.gettempdir(), *_TEMP_DIRS)):
        with contextlib.suppress(OSError):
            for entry in os.scandir(d):
                with contextlib.suppress(OSError):
                    st = entry.stat(follow_symlinks=False)
                    if st.st_uid in uids and st.st_uid != _NOBODY and now - st.st_mtime >= older_than_s:
                        stale[entry.path] = st.st_uid
    if not stale:
        return []
    live = _live_uids()
    removed = []
    for path, uid in stale.items():
        if uid in live or (uid in _uids_in_use and len(uids) > 1):
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)
        removed.append(path)
    return removed


def _live_uids() -> set[int]:
    uids = set()
    for name in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError, ValueError):
            uids.add(int(Path(f"/proc/{name}/status").read_text().split("\nUid:")[1].split()[0]))
    return uids


def _read(f: IO[bytes], limit: int) -> str:
    """The captured stream, cut to ``limit`` bytes: the head and the tail, with a marker between."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    data = f.read(limit if size <= limit else limit // 2)
    if size > limit:
        f.seek(size - (limit - limit // 2))
        data += f"\n[... {size - limit} bytes cut ...]\n".encode() + f.read()
    return data.decode("utf-8", errors="replace")
