"""Preference pairs for DPO from a curate run: the panel's rejections are data too.

For each task the panel has just said which trajectories are better and by how much, so the
candidates a round rejects can teach the student what not to do. This module turns one curate run
directory (``tgrs curate --out DIR``, or a loop round's ``round-K/curate/``) into conversational
preference records that TRL's ``DPOTrainer`` takes as they are::

    {"id", "task_id", "prompt": [the turns before the first assistant turn],
     "chosen": [assistant turns, tool calls and tool results], "rejected": [...],
     "tools": "<JSON schemas>" or null, "metadata": {...}}

The messages are the ``hf`` export's (:func:`~.writers.to_hf`: text ``content``, tool-call
``arguments`` as objects) without their empty fields, so ``DPOTrainer``'s chat template renders the
calls exactly as the project's SFT does (the tiny student's template prints its compact
``<|call|>calculator 2+3``; a Qwen-style ``arguments | tojson`` does not quote them twice).
``tools`` stays one JSON string, which TRL parses: a column of one type whatever schemas the rows
carry. Arguments of different tools differ in keys; a ``datasets`` with ``Json`` (5.2 has it) reads
such messages as ``Json``, each object as written, while an older one may merge the keys into one
struct and fill the missing ones with nulls, which a template then prints: load the file with a
current ``datasets``, or parse it yourself.

Pairs form only between candidates with the same ``task_id``, prompt messages and tools. Per task
(:class:`PairSettings`):

* ``accepted-rejected`` (the default): the best accepted with the worst rejected, the second best
  with the second worst, and so on; each candidate is in one pair at most.
* ``best-worst``: the same over every judged candidate, accepted or not, ranked by panel score.
* ``all``: every accepted x rejected pair, the widest margin first (a candidate may recur).
* ``hard``: the best accepted with the rejected candidate closest to acceptance (the highest panel
  score among the rejected), then with the next-closest, and so on. The default pairs tend to be easy
  negatives (a garbled answer the reference already finds unlikely), which DPO separates in a few
  steps without learning the boundary; a near miss (right format, wrong answer) is the contrast the
  panel actually drew. Equal scores go to the earlier input line, then the id. A tie or a reversed
  pair is skipped and the next-closest rejected tried, so the margin rule holds as in every mode.

The panel score is the record's ``score``: :meth:`~tgrs_agents.curation.policy.Policy.rank_score`,
the mean of the heard teachers' scores, so a rejection a cheap teacher cut short is scored by the
teachers heard. A pair needs ``chosen - rejected >= min_margin`` and a margin above zero. Ties never
pair, and neither does a pair that the scores, or the panel's decisions, rank the other way round (a
rejected candidate is never chosen over an accepted one). ``pairs_per_task`` caps the pairs.

Never paired: a candidate whose latest verdict from some teacher is an error (its score is
incomplete); one whose generation failed (found in the run's input, as in the SFT export); one a
hygiene rule drops (the rules of :mod:`.hygiene`, except that errored generations are always
dropped); and a failed (undecided) candidate, which is neither accepted nor rejected. A pair's
``metadata`` holds both ids and scores, the margin, whether each side was accepted, the teacher
that fixed the rejection (``vetoed_by``: the record's ``decided_by``; ``best_k`` for a best-k cut)
and every teacher that failed it (``failed_by``).

Two streamed passes keep memory flat. The first reads, cleans and scores every candidate and keeps
ids, scores and a hash of the prompt. The second cleans again only the candidates that a pair uses.
:func:`pair_candidates` is what the loop calls each round; :func:`export_pairs` is ``tgrs export
DIR --to dpo``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import orjson

from ..curation.ingest import Invalid, parse_line
from ..curation.layout import CurateDir
from ..curation.store import atomic_write
from ..errors import ConfigError
from ..types import Candidate
from .hygiene import Dropped, Hygiene, TokenCounter, estimate_tokens, tokenizer_counter
from .run import LISTED, ExportReport, check_hygiene, clean
from .source import curate_origins, errored_ids, resolve_judged
from .writers import Unconvertible, Writer, to_hf

PAIR_MODES = ("accepted-rejected", "best-worst", "all", "hard")
TIE = 1e-9  # panel scores closer than this are a tie
Message = dict[str, Any]


@dataclass(frozen=True)
class PairSettings:
    """How pairs are chosen within a task (see the module docstring)."""

    mode: str = "accepted-rejected"
    pairs_per_task: int | None = 1  # None: no cap
    min_margin: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in PAIR_MODES:
            raise ConfigError(f"expected one of {', '.join(PAIR_MODES)}; got {self.mode!r}", field="pairs")
        if self.pairs_per_task is not None and self.pairs_per_task < 1:
            raise ConfigError(f"expected a positive integer, or none for no cap; got {self.pairs_per_task!r}",
                              field="pairs_per_task")
        if not 0.0 <= self.min_margin <= 1.0:
            raise ConfigError(f"expected a score margin between 0 and 1; got {self.min_margin!r}",
                              field="min_margin")


@dataclass(frozen=True, slots=True)
class Entry:
    """A candidate that may go into a pair, without its messages."""

    id: str
    task_id: str
    prompt: str  # hash of the task id, the prompt messages and the tools
    score: float
    accepted: bool
    line: int  # its input line: ties in the ranking go to the earlier one
    vetoed_by: str | None
    failed_by: tuple[str, ...]


@dataclass
class PairSet:
    """The pairs of one curate run, and what was read, set aside, dropped and changed on the way."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    set_aside: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    redacted: Counter[str] = field(default_factory=Counter)
    redaction_sites: list[dict[str, Any]] = field(default_factory=list)


def pair_candidates(run_dir: str | Path, settings: PairSettings = PairSettings(), *, hygiene: Hygiene = Hygiene(),
                    origins: tuple[tuple[Path, str], ...] | None = None) -> PairSet:
    """The preference pairs of the curate run in ``run_dir`` (its accepted.jsonl, rejected.jsonl and
    verdicts.jsonl). ``origins``: the files (and their input formats) that tell which generations
    failed; default, the run's input as ``run.json`` names it."""
    if not hygiene.drop_errored:
        raise ConfigError("preference pairs never include a generation that errored", field="drop_errored")
    check_hygiene(hygiene)
    cd = CurateDir(Path(run_dir))
    if not cd.jsonl("accepted").exists():
        raise ConfigError("no accepted.jsonl (nothing accepted yet, or a best_k run not finalised)",
                          file=cd.jsonl("accepted"))
    errors, failed_by = teacher_states(cd.jsonl("verdicts"))
    failed = errored_ids(curate_origins(cd.dir) if origins is None else origins)
    count: TokenCounter = tokenizer_counter(hygiene.tokenizer) if hygiene.tokenizer else estimate_tokens
    out = PairSet()

    # -- pass 1: every candidate, cleaned and scored; only what ranks it is kept
    tasks: dict[str, dict[str, list[Entry]]] = {}  # task -> prompt hash -> entries, in reading order
    seen: set[str] = set()
    for path, line, accepted, cand, raw in _read(cd):
        n = out.counts
        n["read"] += 1
        n["read_accepted" if accepted else "read_rejected"] += 1
        where = f"{path}:{line}"
        if isinstance(cand, Invalid):
            _note(out.set_aside, n, "set_aside", file=str(path), line=line, id=cand.id, reason=cand.reason)
            continue
        rec = orjson.loads(raw)
        score = rec.get("score")
        if cand.id in seen or not isinstance(score, int | float) or isinstance(score, bool):
            why = "a second record with this id" if cand.id in seen else "no panel score (field 'score')"
            _note(out.set_aside, n, "set_aside", file=str(path), line=line, id=cand.id, reason=f"{where}: {why}")
            continue
        seen.add(cand.id)
        try:
            if cand.id in errors:
                raise Dropped("teacher_error", f"{', '.join(errors[cand.id])} answered with an error")
            prompt, _, tools = sides(cand, line, hygiene, failed, count, Counter(), [])
        except Dropped as d:
            _note(out.dropped, n, f"dropped_{d.rule}", file=str(path), line=line, id=cand.id, rule=d.rule,
                  detail=str(d))
            continue
        except Unconvertible as u:
            _note(out.set_aside, n, "set_aside", file=str(path), line=line, id=cand.id, reason=f"{where}: dpo: {u}")
            continue
        key = hashlib.sha256(orjson.dumps([cand.task_id, prompt, tools])).hexdigest()[:16]
        tasks.setdefault(cand.task_id, {}).setdefault(key, []).append(Entry(
            cand.id, cand.task_id, key, float(score), accepted, int(rec.get("line") or line),
            None if accepted else rec.get("decided_by"), failed_by.get(cand.id, ())))

    # -- choose, per task and prompt
    chosen: list[tuple[Entry, Entry]] = []
    for groups in tasks.values():
        out.counts["tasks"] += 1
        out.counts["tasks_with_several_prompts"] += len(groups) > 1
        pairs = [p for entries in groups.values() for p in choose(entries, settings.mode, settings.min_margin,
                                                                   out.counts)]
        cap = settings.pairs_per_task
        out.counts["skipped_cap"] += max(0, len(pairs) - cap) if cap is not None else 0
        chosen += pairs[:cap]
        out.counts["tasks_paired"] += bool(pairs)

    # -- pass 2: the messages of the candidates the pairs use
    needed = {e.id for pair in chosen for e in pair}
    texts: dict[str, tuple[list[Message], list[Message], str | None]] = {}
    for _, line, _, cand, _ in _read(cd):
        if isinstance(cand, Candidate) and cand.id in needed and cand.id not in texts:
            sites: list[tuple[str, str]] = []
            texts[cand.id] = sides(cand, line, hygiene, failed, count, out.counts, sites)
            for where, kind in sites:
                _note(out.redaction_sites, out.redacted, kind, id=cand.id, line=line, path=where, kind=kind)
    for c, r in chosen:
        prompt, good, tools = texts[c.id]
        out.rows.append({"id": f"{c.id}|{r.id}", "task_id": c.task_id, "prompt": prompt, "chosen": good,
                         "rejected": texts[r.id][1], "tools": tools, "metadata": {
                             "chosen_id": c.id, "rejected_id": r.id, "chosen_score": c.score,
                             "rejected_score": r.score, "margin": round(c.score - r.score, 6),
                             "chosen_accepted": c.accepted, "rejected_accepted": r.accepted,
                             "vetoed_by": r.vetoed_by, "failed_by": list(r.failed_by), "selection": settings.mode}})
    out.counts["written"] = len(out.rows)
    return out


def choose(entries: list[Entry], mode: str, min_margin: float, counts: Counter[str]) -> list[tuple[Entry, Entry]]:
    """The pairs of one prompt's candidates, best first; the ones skipped are counted by reason."""
    best = sorted(entries, key=lambda e: (-e.score, e.line, e.id))
    worst = sorted(entries, key=lambda e: (e.score, e.line, e.id))
    if mode == "hard":
        top = next((e for e in best if e.accepted), None)
        options = [(top, e) for e in best if not e.accepted] if top else []
    elif mode == "best-worst":
        half = len(entries) // 2
        options = list(zip(best[:half], worst[:half], strict=True))
    elif mode == "accepted-rejected":
        options = list(zip([e for e in best if e.accepted], [e for e in worst if not e.accepted], strict=False))
    else:
        options = sorted(product([e for e in best if e.accepted], [e for e in worst if not e.accepted]),
                         key=lambda p: (p[1].score - p[0].score, p[0].line, p[1].line))
    out = []
    for c, r in options:
        margin = c.score - r.score
        if abs(margin) <= TIE:
            counts["skipped_tie"] += 1
        elif margin < 0 or (r.accepted and not c.accepted):
            counts["skipped_reversed"] += 1
        elif margin < min_margin - TIE:
            counts["skipped_margin"] += 1
        else:
            out.append((c, r))
    return out


def sides(cand: Candidate, line: int, hygiene: Hygiene, failed: set[str], count: TokenCounter,
          counts: Counter[str], sites: list[tuple[str, str]]) -> tuple[list[Message], list[Message], str | None]:
    """One candidate, cleaned (:func:`~.run.clean`), as (prompt, continuation, tools JSON); tool-call
    arguments stay objects (what the chat template renders), the tools one JSON string (TRL parses it)."""
    row = to_hf(clean(cand, line, hygiene, failed, count, counts, sites), counts)
    messages = [{k: v for k, v in m.items() if v is not None} for m in row["messages"]]
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if first is None:
        raise Dropped("no_answer", "no assistant turn to prefer or reject")
    if first == 0:
        raise Unconvertible("messages[0]: an assistant turn before any prompt turn")
    tools = json.dumps(row["tools"], ensure_ascii=False) if row["tools"] else None
    return messages[:first], messages[first:], tools


def teacher_states(path: Path) -> tuple[dict[str, list[str]], dict[str, tuple[str, ...]]]:
    """Per candidate id, from each teacher's latest verdict (a retry after an error comes later in the
    file): the teachers that answered with an error, and the teachers that failed it."""
    states: dict[str, dict[str, bool]] = {}  # id -> teacher -> errored (passes are not kept)
    if path.exists():
        with path.open("rb") as f:
            for raw in f:
                try:
                    v = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue  # a blank line, or a line a killed run left half written
                cid, teacher = str(v.get("id")), str(v.get("teacher"))
                if v.get("error") or not v.get("passed"):
                    states.setdefault(cid, {})[teacher] = bool(v.get("error"))
                elif cid in states:
                    states[cid].pop(teacher, None)
    errors = {cid: [t for t, e in s.items() if e] for cid, s in states.items() if any(s.values())}
    fails = {cid: tuple(t for t, e in s.items() if not e) for cid, s in states.items()}
    return errors, fails


def _read(cd: CurateDir) -> Iterator[tuple[Path, int, bool, Candidate | Invalid, bytes]]:
    for name, accepted in (("accepted", True), ("rejected", False)):
        path = cd.jsonl(name)
        if path.exists():
            with path.open("rb") as f:
                for n, raw in enumerate(f, start=1):
                    if raw.strip():
                        yield path, n, accepted, parse_line(raw, n, str(path)), raw


def _note(listing: list[dict[str, Any]], counts: Counter[str], key: str, **entry: Any) -> None:
    counts[key] += 1
    if len(listing) < LISTED:
        listing.append(entry)


# ------------------------------------------------------------------------------- tgrs export

@dataclass
class PairReport(ExportReport):
    """An :class:`~.run.ExportReport` of a ``dpo`` export, with the pair settings."""

    settings: PairSettings = PairSettings()

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "pairs": asdict(self.settings)}

    def lines(self) -> list[str]:
        c, s = self.counts, self.settings
        out = super().lines()
        rules = {k.removeprefix("dropped_"): v for k, v in sorted(c.items()) if k.startswith("dropped_")}
        skipped = ", ".join(f"{k.removeprefix('skipped_')} {c[k]}" for k in (
            "skipped_tie", "skipped_reversed", "skipped_margin", "skipped_cap") if c[k])
        cap = f"at most {s.pairs_per_task} pairs a task" if s.pairs_per_task else "no cap on pairs a task"
        out[0] = f"tgrs export: {self.source} -> {self.out} (dpo: {s.mode}, {cap}, margin >= {s.min_margin:g})"
        out[1] = (f"  read {c['read']} ({c['read_accepted']} accepted, {c['read_rejected']} rejected) in "
                  f"{c['tasks']} tasks, set aside {c['set_aside']}, not paired {sum(rules.values())}"
                  + (f" ({', '.join(f'{k} {v}' for k, v in rules.items())})" if rules else ""))
        out.insert(2, f"  pairs written {c['written']} from {c['tasks_paired']} tasks; skipped: {skipped or 'none'}")
        return out


def export_pairs(source: str | Path, *, out: str | Path, settings: PairSettings = PairSettings(),
                 round: int | None = None, hygiene: Hygiene = Hygiene()) -> PairReport:
    """``tgrs export SOURCE --to dpo``: the pairs of a curate run directory, or of round ``round``
    (default: the last judged) of a ``tgrs run`` directory, to the JSONL file ``out``, with the
    report beside it (``OUT.export.json``)."""
    src = resolve_judged(source, round)
    ps = pair_candidates(src.path, settings, hygiene=hygiene, origins=src.origins)
    report = PairReport(str(src.path), src.kind, src.round, "dpo", str(out), hygiene,
                        f"tokenizer {hygiene.tokenizer}" if hygiene.tokenizer else "estimate: ceil(chars / 4)",
                        counts=ps.counts, redacted=ps.redacted, redaction_sites=ps.redaction_sites,
                        set_aside=ps.set_aside, dropped=ps.dropped, settings=settings)
    writer = Writer("dpo", Path(out))
    try:
        for row in ps.rows:
            writer.write(row)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    atomic_write(report.sidecar, json.dumps(report.to_json(), indent=1) + "\n")
    return report
