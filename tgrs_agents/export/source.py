"""Where an export reads from: a curate run directory, a ``tgrs run`` directory, or a JSONL file.

* A curate run directory (``tgrs curate --out DIR``) exports ``DIR/accepted.jsonl``.
* A ``tgrs run`` / ``tgrs demo`` directory exports ``DIR/round-K/pool.jsonl`` of the last round
  that has one, or of round ``K`` when asked (the pool is what that round's SFT trained on).
* A JSONL file of canonical records is exported as it is.
* Preference pairs (``--to dpo``) read a curate run's accepted *and* rejected candidates and its
  verdicts: a curate run directory, or round ``K`` of a ``tgrs run`` directory (``round-K/curate/``;
  default the last judged round), see :func:`resolve_judged`.

Kept data does not say how its generation ended (``Candidate.sft_record`` keeps id, task_id,
messages and tools), so the files the records came from are read alongside, with the reader that
read them the first time (:mod:`tgrs_agents.formats`, so readers mint the same ids again): the
curate run's input (``run.json``, its format in ``summary.json``) or the rounds'
``candidates.jsonl``. Only the ids of errored generations are kept from them, so reading them takes
flat memory. Nothing here calls an API or judges anything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from ..curation.ingest import Invalid, parse_line
from ..curation.layout import LoopDir
from ..errors import ConfigError
from ..formats import resolve as resolve_format
from ..types import Candidate

_ROUND = re.compile(r"^round-(\d+)$")


@dataclass(frozen=True, slots=True)
class Source:
    """The file to export and the files that tell which of its records errored while generating."""

    path: Path
    kind: Literal["curate", "loop", "file"]
    round: int | None = None
    origins: tuple[tuple[Path, str], ...] = ()  # (file, the input format it was read as)


def resolve(src: str | Path, round: int | None = None) -> Source:
    """The records to export for ``src``; a :class:`ConfigError` that names what is missing otherwise."""
    src = Path(src)
    if src.is_file():
        if round is not None:
            raise ConfigError("--round applies to a `tgrs run` directory, not to a file", file=src)
        return Source(src, "file")
    if not src.is_dir():
        raise ConfigError("no such file or directory", file=src)
    rounds = _rounds(src)
    if (src / "run.json").exists() or (src / "accepted.jsonl").exists():
        if round is not None:
            raise ConfigError("--round applies to a `tgrs run` directory; this is a curate run", file=src)
        acc = src / "accepted.jsonl"
        if not acc.exists():
            raise ConfigError("no accepted.jsonl yet (the run has accepted nothing, or a best_k run "
                              "is not finalised: run the same `tgrs curate` command again)", file=acc)
        return Source(acc, "curate", origins=curate_origins(src))
    if rounds:
        if round is None:
            round = max(rounds)
        elif round not in rounds:
            raise ConfigError(f"round {round} has no pool.jsonl; rounds with one: "
                              f"{', '.join(map(str, sorted(rounds)))}", file=src / f"round-{round}")
        origins = tuple((p, "openai") for k in sorted(rounds) if k <= round
                        if (p := src / f"round-{k}" / "candidates.jsonl").exists())
        return Source(rounds[round], "loop", round, origins)
    raise ConfigError("neither a curate run directory (no accepted.jsonl) nor a `tgrs run` "
                      "directory (no round-K/pool.jsonl)", file=src)


def resolve_judged(src: str | Path, round: int | None = None) -> Source:
    """The curate run whose accepted and rejected candidates are paired (``--to dpo``): ``src`` itself,
    or round ``round`` (default: the last judged one) of a ``tgrs run`` directory. ``path`` is the
    curate run directory."""
    src = Path(src)
    if src.is_file():
        raise ConfigError("preference pairs come from a run directory (accepted.jsonl, rejected.jsonl and "
                          "verdicts.jsonl side by side), not from one file", file=src)
    if (src / "run.json").exists() or (src / "accepted.jsonl").exists():
        curated = resolve(src, round)
        return Source(curated.path.parent, "curate", origins=curated.origins)
    if not src.is_dir():
        raise ConfigError("no such file or directory", file=src)
    loop = LoopDir(src)
    judged = [k for k in loop.curated_rounds() if loop.round(k).curate.jsonl("accepted").exists()]
    if not judged:
        raise ConfigError("neither a curate run directory (no accepted.jsonl) nor a `tgrs run` directory "
                          "with a judged round (no round-K/curate/accepted.jsonl)", file=src)
    if round is None:
        round = max(judged)
    elif round not in judged:
        raise ConfigError(f"round {round} was not judged; judged rounds: {', '.join(map(str, judged))}",
                          file=src / f"round-{round}")
    rd = loop.round(round)
    origins = ((rd.candidates, "openai"),) if rd.candidates.exists() else curate_origins(rd.curate.dir)
    return Source(rd.curate.dir, "loop", round, origins)


def _rounds(d: Path) -> dict[int, Path]:
    out = {}
    for p in d.iterdir():
        m = _ROUND.match(p.name)
        if m and (p / "pool.jsonl").exists():
            out[int(m.group(1))] = p / "pool.jsonl"
    return out


def curate_origins(d: Path) -> tuple[tuple[Path, str], ...]:
    """The input a curate run read (``run.json``) with the format it read it as (``summary.json``)."""
    try:
        meta = json.loads((d / "run.json").read_text())
    except (OSError, ValueError):
        return ()
    try:
        fmt = json.loads((d / "summary.json").read_text()).get("input_format") or "auto"
    except (OSError, ValueError):
        fmt = "auto"
    p = Path(str(meta.get("input", "")))
    return ((p, fmt),) if meta.get("input") and p.is_file() else ()


# ------------------------------------------------------------------------------------ reading

def read(path: Path) -> Iterator[tuple[int, Candidate | Invalid]]:
    """``(line, candidate or invalid)`` for each non-blank line, streamed; a bad line never stops it."""
    source = str(path)
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            if raw.strip():
                yield n, parse_line(raw, n, source)


def errored(rec: Any) -> bool:
    """Whether a record says its generation failed.

    ``metadata.stop == "error"`` (the rollout loop), a ``finish_reason`` starting with ``error``, or an
    ``error`` set on the record or in its metadata (logs that keep a failed sample's error).
    """
    if not isinstance(rec, dict):
        return False
    md = rec.get("metadata")
    md = md if isinstance(md, dict) else {}
    return bool(rec.get("error") or md.get("error") or md.get("stop") == "error"
                or str(md.get("finish_reason") or "").startswith("error"))


def errored_ids(origins: Iterable[tuple[Path, str]]) -> set[str]:
    """Ids of the records in ``origins`` (file, input format) whose generation failed.

    A record that does not convert is skipped: these files are the run's inputs, already read (and
    their bad records set aside and reported) by the run itself.
    """
    out: set[str] = set()
    for path, fmt_name in origins:
        fmt, _ = resolve_format(path, fmt_name)
        src = fmt.open(path)
        for _, raw in src.records:
            try:
                rec = src.convert(raw)
                rec = orjson.loads(rec) if isinstance(rec, bytes) else rec
            except Exception:  # noqa: BLE001 - Unreadable, bad JSON, a reader's own check: set aside by the run
                continue
            if errored(rec) and isinstance(rec.get("id"), str):
                out.add(rec["id"])
    return out
