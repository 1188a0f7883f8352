"""The pool stage: a round's accepted data through the configured filters, then pooled with earlier rounds.

1. :func:`apply_filters`: the data filters of ``[filters]`` in a fixed order (difficulty band,
   length bounds, near-duplicates; :mod:`tgrs_agents.loop.filters`). What they set aside is kept
   in ``set_aside.jsonl`` with the filter and the reason.
2. :func:`pool_accepted`: this round's kept records and the previous pool, at most
   ``pool_cap_per_task`` per task, *without lowering the panel's precision* (below). The rows are
   written in the form SFT reads (:func:`sft_row`).

Why pooling must not undo the panel
    A panel is imperfect: with three judges that each flip the true verdict 25% of the time, the
    share of right trajectories among those it accepts (its precision) is about 0.56 for one judge,
    0.70 for a majority and 0.92 for unanimity. The old pool kept one row per (task, tool calls,
    answer), first come, up to the cap. Right answers to a task are nearly identical, so they
    collapsed to one row, while wrong ones differ and were all kept: the SFT set's precision fell
    from 0.70 to about 0.5, and after a round the student ended below its start. A per-task cap on
    its own does the same more mildly: the tasks with many accepted rows are the ones the student
    solves reliably, so they are the precise ones, and cutting them shifts weight to the others.

The rule (``pool_mode = "agree"``, the default)
    Per task, rows are ranked by how many of the task's pooled rows give the same final answer
    (agreement; :func:`answer_key`), then by the panel's score, then newest round first, then input
    order; duplicates are kept. The task keeps ``max(cap, s)`` rows, ``s`` being how many of *this
    round's* rows give the task's most agreed answer. So a row is dropped only when its task has
    more than ``cap`` rows and its answer is not the one most of them agree on. Right answers agree
    and wrong ones scatter (self-consistency, Wang et al. 2023), so what is dropped is, as far as
    agreement can tell, wrong: the pool is at least as precise as what the panel accepted. A task
    whose answers cannot agree (free text, every answer different) keeps its ``cap`` best-scored
    rows. Each task holds at most ``max(cap, N)`` rows (N samples per task), however many rounds.

    Simulated (192 tasks, 8 samples, per-task accuracy ~ Beta(0.6, 1.4), flip 0.25, 40 seeds), the
    pool's precision minus the accepted set's was never below 0.0 (means: one judge +0.03,
    majority +0.03, unanimous +0.00), against -0.24 / -0.26 / -0.07 for the old rule; measured on
    the real loop by ``benchmarks/bench_noisy_panel.py``.

``pool_mode = "distinct"`` keeps the old rule (one row per :func:`dedupe_key`, first come, newest
round first): diverse paths help when the panel is exact (verifiers), and it is the "before" of
the benchmark.

The accept-all control pools with ``"all"``, whatever the config says: every row of the round
(``max(cap, rows)`` per task, newest first, input order), looking at nothing in them. Agreement
is a quality signal of its own (majority voting over the student's samples): used on the control,
it would turn "SFT on every candidate" into self-consistency training (in the demo it lifted the
control from about 0.3 to 0.79 after three rounds). Deduplication is not neutral either: it keeps
scattered wrong answers and collapses repeated right ones.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any, Literal

from ..chat import CALLS, final_answer_text, render, template_messages
from ..curation.layout import CurateDir, LoopDir
from ..curation.store import atomic_write, iter_jsonl
from .config import FiltersConfig
from .filters import FilterResult, difficulty_band, length_bounds, near_duplicates, pass_rates_from_run
from .stages import Pooled

Record = dict[str, Any]
PoolMode = Literal["agree", "distinct", "all"]


def dedupe_key(rec: Record) -> tuple[str, str, str]:
    """Same task, same tool-call sequence and same final answer count once."""
    return rec["task_id"], render(rec["messages"], CALLS), final_answer_text(rec["messages"])


def answer_key(rec: Record) -> str:
    """The final answer as compared for agreement: case folded, whitespace collapsed ("" if none)."""
    return " ".join(final_answer_text(rec["messages"]).casefold().split())


def sft_row(rec: Record) -> Record:
    """The fields SFT reads, in the form it reads them: tool-call ``arguments`` as objects (what chat
    templates and TRL's SFTTrainer render; the OpenAI JSON-string form is for OpenAI-format exports),
    None fields dropped; the panel's ``score`` kept when there is one."""
    out = {"id": rec["id"], "task_id": rec["task_id"], "messages": template_messages(rec["messages"])}
    if "tools" in rec:
        out["tools"] = rec["tools"]
    if rec.get("score") is not None:
        out["score"] = rec["score"]
    return out


def pool_accepted(previous: list[Record], new: list[Record], cap: int,
                  mode: PoolMode = "agree") -> list[Record]:
    """This round's rows (``new``) and the previous pool, at most ``max(cap, s)`` per task (see the module
    docstring); ``mode="distinct"``: one row per dedupe key, first come, at most ``cap`` per task;
    ``mode="all"``: every row, blind to content (the control's), ``max(cap, this round's rows)`` per task."""
    if mode == "distinct":
        return _distinct(previous, new, cap)
    tasks: dict[str, list[tuple[int, Record]]] = defaultdict(list)  # task -> (age, row), input order
    for age, recs in ((0, new), (1, previous)):
        for rec in recs:
            tasks[rec["task_id"]].append((age, rec))
    out: list[Record] = []
    for rows in tasks.values():
        if mode == "all":
            out += [sft_row(r) for _, r in rows[:max(cap, sum(age == 0 for age, _ in rows))]]
            continue
        support = Counter(a for _, r in rows if (a := answer_key(r)))

        def rank(i: int, rows: list[tuple[int, Record]] = rows, support: Counter[str] = support) -> tuple[Any, ...]:
            age, rec = rows[i]
            return -support[answer_key(rec)], -float(rec.get("score") or 0.0), age, i

        order = sorted(range(len(rows)), key=rank)
        top = answer_key(rows[order[0]][1])
        agreeing_new = sum(1 for age, r in rows if age == 0 and top and answer_key(r) == top)
        out += [sft_row(rows[i][1]) for i in order[:max(cap, agreeing_new)]]
    return out


def _distinct(previous: list[Record], new: list[Record], cap: int) -> list[Record]:
    seen: set[tuple[str, str, str]] = set()
    per_task: dict[str, int] = {}
    out: list[Record] = []
    for rec in [*new, *previous]:
        key = dedupe_key(rec)
        if key in seen or per_task.get(rec["task_id"], 0) >= cap:
            continue
        seen.add(key)
        per_task[rec["task_id"]] = per_task.get(rec["task_id"], 0) + 1
        out.append(sft_row(rec))
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
               tokenizer: Callable[[], Any] | None = None, mode: PoolMode = "agree") -> Pooled:
    """Round ``rnd``'s pool: its accepted data (``accepted_file``, relative to the round) filtered, then
    pooled with round ``rnd - 1``'s pool. Writes ``set_aside.jsonl`` and ``pool.jsonl``."""
    rd = run.round(rnd)
    prev = list(iter_jsonl(run.round(rnd - 1).pool)) if rnd > 1 else []
    new = list(iter_jsonl(rd.file(accepted_file)))
    kept, aside = apply_filters(new, f, curate=rd.curate, tokenizer=tokenizer)
    atomic_write(rd.set_aside, "".join(json.dumps(r) + "\n" for r in aside))
    pooled = pool_accepted(prev, kept, cap, mode)
    atomic_write(rd.pool, "".join(json.dumps(r) + "\n" for r in pooled))
    return Pooled(pooled=len(pooled), new_accepted=len(new), set_aside_by_filters=len(aside))
