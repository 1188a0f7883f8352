"""Data filters for accepted trajectories (after OpenThoughts' data recipe), as functions over batches.

Each filter takes a list of candidate records (dicts with ``id``, ``task_id``, ``messages``: the
rows of ``accepted.jsonl``) and returns a :class:`FilterResult`: the records it keeps, in input
order, and the ones it sets aside, each with the filter's name and a reason. Nothing is dropped
silently, and no filter looks at anything but its arguments, so they compose in any order::

    res = difficulty_band(accepted, pass_rates(decided), lo=0.1, hi=0.9)
    res = res.then(length_bounds, max_tokens=512, count=count_chars)
    res = res.then(near_duplicates, threshold=0.8)
    res = res.then(cap_per_task, cap=4)
    res.kept, res.set_aside

The boundaries (each is tested):

* :func:`difficulty_band`: a task's pass rate is the fraction of the student's N samples for it
  that the panel accepted. Kept iff ``lo <= rate <= hi`` (both inclusive) *and*, unless
  ``keep_extremes``, ``0 < rate < 1``: never-solved tasks have no right sample to learn from and
  always-solved ones teach nothing new. Tasks without a rate are set aside.
* :func:`length_bounds`: kept iff ``min_tokens <= n <= max_tokens`` (both inclusive, either
  optional), ``n`` = the response's tokens: the assistant tokens of the chat template
  (``{% generation %}`` spans) with a tokenizer, or whatever ``count`` returns.
* :func:`near_duplicates`: text = the response (every message from the first assistant turn
  on: assistant text, tool calls, tool results), casefolded, whitespace collapsed; similarity =
  Jaccard of the sets of character ``ngram``-grams. A record is set aside iff its similarity to a
  record *kept before it* is ``>= threshold`` (inclusive); the first of a group is kept.
  ``scope="task"`` compares records of the same task only (exact, pairwise); ``scope="all"``
  compares across tasks, finding candidate pairs with MinHash LSH and confirming each with the
  exact Jaccard (so a reported duplicate is always a true one; LSH is tuned to find at least 99%
  of the pairs at the threshold).
* :func:`cap_per_task`: the first ``cap`` records of each task are kept (input order, or highest
  ``score`` first with ``by="score"``; ties keep input order).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..chat import FLAT, SPOKEN, has_generation_markers, pieces, render, template_messages

Record = dict[str, Any]


@dataclass
class FilterResult:
    kept: list[Record]
    set_aside: list[Record] = field(default_factory=list)  # {"record", "filter", "reason"}

    def then(self, fn: Callable[..., FilterResult], *args: Any, **kw: Any) -> FilterResult:
        """Run another filter on the kept records; set-asides accumulate."""
        nxt = fn(self.kept, *args, **kw)
        return FilterResult(nxt.kept, self.set_aside + nxt.set_aside)

    def reasons(self) -> Counter[str]:
        """How many records each filter set aside."""
        return Counter(s["filter"] for s in self.set_aside)


def _aside(rec: Record, name: str, reason: str) -> Record:
    return {"record": rec, "filter": name, "reason": reason}


def _task(rec: Record) -> str:
    return str(rec.get("task_id") or rec["id"])


# ----------------------------------------------------------------------------- difficulty band

def pass_rates(outcomes: Iterable[tuple[str, bool] | Record]) -> dict[str, float]:
    """Per-task pass rate from ``(task_id, passed)`` pairs or records with ``task_id`` and ``label``/``accepted``."""
    n: Counter[str] = Counter()
    ok: Counter[str] = Counter()
    for o in outcomes:
        if isinstance(o, dict):
            task = _task(o)
            passed = bool(o["label"] if "label" in o else o["accepted"])
        else:
            task, passed = str(o[0]), bool(o[1])
        n[task] += 1
        ok[task] += passed
    return {t: ok[t] / n[t] for t in n}


def pass_rates_from_run(run_dir: Any) -> dict[str, float]:
    """Pass rates from a curate run directory: accepted / (accepted + rejected) per task."""
    from pathlib import Path

    from ..curation.layout import CurateDir
    from ..curation.store import iter_jsonl

    run = CurateDir(Path(run_dir))
    pairs = [(_task(r), ok) for name, ok in (("accepted", True), ("rejected", False))
             for r in iter_jsonl(run.jsonl(name))]
    return pass_rates(pairs)


def difficulty_band(records: Sequence[Record], rates: Mapping[str, float], *, lo: float = 0.0,
                    hi: float = 1.0, keep_extremes: bool = False) -> FilterResult:
    """Keep records of tasks whose pass rate is in ``[lo, hi]`` (and in ``(0, 1)`` unless ``keep_extremes``)."""
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"expected 0 <= lo <= hi <= 1; got lo={lo}, hi={hi}")
    out = FilterResult([])
    for rec in records:
        rate = rates.get(_task(rec))
        if rate is None:
            out.set_aside.append(_aside(rec, "difficulty", "no pass rate for this task"))
        elif not keep_extremes and rate <= 0.0:
            out.set_aside.append(_aside(rec, "difficulty", "never solved (pass rate 0)"))
        elif not keep_extremes and rate >= 1.0:
            out.set_aside.append(_aside(rec, "difficulty", "always solved (pass rate 1)"))
        elif not lo <= rate <= hi:
            out.set_aside.append(_aside(rec, "difficulty", f"pass rate {rate:.3g} outside [{lo:g}, {hi:g}]"))
        else:
            out.kept.append(rec)
    return out


# ------------------------------------------------------------------------------- length bounds

def response_tokens(rec: Record, tokenizer: Any) -> int:
    """Assistant tokens of ``rec`` under ``tokenizer``'s chat template (its ``{% generation %}`` spans).

    Templates without generation markers: the tokens of the assistant texts and tool-call arguments.
    """
    if has_generation_markers(getattr(tokenizer, "chat_template", None)):
        enc = tokenizer.apply_chat_template(template_messages(rec["messages"]), tools=rec.get("tools") or None,
                                            tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        return int(sum(enc["assistant_masks"]))
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in _assistant_texts(rec))


def _assistant_texts(rec: Record) -> list[str]:
    """The assistant's texts and ``name args`` per tool call (:data:`tgrs_agents.chat.SPOKEN`)."""
    return pieces(rec["messages"], SPOKEN, roles={"assistant"})


def count_chars(rec: Record) -> int:
    """Characters of the assistant turns (a tokenizer-free length; the tiny student's tokens)."""
    return sum(len(t) for t in _assistant_texts(rec))


def length_bounds(records: Sequence[Record], *, min_tokens: int | None = None, max_tokens: int | None = None,
                  tokenizer: Any = None, count: Callable[[Record], int] | None = None) -> FilterResult:
    """Keep records whose response length ``n`` satisfies ``min_tokens <= n <= max_tokens``."""
    if tokenizer is None and count is None:
        raise ValueError("pass a tokenizer or a count function")
    if min_tokens is not None and max_tokens is not None and min_tokens > max_tokens:
        raise ValueError(f"expected min_tokens <= max_tokens; got {min_tokens} > {max_tokens}")
    measure = count or (lambda r: response_tokens(r, tokenizer))
    out = FilterResult([])
    for rec in records:
        n = measure(rec)
        if min_tokens is not None and n < min_tokens:
            out.set_aside.append(_aside(rec, "length", f"{n} tokens < min_tokens {min_tokens}"))
        elif max_tokens is not None and n > max_tokens:
            out.set_aside.append(_aside(rec, "length", f"{n} tokens > max_tokens {max_tokens}"))
        else:
            out.kept.append(rec)
    return out


# ---------------------------------------------------------------------------- near duplicates

_SPACE = re.compile(r"\s+")
_MERSENNE = (1 << 61) - 1


def trajectory_text(rec: Record) -> str:
    """The trajectory after the instruction (:data:`tgrs_agents.chat.FLAT`), casefolded, whitespace collapsed."""
    return _SPACE.sub(" ", render(rec["messages"], FLAT, from_assistant=True)).strip().casefold()


def shingles(text: str, n: int) -> frozenset[str]:
    if len(text) <= n:
        return frozenset([text])
    return frozenset(text[i:i + n] for i in range(len(text) - n + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _h64(s: str) -> int:
    return int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")


@functools.cache
def _coeffs(num_perm: int, seed: int) -> tuple[tuple[int, int], ...]:
    rng = random.Random(seed)
    return tuple((rng.randrange(1, _MERSENNE), rng.randrange(0, _MERSENNE)) for _ in range(num_perm))


def minhash(sh: frozenset[str], num_perm: int, seed: int = 1) -> tuple[int, ...]:
    """A MinHash signature: for each of ``num_perm`` universal hash functions, the least value."""
    coeffs = _coeffs(num_perm, seed)
    hs = [_h64(x) for x in sh]
    return tuple(min((a * h + b) % _MERSENNE for h in hs) for a, b in coeffs)


def lsh_shape(threshold: float, num_perm: int, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows): the most selective banding that still pairs ``recall`` of the pairs at ``threshold``."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        if 1 - (1 - threshold ** rows) ** bands >= recall:
            best = (bands, rows)
    return best


def near_duplicates(records: Sequence[Record], *, threshold: float = 0.8, ngram: int = 5,
                    scope: Literal["task", "all"] = "task", num_perm: int = 128,
                    text: Callable[[Record], str] = trajectory_text) -> FilterResult:
    """Set aside records whose n-gram Jaccard to an earlier kept record is ``>= threshold``."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"expected 0 < threshold <= 1; got {threshold}")
    if ngram < 1:
        raise ValueError(f"expected ngram >= 1; got {ngram}")
    sets = [shingles(text(r), ngram) for r in records]
    out = FilterResult([])
    kept_idx: dict[str, list[int]] = defaultdict(list)  # scope key -> kept record indices
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)  # (band, hash) -> kept indices
    bands, rows = lsh_shape(threshold, num_perm) if scope == "all" else (0, 0)
    for i, rec in enumerate(records):
        if scope == "task":
            candidates = kept_idx[_task(rec)]
        else:
            sig = minhash(sets[i], num_perm)
            keys = [(b, hash(sig[b * rows:(b + 1) * rows])) for b in range(bands)]
            candidates = sorted({j for k in keys for j in buckets.get(k, ())})
        dup = next(((j, sim) for j in candidates if (sim := jaccard(sets[i], sets[j])) >= threshold), None)
        if dup is not None:
            j, sim = dup
            out.set_aside.append(_aside(rec, "near_duplicate",
                                        f"jaccard {sim:.3f} >= {threshold:g} with {records[j]['id']}"))
            continue
        out.kept.append(rec)
        if scope == "task":
            kept_idx[_task(rec)].append(i)
        else:
            for k in keys:
                buckets[k].append(i)
    return out


# -------------------------------------------------------------------------------- cap per task

def cap_per_task(records: Sequence[Record], *, cap: int, by: Literal["input", "score"] = "input") -> FilterResult:
    """Keep at most ``cap`` records per task: the first ones, or the highest ``score`` ones."""
    if cap < 0:
        raise ValueError(f"expected cap >= 0; got {cap}")
    order = list(range(len(records)))
    if by == "score":
        order.sort(key=lambda i: -float(records[i].get("score") or 0.0))  # stable: ties keep input order
    keep: set[int] = set()
    seen: Counter[str] = Counter()
    for i in order:
        task = _task(records[i])
        if seen[task] < cap:
            keep.add(i)
        seen[task] += 1
    out = FilterResult([])
    for i, rec in enumerate(records):
        if i in keep:
            out.kept.append(rec)
        else:
            out.set_aside.append(_aside(rec, "cap_per_task", f"task {_task(rec)} already has {cap}"))
    return out
