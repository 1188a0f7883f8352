"""The built-in instructions family: every task carries its own check, the panel runs it (and fails a
reply cut off at the cap), the splits share no topic, and the family is wired into the loop."""

from __future__ import annotations

import asyncio
import collections
import json

import pytest

from tgrs_agents.assets import asset_path
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.loop.contamination import overlaps
from tgrs_agents.loop.evaluate import judge_samples
from tgrs_agents.tasks import instructions as ins
from tgrs_agents.tasks import instructions_data as idata
from tgrs_agents.tasks.families import FAMILIES, family, task_canonical
from tgrs_agents.types import Candidate, Task

PANEL = load_panel(asset_path("teachers/panel-instructions.toml"))


def reply(task: Task, text: str, i: int = 0, stop: str = "final") -> dict:
    return {"id": f"{task.id}-{i}", "task_id": task.id, "reference": task.reference, "metadata": {"stop": stop},
            "messages": [task.messages[0].model_dump(), {"role": "assistant", "content": text}]}


def judged(samples: list[dict]) -> list[bool]:
    return [ok for _, ok in asyncio.run(judge_samples(samples, PANEL))]


def one(kind: str, **match: object) -> Task:
    train, held = ins.splits(160, 80, seed=0)
    return next(t for t in [*train, *held] if t.metadata["kind"] == kind
                and all(t.metadata.get(k) == v for k, v in match.items()))


@pytest.mark.parametrize(("kind", "good", "bad"), [
    ("lowercase", "the sea is wide and deep.", "The sea is wide."),
    ("uppercase", "THE SEA IS WIDE.", "THE SEA is wide."),
    ("bullets", "- apple\n- pear\n- plum", "- apple\n- pear"),
    ("json", None, "name: Ann"),
])
def test_each_kind_passes_what_follows_it_and_fails_what_does_not(kind: str, good: str | None, bad: str) -> None:
    t = one(kind)
    if kind == "json":
        keys = t.reference["schema"]["required"]
        good = "```json\n" + json.dumps({keys[0]: "x", keys[1]: 3}) + "\n```"
        bad = json.dumps({keys[0]: "x"})  # a key missing
    assert judged([reply(t, good), reply(t, bad, 1)]) == [True, False]


def test_parameters_reach_the_check() -> None:
    five = one("short", param=5)
    twelve = one("short", param=12)
    eight_words = "one two three four five six seven eight"
    assert judged([reply(five, eight_words), reply(twelve, eight_words, 1)]) == [False, True]
    start = one("start", param="Sure")
    end = one("end", param="The end.")
    assert judged([reply(start, "Sure, it is blue."), reply(start, "It is blue. Sure", 1),
                   reply(end, "It rains. The end."), reply(end, "The end. It rains.", 1)]) == [True, False, True, False]
    kw = one("keyword")
    word = kw.metadata["param"]
    assert judged([reply(kw, f"I think of {word.upper()} now."), reply(kw, f"I think of {word}s now.", 1)]) == [
        True, False]  # a whole word, any case


def test_a_reply_cut_at_the_cap_or_empty_fails_whatever_its_text() -> None:
    t = one("lowercase")
    assert judged([reply(t, "fine so far and on", stop="tokens"), reply(t, "fine so far", 1),
                   reply(t, "   ", 2), reply(t, "fine so far and", 3, stop="length")]) == [False, True, False, False]
    why = asyncio.run(ins.follows(Candidate.model_validate(reply(t, "fine", stop="length+prompt_truncated"))))
    assert why == (False, "not a finished reply (stop: length+prompt_truncated)")
    untagged = reply(t, "fine", 4)
    del untagged["metadata"]  # a candidate from a file, without a rollout's stop: its text decides
    assert asyncio.run(ins.follows(Candidate.model_validate(untagged)))[0]


def test_a_task_file_row_may_carry_several_checks_or_a_bad_one() -> None:
    both = [{"kind": "regex", "pattern": r"\A[^A-Z]*\Z"}, {"kind": "regex", "pattern": r"sea"}]
    t = Task(id="f1", messages=[{"role": "user", "content": "lowercase, mention the sea"}], reference=both)
    assert judged([reply(t, "the sea"), reply(t, "the lake", 1), reply(t, "The sea", 2)]) == [True, False, False]
    with pytest.raises(ValueError, match="expected a check"):
        ins.check_specs({"kind": "python", "function": "os:system"})
    with pytest.raises(ValueError, match="empty"):
        ins.check_specs([])


def test_splits_share_no_topic_and_spread_the_kinds() -> None:
    train, held = FAMILIES["instructions"].splits(160, 64, seed=3, n_ops=2)
    assert len(train) == 160 and len(held) == 64
    keys = [task_canonical(t) for t in [*train, *held]]
    assert None not in keys and len(set(keys)) == len(keys)
    assert not {t.metadata["topic"] for t in train} & {t.metadata["topic"] for t in held}
    assert not overlaps(train, held)
    kinds = collections.Counter(t.metadata["kind"] for t in held)
    assert set(kinds) == set(idata.KINDS) and max(kinds.values()) - min(kinds.values()) <= 4
    assert ins.splits(160, 64, seed=3) == (train, held)  # the same draw for the same arguments
    assert ins.splits(160, 64, seed=4)[1] != held
    with pytest.raises(ValueError, match="cannot draw 5000 distinct"):
        ins.splits(5000, 10)


def test_task_canonical_is_kind_topic_param_and_only_for_this_family() -> None:
    t = one("short", param=8)
    assert task_canonical(t) == f"short|{t.metadata['topic'].casefold()}|8"
    other = Task(id="o", messages=[{"role": "user", "content": "hi"}], metadata={"family": "instructions"})
    assert ins.task_canonical(other) is None
    assert family("instructions") is FAMILIES["instructions"]
    assert FAMILIES["instructions"].eval_panel == "teachers/panel-instructions.toml"


def test_demonstrations_follow_and_broken_ones_do_not() -> None:
    train, _ = ins.splits(120, 10, seed=1)
    clean = ins.seed_demonstrations(train, noise=0.0)
    broken = [ins.demonstration(t, broken=True) for t in train]
    for b in broken:
        b["id"] += "-broken"
    verdicts = judged([*clean, *broken])
    assert verdicts == [True] * len(clean) + [False] * len(broken)
    noisy = judged(ins.seed_demonstrations(train, noise=0.5, seed=2))
    assert 30 < sum(noisy) < 90
