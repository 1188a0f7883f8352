"""The readers on every real sample file: the format ``auto`` picks, records read, candidates valid,
records set aside (with the commonest reasons), and one accepted record printed back in canonical
OpenAI form (truncated). Also, per file, what today's ``openai`` reader alone made of it.

Reads the files the way ``tgrs curate`` does (``curate.ingest.read_chunks``), no teacher involved::

    python benchmarks/formats_table.py                      # ../shared/data/formats beside the checkout
    python benchmarks/formats_table.py --root DIR --width 100
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from tgrs_agents.curation.ingest import IdIndex, Invalid, read_chunks
from tgrs_agents.curation.store import DoneLines
from tgrs_agents.formats import resolve

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "formats"


def read(path: Path, fmt: str) -> tuple[int, list[Any], list[Invalid]]:
    with tempfile.TemporaryDirectory() as tmp:
        index = IdIndex(Path(tmp) / "ids.sqlite")
        good: list[Any] = []
        bad: list[Invalid] = []
        try:
            for _, chunk in read_chunks(path, DoneLines(), index, fmt=fmt):
                for _, item in chunk:
                    (bad if isinstance(item, Invalid) else good).append(item)
        finally:
            index.close()
    return len(good) + len(bad), good, bad


def reason_kind(inv: Invalid) -> str:
    """A set-aside reason without the file, position and ids: what the records have in common."""
    text = inv.reason.split(": ", 2)[-1] if inv.field is None else inv.reason.split(f"field '{inv.field}': ", 1)[-1]
    text = re.sub(r"'[^']*-[0-9a-f]{16}'", "'<id>'", text)
    text = re.sub(r"(record|line) \d+", r"\1 N", text)
    field = re.sub(r"\[\d+\]", "[i]", inv.field or "")
    return f"{field}: {text}" if field else text


def top(bad: list[Invalid], k: int = 2) -> str:
    if not bad:
        return ""
    return "; ".join(f"{n}x {r[:90]}" for r, n in Counter(reason_kind(b) for b in bad).most_common(k))


def excerpt(c: Any, width: int) -> str:
    rec = c.sft_record()
    lines = []
    for m in rec["messages"]:
        s = json.dumps(m, ensure_ascii=False)
        lines.append("    " + (s if len(s) <= width else s[: width - 5] + " ...}"))
    head = {k: rec[k] for k in ("id", "task_id")}
    if rec.get("tools"):
        head["tools"] = [t["function"]["name"] for t in rec["tools"]]
    meta = {k: v for k, v in c.metadata.items() if k in ("reward", "score", "resolved", "exit_status", "models")}
    return f"  {json.dumps(head)}" + (f"  metadata: {json.dumps(meta)[:width]}" if meta else "") + "\n" + \
        "\n".join(lines[:8]) + (f"\n    ... {len(lines) - 8} more messages" if len(lines) > 8 else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT)
    ap.add_argument("--width", type=int, default=160, help="characters of each message printed")
    args = ap.parse_args()
    if not args.root.is_dir():
        print(f"no sample folder at {args.root}", file=sys.stderr)
        return 1
    files = sorted(p for p in args.root.rglob("*") if p.is_file() and p.name != "README.md")
    rows, shows = [], []
    for p in files:
        name = str(p.relative_to(args.root))
        fmt, _ = resolve(p)
        n, good, bad = read(p, "auto")
        n_o, good_o, _ = read(p, "openai")
        rows.append(f"| `{name}` | {fmt.name} | {n} | {len(good)} | {len(bad)} | {top(bad)} | "
                    f"{len(good_o)} of {n_o} |")
        if good:
            shows.append(f"### {name} ({fmt.name})\n```\n{excerpt(good[0], args.width)}\n```")
    print("| file | format (auto) | records read | valid | set aside | top reasons set aside | "
          "valid if read as `openai` |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n## One accepted record per file, canonical form (truncated)\n")
    print("\n\n".join(shows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
