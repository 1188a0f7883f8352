"""Train/eval overlap of task files: exact, normalised text and canonical twins are refused unless allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tgrs_agents.errors import ConfigError
from tgrs_agents.loop.config import LoopConfig, load_run_config
from tgrs_agents.loop.contamination import overlaps
from tgrs_agents.loop.sampling import load_tasks
from tgrs_agents.types import Task


def task(i: str, text: str, role: str = "user") -> Task:
    return Task(id=i, messages=[{"role": role, "content": text}], reference=1)


def test_levels_from_exact_to_canonical():
    train = [task("a", "What is 2 + 3?"), task("b", "Name a colour."), task("c", "What is 12 + 5?")]
    held = [task("x", "What is 2 + 3?"), task("y", "  name a COLOUR "), task("z", "What is 5 + 12?"),
            task("w", "What is 5 - 12?"), task("v", "Name a color.")]
    found = {o.held.id: (o.level, o.train.id) for o in overlaps(train, held)}
    assert found == {"x": ("exact", "a"), "y": ("text", "b"), "z": ("canonical", "c")}


def write_tasks(path: Path, texts: list[str], prefix: str) -> None:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "messages": [{"role": "user", "content": t}],
                                        "reference": 0}) + "\n" for i, t in enumerate(texts)))


def test_overlapping_task_files_are_refused_naming_both_files_and_an_example(tmp_path):
    write_tasks(tmp_path / "train.jsonl", ["What is 1 + 2?", "What is 12 + 5?", "What is 3 + 4?"], "t")
    write_tasks(tmp_path / "held.jsonl", ["What is 9 + 9?", "What is 5 + 12?"], "e")
    p = tmp_path / "run.toml"
    p.write_text('[tasks]\nsource = "train.jsonl"\neval_source = "held.jsonl"\n')
    with pytest.raises(ConfigError) as ei:
        load_tasks(load_run_config(p))
    e = ei.value
    assert e.file == str(p) and e.field == "tasks.eval_source"
    assert "1 of 2 held-out tasks are also training tasks (1 canonical)" in e.detail
    assert "held.jsonl line 2 (e1: 'What is 5 + 12?')" in e.detail
    assert "train.jsonl line 2 (t1: 'What is 12 + 5?')" in e.detail and "allow_overlap = true" in e.detail
    logs: list[str] = []
    p.write_text(p.read_text() + "allow_overlap = true\n")
    train, held = load_tasks(load_run_config(p), log=logs.append)
    assert len(train) == 3 and len(held) == 2
    assert logs == ["[tgrs] warning: 1 of 2 held-out tasks are also training tasks (allow_overlap = true)"]


def test_the_built_in_splits_pass_the_check():
    train, held = load_tasks(LoopConfig(tasks={"n_train": 400, "n_eval": 200, "n_ops": 1}))
    assert len(train) == 400 and not overlaps(train, held)
