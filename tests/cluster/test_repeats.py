"""A repeated id whose first use is in another shard: set aside as one process sets it aside, never judged."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tgrs_agents.cluster.engine import curate_on_ray
from tgrs_agents.cluster.ids import FOREIGN, cross_shard_repeats, scan_shard
from tgrs_agents.cluster.shards import copy_range, plan
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, CurateRun
from tgrs_agents.errors import TgrsError
from tgrs_agents.formats import resolve
from tgrs_agents.tasks.arithmetic_data import synthetic_lines

ROOT = Path(__file__).resolve().parents[2]
VERIFIERS = ROOT / "teachers" / "panel-verifiers.toml"
COUNTS = ("input_lines", "valid", "accepted", "rejected", "invalid", "failed", "passed", "pending")


def repeated_input(path: Path) -> Path:
    """300 synthetic lines (broken ones, one in-shard repeat, and an invalid record with id "x"), a record
    without an id (its id minted from content: the input reads as openai-ft), then, at the end (the last
    shard), repeats of ids first used at the start: the same records again, another record under a used
    id, the id-less record again, and a valid record with id "x" (the invalid "x" claimed no id: one
    process accepts it)."""
    lines = list(synthetic_lines(300, seed=5, bad_every=37))
    assert '"id": "x"' in lines[73]  # synthetic_lines' invalid record with id "x"
    no_id = json.loads(lines[5])
    no_id.pop("id")
    lines.insert(6, json.dumps(no_id))
    other = json.loads(lines[40])
    other["id"] = json.loads(lines[30])["id"]
    valid_x = json.loads(lines[41])
    valid_x["id"] = "x"
    lines += [lines[10], lines[20], json.dumps(other), json.dumps(no_id), json.dumps(valid_x), lines[11]]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def rows(path: Path, drop: tuple[str, ...] = ()) -> list[str]:
    docs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(json.dumps({k: v for k, v in d.items() if k not in drop}, sort_keys=True) for d in docs)


def test_the_pre_pass_finds_the_repeats_of_earlier_shards(tmp_path):
    src = repeated_input(tmp_path / "in.jsonl")
    fmt = resolve(src, "auto")[0].name  # as the engine does: each shard reads as the whole would
    assert fmt == "openai-ft"
    dirs, offsets, total = [], [], 0
    for i, (a, b) in enumerate(plan(src, 3)):
        d = tmp_path / f"s{i}"
        d.mkdir()
        offsets.append(total)
        total += copy_range(src, a, b, d / "input.jsonl")
        scan_shard(d / "input.jsonl", fmt)
        dirs.append(d)
    assert cross_shard_repeats(dirs, offsets, tmp_path) == 5  # cand-9, -19, -29, -10 and the minted id; not "x"
    found = {cid: off + line for d, off in zip(dirs, offsets, strict=True)
             for cid, line in map(json.loads, (d / FOREIGN).read_text().splitlines())}
    lines = src.read_text().splitlines()
    for cid, first in found.items():  # the line (of the whole input) of each id's first use
        assert json.loads(lines[first - 1]).get("id", cid) == cid
    assert "x" not in found and not (dirs[0] / FOREIGN).read_text()
    assert not list(tmp_path.glob("ids-cluster.sqlite*"))  # the driver's index is scratch


def test_cross_shard_repeats_equal_a_single_process_run(ray_local, tmp_path):
    src = repeated_input(tmp_path / "in.jsonl")
    one = tmp_path / "single"
    s1 = asyncio.run(CurateRun(src, load_panel(VERIFIERS), one, options=CurateOptions(cache=False)).run())
    reasons = [r for r in rows(one / "invalid.jsonl") if "expected a unique id" in r]
    assert len(reasons) == 6  # 5 across shards + synthetic_lines' own (in one shard): not vacuous
    out = tmp_path / "ray"
    s = curate_on_ray(src, load_panel(VERIFIERS), out, options=CurateOptions(cache=False), workers=3)
    assert s["engine"]["shards"] == 3 and s["engine"]["cross_shard_repeats"] == 5
    assert {k: s[k] for k in COUNTS} == {k: s1[k] for k in COUNTS}
    for name in ("accepted", "rejected", "invalid", "passed"):
        assert rows(out / f"{name}.jsonl") == rows(one / f"{name}.jsonl"), name  # the same reasons, lines
    assert rows(out / "verdicts.jsonl", drop=("latency_s",)) == rows(one / "verdicts.jsonl", drop=("latency_s",))
    for name, st in s1["teachers"].items():
        assert s["teachers"][name]["calls"] == st["calls"], name  # the repeats were never judged
    decided = [json.loads(x)["id"] for name in ("accepted", "rejected")
               for x in (out / f"{name}.jsonl").read_text().splitlines()]
    assert "x" in decided and len(decided) == len(set(decided))  # judged once each


def test_a_repeat_stays_set_aside_when_the_shard_is_rerun_with_force(ray_local, tmp_path):
    src = repeated_input(tmp_path / "in.jsonl")
    out = tmp_path / "ray"
    first = curate_on_ray(src, load_panel(VERIFIERS), out, options=CurateOptions(cache=False), workers=2)
    panel = tmp_path / "panel.toml"  # another panel: each shard run is archived and started afresh
    panel.write_text(VERIFIERS.read_text().replace('\\d"', '\\d+"'))
    with pytest.raises(TgrsError, match="another panel"):
        curate_on_ray(src, load_panel(panel), out, options=CurateOptions(cache=False), workers=2)
    again = curate_on_ray(src, load_panel(panel), out, options=CurateOptions(cache=False, force=True), workers=2)
    assert {k: again[k] for k in COUNTS} == {k: first[k] for k in COUNTS}
    assert again["engine"]["cross_shard_repeats"] == 5
