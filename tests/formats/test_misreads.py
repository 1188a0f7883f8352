"""No silent mis-reads: records every teacher would misjudge are set aside with the field and what was
expected, never passed on with an empty final text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from format_kit import FIXTURES, read

from tgrs_agents.types import Candidate


def write(tmp_path: Path, name: str, recs: list[Any], *, array: bool = False) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(recs) if array else "".join(json.dumps(r) + "\n" for r in recs))
    return path


USER = {"role": "user", "content": "What is 2+2?"}


@pytest.mark.parametrize(("assistant", "field", "words"), [
    # LLaMA-Factory parts read as OpenAI: they validate, but carry no 'text'
    ({"role": "assistant", "content": [{"type": "text", "value": "Answer: 4"}]},
     "messages[1].content[0]", "expected a 'text' part to carry 'text' (a string); it has type, value"),
    # Anthropic blocks read as OpenAI (Claude Code transcripts): an unknown part type
    ({"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "calc", "input": {}}]},
     "messages[1].content[0].type", "got 'tool_use'"),
    ({"role": "assistant", "content": ""}, "messages[1].content", "text a teacher can read or a tool call"),
    ({"role": "assistant", "content": None, "reasoning_content": "hmm"}, "messages[1].content", "only reasoning"),
    ({"role": "assistant", "content": [{"type": "text", "text": "   "}]}, "messages[1].content",
     "content without text"),
])
def test_openai_records_every_teacher_would_misread_are_set_aside(
        tmp_path: Path, assistant: dict[str, Any], field: str, words: str) -> None:
    path = write(tmp_path, "in.jsonl", [{"id": "a", "messages": [USER, assistant]},
                                        {"id": "b", "messages": [USER, {"role": "assistant", "content": "4"}]}])
    good, bad = read(path, tmp_path, fmt="openai")
    assert list(good) == [2] and isinstance(good[2], Candidate)
    inv = bad[1]
    assert inv.field == field and words in inv.reason, inv.reason
    assert inv.reason.startswith(f"{path}:1: field '{field}': ") and inv.id == "a"
    assert inv.record()["file"] == str(path)


def test_the_real_llamafactory_shape_read_as_openai_is_set_aside_not_misread(tmp_path: Path) -> None:
    rec = json.loads((FIXTURES / "llamafactory.jsonl").read_text().splitlines()[0])
    path = write(tmp_path, "lf.jsonl", [{"id": "x", **rec}])
    good, bad = read(path, tmp_path, fmt="openai")
    assert not good and bad[1].field == "messages[0].content[0]"
    good, bad = read(path, tmp_path)  # auto picks the right reader
    assert not bad and good[1].final_text == "Answer: 2"


def test_a_record_without_an_assistant_turn(tmp_path: Path) -> None:
    # openai keeps it (prompt-only records are today's input); a framework reader sets it aside
    path = write(tmp_path, "p.jsonl", [{"id": "a", "messages": [USER]}])
    good, _ = read(path, tmp_path, fmt="openai")
    assert list(good) == [1]
    path = write(tmp_path, "s.json", [{"conversations": [{"from": "human", "value": "hi"}]}], array=True)
    _, bad = read(path, tmp_path)
    assert bad[1].field == "messages" and "expected at least one assistant message" in bad[1].reason
    assert bad[1].reason.startswith(f"{path}: record 1: ")


def test_unknown_anthropic_block_names_the_source_field(tmp_path: Path) -> None:
    rec = {"system": "s", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "read this"}, {"type": "document", "source": {}}]},
        {"role": "assistant", "content": "ok"}]}
    _, bad = read(write(tmp_path, "a.jsonl", [rec]), tmp_path)
    assert bad[1].field == "messages[0].content[1].type"
    assert "expected text, image or tool_result; got 'document'" in bad[1].reason


def test_unknown_inspect_content_part_is_set_aside(tmp_path: Path) -> None:
    log = json.loads((FIXTURES / "inspect.json").read_text())
    log["samples"][1]["messages"][1]["content"] = [{"type": "audio", "audio": "a.wav", "format": "wav"}]
    path = tmp_path / "log.json"
    path.write_text(json.dumps(log))
    good, bad = read(path, tmp_path)
    assert sorted(good) == [1, 3] and bad[2].field == "messages[1].content[0].type"
    assert "expected text, reasoning or image; got 'audio'" in bad[2].reason


def test_a_record_that_breaks_a_reader_is_set_aside_and_the_run_goes_on(tmp_path: Path) -> None:
    events = json.loads((FIXTURES / "openhands_output.jsonl").read_text())
    broken = json.loads(json.dumps(events))
    broken["instance_id"] = "broken"
    broken["history"][1]["args"] = ["not", "a", "mapping"]
    path = write(tmp_path, "oh.jsonl", [broken, events])
    good, bad = read(path, tmp_path, fmt="openhands")
    assert list(good) == [2] and "the openhands reader could not read it (AttributeError" in bad[1].reason


def test_an_array_cut_short_sets_aside_one_record_and_stops(tmp_path: Path) -> None:
    recs = json.loads((FIXTURES / "sharegpt.json").read_text())
    path = tmp_path / "cut.json"
    text = json.dumps(recs)
    path.write_text(text[: text.index('"hermes-1"')])
    good, bad = read(path, tmp_path)  # auto still knows the reader from the records before the break
    assert sorted(good) == [1, 2] and list(bad) == [3]
    assert bad[3].reason.startswith(f"{path}: record 3: the file ends here: ")


def test_an_unknown_reader_name_is_a_config_error_listing_the_readers(tmp_path: Path) -> None:
    from tgrs_agents.errors import ConfigError
    from tgrs_agents.formats import format_names, resolve

    with pytest.raises(ConfigError, match="unknown input format 'jsonl'; expected one of auto, openai, ") as e:
        resolve(FIXTURES / "openai.jsonl", "jsonl")
    assert e.value.field == "input_format" and len(format_names()) == 13
