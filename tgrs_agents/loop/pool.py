"""The pool stage: a round's accepted data through the configured filters, then pooled with earlier rounds.

1. :func:`apply_filters`: the data filters of ``[filters]`` in a fixed order (difficulty band,
   length bounds, near-duplicates; :mod:`tgrs_agents.loop.filters`). What they set aside is kept
   in ``set_aside.jsonl`` with the filter and the reason.
2. :func:`pool_accepted`: this round's kept records first, then the previous pool; one record per
   :func:`dedupe_key` (task, tool-call sequence, final answer) and at most ``cap`` per task. Newer
   rounds win, so the pool drifts towards what the current student produces.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..chat import CALLS, final_answer_text, render
from ..curate.layout import CurateDir, LoopDir
from ..curate.store import atomic_write, iter_jsonl
from .config import FiltersConfig
from .filters import FilterResult, difficulty_band, length_bounds, near_duplicates, pass_rates_from_run
from .stages import Pooled

Record = dict[str, Any]


def dedupe_key(rec: Record) -> tuple[str, str, str]:
    """Same task, same tool-call sequence and same final answer count once."""
    return rec["task_id"], render(rec["messages"], CALLS), final_answer_text(rec["messages"])


def pool_accepted(previous: list[Record], new: list[Record], cap: int) -> list[Record]:
    """Newest first, one per dedupe key, at most ``cap`` per task."""
    seen: set[tuple[str, str, str]] = set()
    per_task: dict[str, int] = {}
    out: list[Record] = []
    for rec in [*new, *previous]:
        key = dedupe_key(rec)
        if key in seen or per_task.get(rec["task_id"], 0) >= cap:
            continue
        seen.add(key)
        per_task[rec["task_id"]] = per_task.get(rec["task_id"], 0) + 1
        out.append({k: rec[k] for k in ("id", "task_id", "messages", "tools") if k in rec})
    return out


def apply_filters(records: list[Record], f: FiltersConfig, *, curate: CurateDir | None = None,
                  tokenizer: Callable[[], Any] | None = None) -> tuple[list[Record], list[Record]]:
    """(kept, set aside) under the configured filters, in order: difficulty band, length, near-duplicates.

    The band needs the panel's verdicts (``curate``: the round's curate run, whose accepted and
    rejected files give each task's pass rate); length bounds call ``tokenizer()`` for the
    student's tokenizer. Set-aside rows hold id, task_id, filter and reason.
    """
    res = FilterResult(list(records))
    if f.difficulty_lo is not None and curate is not None and curate.dir.exists():
        res = res.then(difficulty_band, pass_rates_from_run(curate.dir), lo=f.difficulty_lo,
                       hi=f.difficulty_hi, keep_extremes=f.keep_extremes)
    if f.min_response_tokens is not None or f.max_response_tokens is not None:
        if tokenizer is None:
            raise ValueError("length bounds need the student's tokenizer")
        res = res.then(length_bounds, min_tokens=f.min_response_tokens, max_tokens=f.max_response_tokens,
                       tokenizer=tokenizer())
    if f.near_dup_threshold is not None:
        res = res.then(near_duplicates, threshold=f.near_dup_threshold)
    aside = [{"id": a["record"]["id"], "task_id": a["record"]["task_id"], "filter": a["filter"],
              "reason": a["reason"]} for a in res.set_aside]
    return res.kept, aside


def pool_round(run: LoopDir, rnd: int, accepted_file: str, f: FiltersConfig, cap: int, *,
               tokenizer: Callable[[], Any] | None = None) -> Pooled:
    """Round ``rnd``'s pool: its accepted data (``accepted_file``, relative to the round) filtered, then
    pooled with round ``rnd - 1``'s pool. Writes ``set_aside.jsonl`` and ``pool.jsonl``."""
    rd = run.round(rnd)
    prev = list(iter_jsonl(run.round(rnd - 1).pool)) if rnd > 1 else []
    new = list(iter_jsonl(rd.file(accepted_file)))
    kept, aside = apply_filters(new, f, curate=rd.curate, tokenizer=tokenizer)
    atomic_write(rd.set_aside, "".join(json.dumps(r) + "\n" for r in aside))
    pooled = pool_accepted(prev, kept, cap)
    atomic_write(rd.pool, "".join(json.dumps(r) + "\n" for r in pooled))
    return Pooled(pooled=len(pooled), new_accepted=len(new), set_aside_by_filters=len(aside))
