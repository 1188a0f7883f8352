"""``--engine ray``: shards merged equal a single-process run on the same input."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from tgrs_agents.cluster.engine import curate_on_ray
from tgrs_agents.cluster.shards import copy_range, plan
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, CurateRun
from tgrs_agents.tasks.arithmetic_data import synthetic_lines

ROOT = Path(__file__).resolve().parents[2]
VERIFIERS = ROOT / "teachers" / "panel-verifiers.toml"
COUNTS = ("input_lines", "valid", "accepted", "rejected", "invalid", "failed", "passed", "pending")


def ids(path: Path) -> set[str]:
    return {json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()}


def rows(path: Path, drop: tuple[str, ...] = ()) -> list[str]:
    """The file's rows, order aside (workers finish in their own order), less the timing fields."""
    docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(json.dumps({k: v for k, v in d.items() if k not in drop}, sort_keys=True) for d in docs)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # broken lines every 37th; synthetic_lines also plants one repeated id (its second use is in the same
    # shard as its first; repeats across shards: tests/cluster/test_repeats.py)
    path = tmp_path_factory.mktemp("in") / "in.jsonl"
    path.write_text("".join(line + "\n" for line in synthetic_lines(600, seed=3, bad_every=37)))
    return path


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("single") / "run"
    summary = asyncio.run(CurateRun(data, load_panel(VERIFIERS), out, options=CurateOptions(cache=False)).run())
    return out, summary


def test_plan_cuts_at_line_ends_and_covers_the_file(tmp_path):
    path = tmp_path / "x.jsonl"
    lines = [f'{{"n": {i}, "pad": "{"x" * (i % 7)}"}}\n' for i in range(101)]
    path.write_text("".join(lines))
    for n in (1, 2, 3, 7, 200):
        ranges = plan(path, n)
        assert ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
        assert len(ranges) <= min(n, 101)
        got = []
        for i, (a, b) in enumerate(ranges):
            count = copy_range(path, a, b, tmp_path / f"s{n}-{i}")
            text = (tmp_path / f"s{n}-{i}").read_text()
            assert text.endswith("\n") and count == text.count("\n")
            got.append(text)
        assert "".join(got) == "".join(lines)


def test_sharded_equals_single_process(ray_local, data, single, tmp_path):
    one, s1 = single
    out = tmp_path / "ray"
    s = curate_on_ray(data, load_panel(VERIFIERS), out, options=CurateOptions(cache=False), workers=3)
    assert s["engine"]["shards"] == 3
    assert {k: s[k] for k in COUNTS} == {k: s1[k] for k in COUNTS}
    assert s1["accepted"] > 100 and s1["invalid"] > 10  # the comparison is not vacuous
    for name in ("accepted", "rejected", "invalid", "passed"):
        # the same rows: the same lines of the same input file, the same reasons
        assert rows(out / f"{name}.jsonl") == rows(one / f"{name}.jsonl"), name
    assert len((out / "accepted.jsonl").read_text().splitlines()) == s1["accepted"]  # none written twice
    assert rows(out / "verdicts.jsonl", drop=("latency_s",)) == rows(one / "verdicts.jsonl", drop=("latency_s",))
    for name, st in s1["teachers"].items():
        assert s["teachers"][name]["calls"] == st["calls"], name
    # run again: every shard is done, the merge is the same
    again = curate_on_ray(data, load_panel(VERIFIERS), out, options=CurateOptions(cache=False), workers=3)
    assert {k: again[k] for k in COUNTS} == {k: s1[k] for k in COUNTS}
    assert ids(out / "accepted.jsonl") == ids(one / "accepted.jsonl")


def test_merge_reads_as_the_whole_inputs_rows(tmp_path):
    from tgrs_agents.cluster.shards import merge

    src = str(tmp_path / "in.jsonl")
    runs, inputs = [], []
    for i in range(2):
        d = tmp_path / f"s{i}" / "run"
        d.mkdir(parents=True)
        shard_in = str(tmp_path / f"s{i}" / "input.jsonl")
        inputs.append(shard_in)
        runs.append(d)
        (d / "accepted.jsonl").write_text(json.dumps({"id": f"a{i}", "line": 2}) + "\n")
        (d / "invalid.jsonl").write_text(json.dumps({
            "line": 5, "id": "dup", "field": "id", "file": shard_in,
            "reason": f"{shard_in}:5: field 'id': expected a unique id; 'dup' was first used on line 3"}) + "\n")
    rows = merge(runs, [0, 10], tmp_path, shard_inputs=inputs, source=src)
    assert rows["accepted"] == 2 and rows["invalid"] == 2 and rows["verdicts"] == 0
    acc = [json.loads(x) for x in (tmp_path / "accepted.jsonl").read_text().splitlines()]
    assert [a["line"] for a in acc] == [2, 12]
    inv = [json.loads(x) for x in (tmp_path / "invalid.jsonl").read_text().splitlines()]
    assert inv[1] == {"line": 15, "id": "dup", "field": "id", "file": src,
                      "reason": f"{src}:15: field 'id': expected a unique id; 'dup' was first used on line 13"}
    assert inv[0]["file"] == src and inv[0]["line"] == 5
