"""Which file an export reads: curate run dirs, `tgrs run` dirs (last round or --round), plain files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from export_data import Curated

from tgrs_agents.errors import ConfigError
from tgrs_agents.export.source import errored, errored_ids, read, resolve


def write(path: Path, *recs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))
    return path


def rec(cid: str, **extra: object) -> dict[str, object]:
    return {"id": cid, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            **extra}


def test_a_curate_run_exports_accepted_and_reads_its_input_for_errors(curated: Curated) -> None:
    src = resolve(curated.dir)
    assert (src.path, src.kind, src.round) == (curated.dir / "accepted.jsonl", "curate", None)
    assert src.origins == ((curated.input, "openai"),)
    assert "errored" in errored_ids(src.origins)  # accepted.jsonl itself no longer says so
    assert "errored" in curated.accepted and "metadata" not in curated.accepted["errored"]


def test_a_curate_run_without_accepted_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"accepted\.jsonl"):
        resolve(tmp_path)
    with pytest.raises(ConfigError, match="--round"):
        write(tmp_path / "accepted.jsonl", rec("a"))
        resolve(tmp_path, round=1)


def test_a_loop_dir_exports_the_last_pool_or_the_round_asked(tmp_path: Path) -> None:
    for k in (1, 2, 3):
        write(tmp_path / f"round-{k}" / "candidates.jsonl", rec(f"r{k}-ok"),
              rec(f"r{k}-bad", metadata={"stop": "error"}), "{not json")
    for k in (1, 2):
        write(tmp_path / f"round-{k}" / "pool.jsonl", rec(f"r{k}-ok"))
    (tmp_path / "round-0").mkdir()
    src = resolve(tmp_path)
    assert (src.path, src.kind, src.round) == (tmp_path / "round-2" / "pool.jsonl", "loop", 2)
    assert errored_ids(src.origins) == {"r1-bad", "r2-bad"}  # rounds after the one exported are not read
    assert resolve(tmp_path, round=1).path == tmp_path / "round-1" / "pool.jsonl"
    with pytest.raises(ConfigError, match=r"round 3 has no pool.jsonl; rounds with one: 1, 2"):
        resolve(tmp_path, round=3)


def test_a_file_is_read_as_it_is_and_anything_else_is_named(tmp_path: Path) -> None:
    f = write(tmp_path / "x.jsonl", rec("a"))
    assert resolve(f).kind == "file"
    with pytest.raises(ConfigError, match="no such file"):
        resolve(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="neither a curate run directory"):
        resolve(tmp_path / "empty")


def test_bad_lines_come_back_with_file_line_and_field(tmp_path: Path) -> None:
    f = write(tmp_path / "x.jsonl", rec("a"), "{oops", {"id": "b", "messages": [{"role": "robot"}]})
    with f.open("a") as fh:
        fh.write("\n")
    got = list(read(f))
    assert [n for n, _ in got] == [1, 2, 3]
    assert got[0][1].id == "a"  # type: ignore[union-attr]
    assert got[1][1].reason.startswith(f"{f}:2")  # type: ignore[union-attr]
    assert got[2][1].reason.startswith(f"{f}:3: field 'messages[0].role'")  # type: ignore[union-attr]


@pytest.mark.parametrize("record,expected", [
    ({"metadata": {"stop": "error"}}, True), ({"metadata": {"finish_reason": "error: timeout"}}, True),
    ({"metadata": {"error": "sandbox died"}}, True), ({"error": "boom"}, True),
    ({"metadata": {"stop": "answer"}}, False), ({"metadata": None}, False), ([], False)])
def test_what_counts_as_an_errored_generation(record: object, expected: bool) -> None:
    assert errored(record) is expected
