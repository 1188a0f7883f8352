"""One owner per run directory: an exclusive ``flock`` on ``DIR/.lock``, held for the whole run.

Two processes writing one run directory would write every decision twice and pay every verdict
twice (their journals do not see each other). So a run takes the lock before it reads or writes
anything in its directory, holds it until it ends, and a second process on the same directory stops
at once with ``DIR is in use by pid N``. The kernel releases a ``flock`` when its holder dies (even
by ``kill -9``), so a crashed run never leaves a stale lock behind; the file itself stays (removing it
would let a third process lock a new file while the second still holds the old one).

The lock is advisory and local: it holds between processes on one machine, and on NFS only where
the server supports ``flock``. The holder's pid is written into the file for the message.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import RunStoreError

LOCK_NAME = ".lock"


def _holder(fd: int) -> str:
    """The pid written in the lock file (the holder writes it right after locking: wait a moment)."""
    for _ in range(50):
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 64).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
        time.sleep(0.01)
    return "unknown"


@contextmanager
def run_lock(directory: str | Path) -> Iterator[Path]:
    """Hold ``directory``'s lock (creating the directory) for the ``with`` block.

    Raises :class:`RunStoreError` when another process holds it, or when the directory cannot be
    written (read-only, permissions): either way before anything in it was read or changed.
    """
    d = Path(directory)
    path = d / LOCK_NAME
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise RunStoreError(f"{e.filename or path}: cannot use the run directory: "
                            f"{e.strerror or e}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _holder(fd)
        os.close(fd)
        raise RunStoreError(f"{d} is in use by pid {pid}: another tgrs process owns this run "
                            "directory; wait for it to end, or use another --out") from None
    except OSError as e:
        os.close(fd)
        raise RunStoreError(f"{path}: cannot lock the run directory: {e.strerror or e}") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    except OSError:
        pass  # a full disk: the lock holds all the same, the message just says "pid unknown"
    try:
        yield path
    finally:
        os.close(fd)  # releases the flock
