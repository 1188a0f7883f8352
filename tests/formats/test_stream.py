"""The incremental JSON array reader: same values as ``json.load`` whatever the read size, one member of
an object streamed, clear errors on a cut file, and flat memory on a large array."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from tgrs_agents.errors import InputError
from tgrs_agents.formats.stream import ArrayStream, container

TRICKY = [1, -2.5e-3, 12345678901234567890, "a \"quoted\" \\ string", "naïve ☃ 𝄞", True, False, None,
          {"k": [1, {"n": "}]"}], "e": {}}, [], "", {"s": "[1, 2]"}, 0]


@pytest.mark.parametrize("read_size", [1, 2, 3, 7, 64, 1 << 16])
def test_elements_match_json_load_at_any_read_size(tmp_path: Path, read_size: int) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps(TRICKY, indent=1, ensure_ascii=False), encoding="utf-8")
    assert list(ArrayStream(path, read_size=read_size)) == TRICKY


def test_a_member_of_an_object_is_streamed_and_the_head_kept(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text(json.dumps({"version": 2, "eval": {"task": "t"}, "samples": [{"id": 1}, {"id": 2}],
                                "after": "not read"}))
    stream = ArrayStream(path, key="samples", read_size=5)
    assert list(stream) == [{"id": 1}, {"id": 2}]
    assert stream.head == {"version": 2, "eval": {"task": "t"}}
    path.write_text(json.dumps({"version": 2}))
    assert list(ArrayStream(path, key="samples")) == []


@pytest.mark.parametrize("text", ['[{"a": 1}, {"b": ', '[{"a": 1} {"b": 2}]', '{"a": 1}'])
def test_a_broken_array_raises_input_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        list(ArrayStream(path, read_size=4))
    assert str(path) in str(e.value)


def test_container_kinds(tmp_path: Path) -> None:
    cases = {"a.json": " \n[1]", "b.jsonl": '{"a": 1}\n{"a": 2}\n', "c.json": '{\n  "a": 1\n}\n', "d.txt": "hello"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    assert {n: container(tmp_path / n) for n in cases} == {"a.json": "array", "b.jsonl": "jsonl",
                                                           "c.json": "document", "d.txt": "jsonl"}


def test_memory_stays_flat_on_a_large_array(tmp_path: Path) -> None:
    """A ~40 MB array of 20,000 records: the peak Python allocation while streaming it stays a few MB."""
    path = tmp_path / "big.json"
    record = {"conversations": [{"from": "human", "value": "x" * 1000}, {"from": "gpt", "value": "y" * 1000}]}
    with path.open("w") as f:
        f.write("[\n")
        for i in range(20_000):
            f.write(("," if i else "") + json.dumps({"id": i, **record}) + "\n")
        f.write("]\n")
    size = path.stat().st_size
    assert size > 40_000_000
    tracemalloc.start()
    try:
        n = 0
        for rec in ArrayStream(path):
            n += 1
            assert rec["id"] == n - 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 20_000
    assert peak < 2_000_000, f"peak {peak / 1e6:.1f} MB while streaming a {size / 1e6:.0f} MB array"
