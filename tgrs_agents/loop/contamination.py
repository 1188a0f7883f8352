"""Train/eval overlap: a held-out task that is also a training task turns pass@1 into a memory test.

Three ways two tasks can be the same problem, each catching what the one before misses:

* ``exact``: the same instruction messages (role and text of every message);
* ``text``: the same instruction text once normalised (Unicode NFKC, case folded, whitespace
  removed, trailing ``.?!`` dropped): ``What is 2+3?`` and ``what is 2 + 3`` are one task;
* ``canonical``: for a built-in family, the same problem up to reordering
  (:func:`tgrs_agents.tasks.arithmetic.task_canonical`: ``12 + 5`` and ``5 + 12``; for the code
  family, the same function: :func:`tgrs_agents.tasks.code.task_canonical`), for tasks of that
  family wherever they come from (a task file of arithmetic questions too).

:func:`overlaps` finds every held-out task that matches a training task at some level (the
strictest level is reported). :func:`refuse_overlap` turns them into a ConfigError naming both files,
the lines and one example, unless the run sets ``[tasks] allow_overlap = true``.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from ..tasks.families import task_canonical
from ..types import Task

LEVELS = ("exact", "text", "canonical")


def instruction_key(task: Task) -> str:
    return json.dumps([(m.role, m.text) for m in task.messages])


def normalised_text(task: Task) -> str:
    text = "\n".join(m.text for m in task.messages if m.role in ("system", "developer", "user"))
    text = "".join(unicodedata.normalize("NFKC", text).casefold().split())
    return text.rstrip(".?!")


KEYS: dict[str, Callable[[Task], str | None]] = {
    "exact": instruction_key, "text": normalised_text, "canonical": task_canonical}


@dataclass(frozen=True)
class Overlap:
    level: str  # the strictest level at which the two match
    held: Task
    train: Task


def overlaps(train: Sequence[Task], held: Sequence[Task]) -> list[Overlap]:
    """Every held-out task that is also a training task (at the strictest level it matches)."""
    index: dict[str, dict[str, Task]] = {level: {} for level in LEVELS}  # level -> key -> first training task
    for t in train:
        for level, key in KEYS.items():
            k = key(t)
            if k:
                index[level].setdefault(k, t)
    out = []
    for h in held:
        for level, key in KEYS.items():
            k = key(h)
            if k and k in index[level]:
                out.append(Overlap(level, h, index[level][k]))
                break
    return out


def refuse_overlap(found: list[Overlap], n_held: int, *, train_file: str, held_file: str,
                   lines: dict[str, dict[str, int]], source: str | None) -> None:
    """A ConfigError naming both files and one example; ``lines``: file -> task id -> line number."""
    if not found:
        return
    counts = {level: sum(o.level == level for o in found) for level in LEVELS}
    by = ", ".join(f"{n} {level}" for level, n in counts.items() if n)
    o = found[0]

    def where(file: str, t: Task) -> str:
        line = lines.get(file, {}).get(t.id)
        return f"{file}{f' line {line}' if line else ''} ({t.id}: {t.messages[-1].text[:60]!r})"

    raise ConfigError(
        f"{len(found)} of {n_held} held-out tasks are also training tasks ({by}); e.g. "
        f"{where(held_file, o.held)} and {where(train_file, o.train)} are the same problem ({o.level}). "
        f"pass@1 would measure memory: remove them, or set allow_overlap = true",
        file=source, field="tasks.eval_source")
