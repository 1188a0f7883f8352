"""A directory of trajectory files as one input: the files a reader takes (sorted, by suffix, at any depth,
hidden ones skipped), ``auto`` on a directory, positions that run on across files, a broken file that
sets aside one record, duplicate ids across files, the fingerprint, and ``tgrs curate DIR`` killed and
resumed, ending exactly like an uninterrupted run."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from format_kit import FIXTURES, cmd, count, decided, kill_after, panel, read

from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import curate
from tgrs_agents.curation.store import input_fingerprint
from tgrs_agents.errors import ConfigError
from tgrs_agents.formats import FORMATS, dir_fingerprint, input_files, resolve
from tgrs_agents.formats.dirs import TRAJECTORY_SUFFIXES, list_files
from tgrs_agents.types import Candidate


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TGRS_CACHE_DIR", str(tmp_path / "cache"))


def traj(instance: str) -> dict[str, Any]:
    doc = json.loads((FIXTURES / "swe_agent.traj").read_text())
    doc["replay_config"] = {"problem_statement": {"id": instance}}
    return doc


def swe_dir(root: Path, instances: list[str]) -> Path:
    """SWE-agent's layout: one folder per instance holding its .traj and the files beside it."""
    for name in instances:
        d = root / name
        d.mkdir(parents=True)
        (d / f"{name}.traj").write_text(json.dumps(traj(name)))
        (d / f"{name}.pred").write_text("{}")
        (d / f"{name}.debug.log").write_text("log")
    (root / "run_batch.config.yaml").write_text("agent: {}\n")
    return root


def test_the_files_a_reader_takes_are_sorted_by_path_at_any_depth_and_hidden_ones_skipped(tmp_path: Path) -> None:
    for rel in ("b/z.traj", "a.traj", "b/a.traj", "B.traj", ".git/x.traj", "c/.hidden.traj", "c/notes.txt",
                "c/x.traj.json", "d.jsonl"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    rel = [p.relative_to(tmp_path).as_posix() for p in list_files(tmp_path, (".traj",))]
    assert rel == ["B.traj", "a.traj", "b/a.traj", "b/z.traj"]  # code-point order, not the file system's
    every = [p.relative_to(tmp_path).as_posix() for p in list_files(tmp_path)]
    assert every == ["B.traj", "a.traj", "b/a.traj", "b/z.traj", "c/x.traj.json", "d.jsonl"]
    # the fingerprint covers TRAJECTORY_SUFFIXES: every reader's files must be among them
    assert all(s.endswith(TRAJECTORY_SUFFIXES) for f in FORMATS.values() for s in f.suffixes)


def test_auto_on_a_swe_agent_directory_reads_each_traj_once_in_order(tmp_path: Path) -> None:
    root = swe_dir(tmp_path / "trajs", ["sympy-2", "astropy-1", "django-3"])
    fmt, why = resolve(root)
    assert fmt.name == "swe-agent" and why.startswith("auto: a directory: 3 of 3 files sniffed read as swe-agent")
    assert why.endswith("reading its 3 swe-agent files")
    good, bad = read(root, tmp_path)
    assert not bad and {pos: c.id for pos, c in good.items()} == {1: "astropy-1", 2: "django-3", 3: "sympy-2"}


def test_positions_run_on_across_files_and_a_bad_record_names_its_own_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    (root / "a").mkdir(parents=True)
    rec = lambda i: json.dumps({"id": i, "messages": [{"role": "user", "content": "q"},  # noqa: E731
                                                      {"role": "assistant", "content": "a"}]})
    (root / "a" / "1.jsonl").write_text(f"{rec('x')}\n\n{rec('y')}\n")  # positions 1 and 3
    (root / "b.jsonl").write_text(f"not json\n{rec('z')}\n{rec('x')}\n")  # 4 (bad), 5, 6 (x again)
    (root / "c.json").write_text('[{"id": "w", "messages": [{"role": "user", "content": "q"}]}, {"id": ')  # cut
    (root / "d.jsonl").write_text(rec("v") + "\n")  # read on after the broken file
    good, bad = read(root, tmp_path, fmt="openai")
    assert {p: c.id for p, c in good.items()} == {1: "x", 3: "y", 5: "z", 7: "w", 9: "v"}
    assert sorted(bad) == [4, 6, 8]
    b = str(root / "b.jsonl")
    assert bad[4].line == 4 and bad[4].file == b and bad[4].reason.startswith(f"{b}:1: ")
    assert bad[6].reason == (f"{b}:3: field 'id': expected a unique id; 'x' was first used at "
                             f"{root / 'a' / '1.jsonl'}:1")
    c = str(root / "c.json")
    assert bad[8].file == c and bad[8].reason.startswith(f"{c}: record 2: the file ends here")


def test_duplicate_ids_across_logs_name_the_file_that_used_them_first(tmp_path: Path) -> None:
    root = tmp_path / "logs"
    root.mkdir()
    for name in ("2025-01-01_a.json", "2025-01-02_b.json"):
        (root / name).write_text((FIXTURES / "inspect.json").read_text())
    fmt, _ = resolve(root)
    good, bad = read(root, tmp_path)
    assert fmt.name == "inspect" and sorted(good) == [1, 2, 3] and sorted(bad) == [4, 5, 6]
    first = root / "2025-01-01_a.json"
    assert bad[4].reason.endswith(f"was first used at {first}: record 1")
    assert bad[4].reason.startswith(f"{root / '2025-01-02_b.json'}: record 1: field 'id'")


def test_a_mini_swe_agent_directory_skips_its_preds_file(tmp_path: Path) -> None:
    root = tmp_path / "mini"
    for name in ("a-1", "b-2"):
        (root / name).mkdir(parents=True)
        doc = json.loads((FIXTURES / "mini_swe_agent.traj.json").read_text())
        doc["instance_id"] = name
        (root / name / f"{name}.traj.json").write_text(json.dumps(doc))
    (root / "preds.json").write_text(json.dumps({"a-1": {"model_patch": ""}}))
    fmt, _ = resolve(root)
    assert fmt.name == "mini-swe-agent" and [p.name for p in input_files(root, fmt)] == ["a-1.traj.json",
                                                                                         "b-2.traj.json"]
    good, bad = read(root, tmp_path)
    assert not bad and [c.id for c in good.values()] == ["a-1", "b-2"]


def test_a_directory_without_files_of_the_format_asked_for_says_what_it_looked_for(tmp_path: Path) -> None:
    root = swe_dir(tmp_path / "trajs", ["a-1"])
    with pytest.raises(ConfigError, match=r"no inspect files \(\*\.eval, \*\.json\) in this directory") as e:
        resolve(root, "inspect")
    assert e.value.file == str(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no trajectory files"):
        resolve(tmp_path / "empty")


def test_the_fingerprint_covers_the_file_list_and_contents_and_nothing_else(tmp_path: Path) -> None:
    root = swe_dir(tmp_path / "trajs", ["a-1", "b-2"])
    fp = input_fingerprint(root)
    assert fp == dir_fingerprint(root) and len(fp) == 16
    (root / "a-1" / "a-1.debug.log").write_text("more log")  # what the reader does not take
    (root / ".cache.json").write_text("{}")
    assert input_fingerprint(root) == fp
    tail = root / "b-2" / "b-2.traj"
    doc = json.loads(tail.read_text())
    doc["info"]["exit_status"] = "changed"  # at the end of the file, past any head a fingerprint might read
    tail.write_text(json.dumps(doc))
    assert input_fingerprint(root) != fp
    fp2 = input_fingerprint(root)
    (root / "c-3.traj").write_text(json.dumps(traj("c-3")))  # a file more
    fp3 = input_fingerprint(root)
    assert fp3 != fp2
    (root / "c-3.traj").rename(root / "c-4.traj")  # the same bytes under another name
    assert input_fingerprint(root) not in (fp2, fp3)


def instances(root: Path, files: int, per_file: int) -> Path:
    """``files`` JSONL files of OpenAI records in nested folders, with the reward recorded in metadata."""
    for k in range(files):
        path = root / f"shard-{k // 10}" / f"part-{k:03d}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(per_file):
            n = k * per_file + i
            final = "Your booking is cancelled." if n % 10 else "I could not do it."
            rec = {"id": f"r{n}", "messages": [{"role": "user", "content": f"Cancel booking {n}."},
                                               {"role": "assistant", "content": final}],
                   "metadata": {"reward": 0.0 if n % 7 == 0 else 1.0}}
            lines.append("not json" if n % 97 == 96 else json.dumps(rec))
        path.write_text("\n".join(lines) + "\n")
    (root / "notes.txt").write_text("not an input")
    return root


def test_curate_a_directory_killed_and_resumed_ends_like_an_uninterrupted_run(tmp_path: Path) -> None:
    files, per = 30, 40
    root, pnl = instances(tmp_path / "shards", files, per), panel(tmp_path)
    whole = tmp_path / "whole"
    summary = asyncio.run(curate(root, load_panel(pnl), whole))
    assert summary["input_format"] == "openai" and summary["input_lines"] == files * per
    want = decided(whole)
    assert {line for line, _ in want["invalid"]} == {n + 1 for n in range(files * per) if n % 97 == 96}
    assert {(line, cid) for line, cid in want["accepted"]} == {
        (n + 1, f"r{n}") for n in range(files * per) if n % 7 and n % 10 and n % 97 != 96}

    out = tmp_path / "killed"
    kill_after(cmd(root, pnl, out), out)
    assert 0 < count(out) < len(want["accepted"]) + len(want["rejected"])
    done = subprocess.run(cmd(root, pnl, out, "--json"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "input format openai (auto: a directory: 5 of 5 files sniffed read as openai" in done.stderr
    assert "reading its 30 openai files" in done.stderr
    assert decided(out) == want
    keys = ("input_lines", "valid", "accepted", "rejected", "invalid", "pending", "input_format")
    assert {k: json.loads(done.stdout)[k] for k in keys} == {k: summary[k] for k in keys}

    # the directory changed under the run: refused, not resumed at positions that now mean other records
    with (root / "shard-0" / "part-000.jsonl").open("a") as f:
        f.write(json.dumps({"id": "new", "messages": [{"role": "user", "content": "q"}]}) + "\n")
    again = subprocess.run(cmd(root, pnl, out), capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "it was started on another input" in again.stderr


def test_out_inside_the_input_directory_is_refused(tmp_path: Path) -> None:
    root = swe_dir(tmp_path / "trajs", ["a-1"])
    with pytest.raises(ConfigError, match="--out is inside the input directory"):
        asyncio.run(curate(root, load_panel(panel(tmp_path)), root / "run"))
    assert not (root / "run").exists()


def test_a_directory_read_as_candidates_keeps_their_content(tmp_path: Path) -> None:
    root = swe_dir(tmp_path / "trajs", ["a-1"])
    [c] = read(root, tmp_path)[0].values()
    [alone] = read(root / "a-1" / "a-1.traj", tmp_path)[0].values()
    assert isinstance(c, Candidate) and c == alone  # a file read alone or in its directory: the same candidate
