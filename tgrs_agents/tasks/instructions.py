"""The built-in instructions family: verifiable instruction-following prompts, each with its own check.

"Describe the ocean. Answer in capital letters only." -> the reply must match
``\\A[^a-z]*[A-Z][^a-z]*\\Z``. Each task carries its verifier settings in ``reference``: a
``regex`` or ``json_schema`` teacher config without its name (``{"kind": "regex", "pattern":
...}``), or a list of them that must all pass. One ``python`` teacher, :func:`follows`
(``teachers/panel-instructions.toml``), runs each candidate's own check through the project's
``regex`` / ``json_schema`` teachers, so a task file of such tasks is judged the same way (and
evaluated so, with ``[eval] panel`` naming that file). A reply cut off at the token cap (a rollout's
``metadata.stop`` is ``tokens``; a turn's finish reason starts with ``length``) fails whatever its
text: it is not a finished answer. Kinds, topics and checks are in :mod:`.instructions_data`.

Splits: topics (questions, things to list, JSON key pairs) are dealt into a held-out share and a
training share by ``seed``, so the held-out split asks about topics the training pool never
mentions, under the same kinds of constraint (what the loop teaches is following the constraint,
not the topic). :func:`task_canonical` is ``kind|topic|param``. ``seed_demonstrations`` (for the
tiny student) are short replies that meet the constraint, a fraction of them broken.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass
from typing import Any

from ..types import Candidate, Message, Task, Verdict
from . import instructions_data as idata
from .env import Tool

SPLITS_VERSION = 1  # bump when splits() would draw other tasks for the same arguments
HELD_SHARE = 1 / 3  # of each topic list, dealt to the held-out split
CHECK_KINDS = ("regex", "json_schema")
UNFINISHED = ("tokens", "turns", "error")  # a rollout's metadata.stop when the reply did not end by itself


@dataclass(frozen=True, slots=True)
class Difficulty:
    n_ops: int = 1  # unused (the loop's [tasks] n_ops is for the other families)
    kinds: tuple[str, ...] = idata.KINDS


def make_tools() -> list[Tool]:
    """This family's tool factory: none (the answer is the reply itself)."""
    return []


def task_of(kind: str, item: Any, param: Any, task_id: str) -> Task:
    text, check, _ = idata.constraint(kind, item, param)
    return Task(id=task_id, messages=[Message(role="user", content=text)], reference=check,
                metadata={"family": "instructions", "kind": kind, "topic": idata.item_key(kind, item),
                          "param": param})


def task_canonical(task: Task) -> str | None:
    """``kind|topic|param`` for a task of this family; None for any other task."""
    md = task.metadata
    if md.get("family") != "instructions" or md.get("kind") not in idata.KINDS or "topic" not in md:
        return None
    return f"{md['kind']}|{str(md['topic']).casefold()}|{md.get('param')}"


def deal(seed: int) -> dict[str, tuple[list[Any], list[Any]]]:
    """Per topic list (questions, things, JSON keys): (training topics, held-out topics)."""
    out: dict[str, tuple[list[Any], list[Any]]] = {}
    for name, items in (("questions", idata.QUESTIONS), ("things", idata.THINGS), ("json", idata.JSON_KEYS)):
        shuffled = list(items)
        random.Random(f"{seed}-{name}").shuffle(shuffled)
        cut = round(len(shuffled) * HELD_SHARE)
        out[name] = (shuffled[cut:], shuffled[:cut])
    return out


def _candidates(kinds: tuple[str, ...], topics: dict[str, list[Any]]) -> list[tuple[str, Any, Any]]:
    """Every (kind, topic, param) the topics allow, grouped by kind."""
    lists = {"bullets": topics["things"], "json": topics["json"]}
    return [(k, item, p) for k in kinds for item in lists.get(k, topics["questions"]) for p in idata.params(k, item)]


def make_tasks(n: int, *, seed: int, held: bool, d: Difficulty = Difficulty(), prefix: str = "t") -> list[Task]:
    """``n`` distinct tasks on the training (or held-out) topics, the kinds as even as the topics allow."""
    unknown = sorted(set(d.kinds) - set(idata.KINDS))
    if unknown:
        raise ValueError(f"unknown constraint kinds {unknown}; expected some of {', '.join(idata.KINDS)}")
    topics = {name: parts[1 if held else 0] for name, parts in deal(seed).items()}
    rng = random.Random(seed + (10_000 if held else 0))
    by_kind = {k: [c for c in _candidates(d.kinds, topics) if c[0] == k] for k in d.kinds}
    for cs in by_kind.values():
        rng.shuffle(cs)
    total = sum(map(len, by_kind.values()))
    if n > total:
        raise ValueError(f"cannot draw {n} distinct instructions tasks from the {'held-out' if held else 'training'} "
                         f"topics: there are {total}")
    picked: list[tuple[str, Any, Any]] = []
    while len(picked) < n:  # round robin over the kinds, so each is about n / len(kinds)
        for k in d.kinds:
            if by_kind[k] and len(picked) < n:
                picked.append(by_kind[k].pop())
    rng.shuffle(picked)
    return [task_of(k, item, p, f"{prefix}{i}") for i, (k, item, p) in enumerate(picked)]


def splits(n_train: int, n_eval: int, *, seed: int = 0,
           d: Difficulty = Difficulty()) -> tuple[list[Task], list[Task]]:
    """A train pool and a held-out split whose topics are disjoint (see the module docstring)."""
    held = make_tasks(n_eval, seed=seed, held=True, d=d, prefix="eval-")
    train = make_tasks(n_train, seed=seed, held=False, d=d, prefix="train-")
    return train, held


# --------------------------------------------------------------------------------- the check

def check_specs(reference: Any) -> list[dict[str, Any]]:
    """A task's check (``reference``) as a list of teacher configs; ValueError saying what is wrong."""
    specs = reference if isinstance(reference, list) else [reference]
    if not specs:
        raise ValueError("the check list is empty")
    for s in specs:
        if not isinstance(s, dict) or s.get("kind") not in CHECK_KINDS:
            raise ValueError(f"expected a check {{\"kind\": \"regex\" or \"json_schema\", ...}} in the task's "
                             f"reference; got {json.dumps(s, default=str)[:80]}")
    return specs


@functools.lru_cache(maxsize=4096)
def _teacher(spec_json: str) -> Any:
    from ..teachers.base import teacher_class

    spec = json.loads(spec_json)
    cls = teacher_class(spec["kind"])
    return cls(cls.Config.model_validate({"name": "instruction", **spec}))


async def follows(candidate: Candidate) -> tuple[bool, str]:
    """The ``python`` teacher of ``teachers/panel-instructions.toml``: the reply is finished and
    passes every check its task carries (``reference``)."""
    stop = str(candidate.metadata.get("stop") or "")
    if stop in UNFINISHED or stop.startswith("length"):
        return False, f"not a finished reply (stop: {stop})"
    if not candidate.final_text.strip():
        return False, "empty reply"
    for spec in check_specs(candidate.reference):
        verdict: Verdict = await _teacher(json.dumps(spec, sort_keys=True)).judge(candidate)
        if not verdict.passed:
            return False, f"{spec['kind']}: {verdict.rationale}"
    return True, "follows the instruction"


# ------------------------------------------------------------------ warm start (tiny student)

RAMBLE = "I do not know what to say about that, so I will say nothing more about it at all today."


def demonstration(task: Task, *, broken: bool = False) -> dict[str, Any]:
    """A reply that meets ``task``'s constraint (``broken``: one that does not)."""
    md = task.metadata
    kind, topic, param = md["kind"], md["topic"], md.get("param")
    item = next(x for x in idata.pool(kind) if idata.item_key(kind, x) == topic)
    text = idata.answer(kind, item, param)
    if broken:  # the commonest failures: wrong case, a missing part, a rambling reply
        text = {"lowercase": text.capitalize(), "uppercase": text.lower(), "json": text.replace("{", ""),
                "bullets": text.rsplit("\n", 1)[0]}.get(kind) or RAMBLE
    return {"id": f"demo-{task.id}", "task_id": task.id, "reference": task.reference,
            "messages": [task.messages[0].model_dump(exclude_none=True), {"role": "assistant", "content": text}],
            "tools": None}


def seed_demonstrations(tasks: list[Task], *, noise: float = 0.3, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [demonstration(t, broken=rng.random() < noise) for t in tasks]
