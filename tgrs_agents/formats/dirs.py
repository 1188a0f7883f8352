"""A directory of trajectory files as one input.

Agent frameworks write one file per run or instance: SWE-agent a ``.traj`` per instance (each in a
folder of its own), Inspect one log per eval, mini-swe-agent one ``.traj.json`` per instance. Given
a directory, ``tgrs curate`` reads every file of the chosen format as one input:

* the files: regular files under the directory, at any depth, whose name ends with one of the
  reader's :attr:`~.base.Format.suffixes`; names starting with ``.`` are skipped (editor and VCS
  litter). They are sorted by their path relative to the directory, so the order does not depend
  on the file system or the locale.
* positions (``curate.ingest.read_chunks``): record ``n`` of file ``k`` is at input position
  ``offset_k + n``, where ``offset_k`` is the last position of the files before it. That depends
  only on the file list and the files' contents, which :func:`dir_fingerprint` covers: a run
  resumed on the same directory sees the same positions, and one on a changed directory is refused
  (``--force`` starts afresh).
* ``auto``: up to :data:`SAMPLE_FILES` files are sniffed, those with a framework's own suffix
  (``.traj``, ``.eval``) first, and the commonest answer wins.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError

TRAJECTORY_SUFFIXES = (".jsonl", ".json", ".traj", ".eval")
"""What any reader may read in a directory (every reader's suffixes end with one of these)."""
_SPECIFIC = (".traj", ".traj.json", ".eval")  # a framework's own: the best files to sniff
SAMPLE_FILES = 5


def list_files(root: Path, suffixes: Iterable[str] = TRAJECTORY_SUFFIXES) -> list[Path]:
    """The files under ``root`` whose name ends with one of ``suffixes``, sorted by relative path."""
    root = Path(root)
    ends = tuple(suffixes)
    found = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not p.name.endswith(ends) or not p.is_file():
            continue
        found.append((rel.as_posix(), p))
    return [p for _, p in sorted(found)]


def files_for(root: Path, name: str, suffixes: tuple[str, ...]) -> list[Path]:
    """The files a reader takes from ``root``; a :class:`ConfigError` naming the suffixes if none."""
    files = list_files(root, suffixes)
    if not files:
        raise ConfigError(f"no {name} files ({', '.join('*' + s for s in suffixes)}) in this directory",
                          file=root)
    return files


def sniff_dir(root: Path) -> tuple[str, str]:
    """(format name, why) for a directory: the vote of the first few files' sniffs."""
    from .detect import sniff

    files = list_files(root)
    if not files:
        raise ConfigError(f"no trajectory files ({', '.join('*' + s for s in TRAJECTORY_SUFFIXES)}) in this "
                          "directory", file=root)
    picked = sorted(files, key=lambda p: (not p.name.endswith(_SPECIFIC), p.relative_to(root).as_posix()))
    votes = [(p, *sniff(p)) for p in picked[:SAMPLE_FILES]]
    names = Counter(n for _, n, _ in votes)
    name, k = names.most_common(1)[0]
    first, _, why = next(v for v in votes if v[1] == name)
    return name, (f"a directory: {k} of {len(votes)} files sniffed read as {name} "
                  f"({first.relative_to(root).as_posix()}: {why})")


def dir_fingerprint(root: Path) -> str:
    """The files any reader could take from ``root`` (relative paths, sizes) and their contents, hashed.

    Contents are hashed whole: a SWE-agent ``.traj`` keeps its outcome (``info``) at the end, where
    a fingerprint of the first bytes would not see a changed result.
    """
    h = hashlib.sha256()
    for p in list_files(root):
        with p.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        h.update(f"{p.relative_to(root).as_posix()}\0{p.stat().st_size}\0{digest}\n".encode())
    return h.hexdigest()[:16]
