"""Input lines: validation reasons that name file, line and field; duplicate ids; chunked reading; a byte
order mark; the OpenAI rules every reader's output must keep (the ingest gate)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tgrs_agents.curation.ingest import IdIndex, Invalid, parse_line, read_chunks
from tgrs_agents.curation.store import DoneLines
from tgrs_agents.types import Candidate

SRC = "data/in.jsonl"


def bad(raw: str | bytes, line: int = 7) -> Invalid:
    out = parse_line(raw.encode() if isinstance(raw, str) else raw, line, SRC)
    assert isinstance(out, Invalid), out
    assert out.line == line
    assert out.reason.startswith(f"{SRC}:{line}:"), out.reason
    return out


def user(text: str = "hi") -> dict:
    return {"role": "user", "content": text}


def test_not_json() -> None:
    inv = bad("{not json")
    assert "not valid JSON" in inv.reason
    assert inv.field is None and inv.id is None
    assert inv.raw == "{not json"


def test_not_utf8() -> None:
    inv = bad(b"\xff\xfe{}")
    assert "not valid JSON" in inv.reason


def test_json_array() -> None:
    inv = bad("[1, 2]")
    assert "expected a JSON object; got list" in inv.reason
    assert inv.field is None


def test_missing_messages() -> None:
    inv = bad('{"id": "a1"}')
    assert inv.field == "messages"
    assert f"{SRC}:7: field 'messages': required field is missing" == inv.reason
    assert inv.id == "a1"  # the id is kept for the report even though the line is invalid


def test_empty_messages() -> None:
    inv = bad('{"id": "a1", "messages": []}')
    assert inv.field == "messages"
    assert "field 'messages'" in inv.reason and "expected a non-empty list" in inv.reason


def test_messages_not_a_list() -> None:
    inv = bad('{"id": "a1", "messages": "hello"}')
    assert inv.field == "messages" and "expected a list; got str" in inv.reason


def test_message_not_an_object() -> None:
    inv = bad('{"id": "a1", "messages": ["hello"]}')
    assert inv.field == "messages[0]" and "expected a JSON object; got str" in inv.reason


def test_unknown_role() -> None:
    rec = {"id": "a1", "messages": [user(), {"role": "robot", "content": "beep"}]}
    inv = bad(json.dumps(rec))
    assert inv.field == "messages[1].role"
    assert "field 'messages[1].role'" in inv.reason
    assert "expected one of" in inv.reason and "'assistant'" in inv.reason and "'robot'" in inv.reason


def test_content_of_wrong_type() -> None:
    rec = {"id": "a1", "messages": [{"role": "user", "content": 42}]}
    inv = bad(json.dumps(rec))
    assert inv.field == "messages[0].content"
    assert "field 'messages[0].content'" in inv.reason
    assert "expected a string, a list of content-part objects, or null" in inv.reason


def test_content_list_of_non_objects() -> None:
    inv = bad(json.dumps({"id": "a1", "messages": [{"role": "user", "content": [1]}]}))
    assert inv.field == "messages[0].content"
    assert "list of content-part objects" in inv.reason


def test_empty_id() -> None:
    inv = bad(json.dumps({"id": "", "messages": [user()]}))
    assert inv.field == "id" and "expected a non-empty string" in inv.reason


def test_tool_call_without_function_name() -> None:
    rec = {
        "id": "a1",
        "messages": [user(), {"role": "assistant", "tool_calls": [{"id": "c", "function": {}}]}],
    }
    inv = bad(json.dumps(rec))
    assert inv.field == "messages[1].tool_calls[0].function.name"
    assert "required field is missing" in inv.reason


def test_id_missing() -> None:
    inv = bad(json.dumps({"messages": [user()]}))
    assert inv.field == "id" and "field 'id': required field is missing" in inv.reason


def test_id_not_a_string() -> None:
    inv = bad(json.dumps({"id": 17, "messages": [user()]}))
    assert inv.field == "id" and "field 'id': expected a string; got int" in inv.reason
    assert inv.id is None


def test_metadata_not_an_object() -> None:
    inv = bad(json.dumps({"id": "a", "messages": [user()], "metadata": [1]}))
    assert inv.field == "metadata" and "expected a JSON object" in inv.reason


def test_invalid_record_is_serialisable() -> None:
    rec = bad('{"id": "a1"}').record()
    assert rec["line"] == 7 and rec["id"] == "a1" and rec["field"] == "messages"
    json.dumps(rec)


def test_valid_record_with_tools_and_extra_fields() -> None:
    rec = {
        "id": "a1",
        "task_id": " t1 ",
        "reference": 4,
        "tools": [{"type": "function", "function": {"name": "calc", "parameters": {}}}],
        "metadata": {"seed": 3},
        "messages": [
            {"role": "system", "content": "be brief"},
            user("2+2?"),
            {
                "role": "assistant",
                "content": None,
                "reasoning": "let me call the calculator",
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "calc", "arguments": "{\"expr\": \"2+2\"}"}, "index": 0}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "name": "calc", "content": "4"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Answer: "}, {"type": "text", "text": "4"}],
            },
        ],
    }
    c = parse_line(json.dumps(rec).encode(), 1, SRC)
    assert isinstance(c, Candidate)
    assert c.id == "a1" and c.task_id == "t1" and c.reference == 4
    assert c.final_text == "Answer: 4" and c.task_text == "2+2?"
    assert c.messages[2].tool_calls is not None
    assert c.messages[2].tool_calls[0].function.name == "calc"
    assert c.messages[3].tool_call_id == "call_1"
    out = c.sft_record()
    # fields an agent framework added are kept on the way to SFT
    assert out["messages"][2]["reasoning"] == "let me call the calculator"
    assert out["messages"][2]["tool_calls"][0]["index"] == 0
    assert out["tools"] == rec["tools"]


def test_task_id_defaults_to_id() -> None:
    c = parse_line(json.dumps({"id": "x", "messages": [user()]}).encode(), 1, SRC)
    assert isinstance(c, Candidate) and c.task_id == "x"


# --------------------------------------------------------------------------------------------
# IdIndex


@pytest.fixture
def index(tmp_path: Path):
    idx = IdIndex(tmp_path / "ids.sqlite")
    yield idx
    idx.close()


def test_claim_duplicates_across_batches(index: IdIndex) -> None:
    assert index.claim([("a", 1), ("b", 2)]) == {}
    assert index.claim([("c", 3), ("a", 4)]) == {4: 1}
    assert index.claim([("b", 9)]) == {9: 2}


def test_claim_duplicates_within_a_batch(index: IdIndex) -> None:
    assert index.claim([("a", 1), ("b", 2), ("a", 3), ("a", 5)]) == {3: 1, 5: 1}
    assert index.claim([("a", 6)]) == {6: 1}


def test_claim_replay_is_not_a_duplicate(index: IdIndex) -> None:
    assert index.claim([("a", 1), ("b", 2)]) == {}
    assert index.claim([("a", 1), ("b", 2)]) == {}  # re-reading the same lines after a crash
    assert index.claim([]) == {}


def test_claim_survives_reopen(tmp_path: Path) -> None:
    idx = IdIndex(tmp_path / "ids.sqlite")
    idx.claim([("a", 1)])
    idx.close()
    idx = IdIndex(tmp_path / "ids.sqlite")
    try:
        assert idx.claim([("a", 1)]) == {}
        assert idx.claim([("a", 2)]) == {2: 1}
    finally:
        idx.close()


def test_claim_many_ids(index: IdIndex) -> None:
    first = [(f"id{i}", i) for i in range(1200)]  # more than one SQL IN (...) chunk
    assert index.claim(first) == {}
    again = [(f"id{i}", 5000 + i) for i in range(1200)]
    assert index.claim(again) == {5000 + i: i for i in range(1200)}


# --------------------------------------------------------------------------------------------
# read_chunks


def rec(i: str) -> str:
    return json.dumps({"id": i, "messages": [user()]})


def test_read_chunks_skips_done_and_blank_lines(tmp_path: Path, index: IdIndex) -> None:
    path = tmp_path / "in.jsonl"
    lines = [rec("a"), "", rec("b"), "   ", rec("c"), "not json", rec("a"), rec("d")]
    path.write_text("\n".join(lines) + "\n")
    done = DoneLines()
    done.add(3)  # "b" was finished by an earlier session
    chunks = list(read_chunks(path, done, index, chunk=2))
    got = [(line, item) for _, items in chunks for line, item in items]
    assert [line for line, _ in got] == [1, 5, 6, 7, 8]
    kinds = {line: type(item).__name__ for line, item in got}
    assert kinds == {1: "Candidate", 5: "Candidate", 6: "Invalid", 7: "Invalid", 8: "Candidate"}
    dup = dict(got)[7]
    assert isinstance(dup, Invalid) and dup.field == "id" and dup.id == "a"
    assert dup.reason == f"{path}:7: field 'id': expected a unique id; 'a' was first used on line 1"
    bad_json = dict(got)[6]
    assert isinstance(bad_json, Invalid) and bad_json.reason.startswith(f"{path}:6: ")
    assert chunks[-1][0] == 8  # lines read so far, blanks and done lines included
    assert all(len(items) <= 2 for _, items in chunks)


def test_read_chunks_resume_does_not_flag_own_lines(tmp_path: Path, index: IdIndex) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([rec("a"), rec("b"), rec("c")]) + "\n")
    list(read_chunks(path, DoneLines(), index))
    done = DoneLines()
    done.add(1)
    again = [item for _, items in read_chunks(path, done, index) for _, item in items]
    assert [type(x).__name__ for x in again] == ["Candidate", "Candidate"]


def test_read_chunks_empty_file(tmp_path: Path, index: IdIndex) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("")
    assert list(read_chunks(path, DoneLines(), index)) == [(0, [])]


# --------------------------------------------------------------------------------------------
# input hygiene: a UTF-8 byte order mark, and the OpenAI rules of the ingest gate (read_chunks)

BOM = b"\xef\xbb\xbf"


def read_all(path: Path, tmp_path: Path, fmt: str = "auto") -> dict[int, Candidate | Invalid]:
    idx = IdIndex(tmp_path / f"ids-{path.name}.sqlite")
    try:
        return {pos: item for _, items in read_chunks(path, DoneLines(), idx, fmt=fmt) for pos, item in items}
    finally:
        idx.close()


@pytest.mark.parametrize("fmt", ["auto", "openai"])
def test_a_bom_does_not_cost_the_first_jsonl_record(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(BOM + (rec("a") + "\n" + rec("b") + "\n").encode())
    got = read_all(path, tmp_path, fmt)
    assert [(pos, getattr(c, "id", c)) for pos, c in got.items()] == [(1, "a"), (2, "b")]


def test_a_bom_does_not_cost_the_first_record_of_a_json_array(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(BOM + json.dumps([json.loads(rec("a")), json.loads(rec("b"))], indent=1).encode())
    got = read_all(path, tmp_path)
    assert [(pos, getattr(c, "id", c)) for pos, c in got.items()] == [(1, "a"), (2, "b")]


def test_a_bom_on_a_later_line_and_on_a_whole_document(tmp_path: Path) -> None:
    path = tmp_path / "cat.jsonl"  # two BOM files joined with `cat`
    path.write_bytes(BOM + rec("a").encode() + b"\n" + BOM + rec("b").encode() + b"\n")
    assert [getattr(c, "id", c) for c in read_all(path, tmp_path, "openai").values()] == ["a", "b"]
    traj = tmp_path / "one.traj"  # a SWE-agent log saved by a Windows editor: auto still knows it
    traj.write_bytes(BOM + json.dumps({"history": [user(), {"role": "assistant", "content": "ok"}],
                                       "info": {"exit_status": "submitted"}}).encode())
    [c] = read_all(traj, tmp_path).values()
    assert isinstance(c, Candidate) and c.metadata["exit_status"] == "submitted"


def asst(content: Any = None, *calls: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **({"tool_calls": list(calls)} if calls else {})}


def tcall(cid: str | None, args: Any = '{"x": 1}') -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": "f", "arguments": args}}


def result(cid: str | None, text: str = "1") -> dict[str, Any]:
    return {"role": "tool", "content": text, **({"tool_call_id": cid} if cid is not None else {})}


def gate(tmp_path: Path, messages: list[dict[str, Any]], fmt: str = "openai") -> Invalid:
    """The one record, read through read_chunks; it must be set aside."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "r", "messages": messages}) + "\n" + rec("ok") + "\n")
    got = read_all(path, tmp_path, fmt)
    assert isinstance(got[2], Candidate)  # the run goes on
    inv = got[1]
    assert isinstance(inv, Invalid), inv
    assert inv.reason.startswith(f"{path}:1: field '{inv.field}': expected ") and inv.id == "r"
    assert inv.file == str(path) and '"id": "r"' in inv.raw
    return inv


@pytest.mark.parametrize("content", [None, "", "  \n", []])
def test_an_assistant_message_with_neither_content_nor_tool_calls_is_set_aside(tmp_path: Path, content: Any) -> None:
    inv = gate(tmp_path, [user(), asst(content), user("and?"), asst("4")])
    assert inv.field == "messages[1]"
    assert "expected an assistant message to have content or tool calls" in inv.reason


def test_a_refusal_or_an_image_counts_as_content(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    msgs = [user(), {"role": "assistant", "content": None, "refusal": "I cannot."},
            asst([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]), user("ok"), asst("4")]
    path.write_text(json.dumps({"id": "r", "messages": msgs}) + "\n")
    assert isinstance(read_all(path, tmp_path, "openai")[1], Candidate)


@pytest.mark.parametrize(("args", "words"), [
    ("not json", "got text that is not JSON: 'not json'"),
    ("[1,2]", "got an array: '[1,2]'"),
    ("3", "got a number"),
    ("", "got an empty string"),
    (json.dumps('{"x": 1}'), "got a JSON string"),
])
def test_tool_call_arguments_that_are_not_a_json_object_are_set_aside(tmp_path: Path, args: str, words: str) -> None:
    inv = gate(tmp_path, [user(), asst(None, tcall("c1"), tcall("c2", args)), result("c1"), result("c2"),
                          asst("4")])
    assert inv.field == "messages[1].tool_calls[1].function.arguments"
    assert "expected a JSON object string" in inv.reason and words in inv.reason, inv.reason


def test_double_encoded_arguments_say_which_reader_decodes_them(tmp_path: Path) -> None:
    inv = gate(tmp_path, [user(), asst(None, tcall("c1", json.dumps('{"x": 1}'))), result("c1"), asst("4")])
    assert "--input-format openai-ft decodes them once" in inv.reason


def test_arguments_as_an_object_or_an_object_string_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    msgs = [user(), asst(None, tcall("c1", {"x": 1}), tcall("c2", ' {"y": [2]} ')), result("c1"), result("c2"),
            asst("4")]
    path.write_text(json.dumps({"id": "r", "messages": msgs}) + "\n")
    c = read_all(path, tmp_path, "openai")[1]
    assert isinstance(c, Candidate) and c.messages[1].tool_calls is not None
    assert [tc.function.arguments for tc in c.messages[1].tool_calls] == [{"x": 1}, ' {"y": [2]} ']


def test_a_tool_message_without_tool_call_id_is_set_aside(tmp_path: Path) -> None:
    inv = gate(tmp_path, [user(), asst(None, tcall("c1")), result(None), asst("4")])
    assert inv.field == "messages[2].tool_call_id"
    assert "expected the id of the assistant tool call this tool message answers; it has none" in inv.reason


@pytest.mark.parametrize(("messages", "at", "said"), [
    ([user(), asst(None, tcall("c1")), result("c1"), result("ghost"), asst("4")], 3, "announce 'c1'"),
    ([user(), result("c1"), asst(None, tcall("c1")), asst("4")], 1, "no tool call comes before it"),  # only later
])
def test_a_tool_message_answering_a_call_nobody_announced_is_set_aside(
        tmp_path: Path, messages: list[dict[str, Any]], at: int, said: str) -> None:
    inv = gate(tmp_path, messages)
    assert inv.field == f"messages[{at}].tool_call_id"
    assert "expected the id of a tool call an earlier assistant message made" in inv.reason
    assert "was not announced" in inv.reason and said in inv.reason


def test_every_reader_goes_through_the_gate_and_says_the_path_is_in_its_output(tmp_path: Path) -> None:
    # an Anthropic tool_result for a tool_use that was never made: read as anthropic, then gated
    path = tmp_path / "a.jsonl"
    msgs = [{"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9", "content": "x"}]},
            {"role": "assistant", "content": "done"}]
    path.write_text(json.dumps({"system": "s", "messages": msgs}) + "\n")
    inv = read_all(path, tmp_path)[1]
    assert isinstance(inv, Invalid) and inv.field == "messages[3].tool_call_id"
    assert "'t9' was not announced" in inv.reason
    assert "(the path is in the OpenAI messages the anthropic reader made)" in inv.reason


def test_fine_tuning_records_without_call_ids_are_paired_in_order_and_noted(tmp_path: Path) -> None:
    path = tmp_path / "ft.jsonl"
    ok = [user(), asst(None, tcall(None), tcall("")), result(None, "a"), result(None, "b"), asst("4")]
    ghost = [user(), asst(None, tcall("c1")), result("c1"), result("c7"), asst("4")]
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in (ok, ghost)))
    got = read_all(path, tmp_path, "openai-ft")
    c = got[1]
    assert isinstance(c, Candidate) and c.messages[1].tool_calls is not None
    ids = [tc.id for tc in c.messages[1].tool_calls]
    assert all(i and i.startswith("call_") for i in ids) and len(set(ids)) == 2
    assert [c.messages[2].tool_call_id, c.messages[3].tool_call_id] == ids
    assert len(c.metadata["normalized"]) == 4 and "messages[2].tool_call_id: filled in order" in \
        c.metadata["normalized"][2]
    assert read_all(path, tmp_path, "openai-ft")[1].messages[1].tool_calls[0].id == ids[0]  # type: ignore[union-attr]
    inv = got[2]  # a result naming a call nobody made is not guessed at
    assert isinstance(inv, Invalid) and inv.field == "messages[3].tool_call_id" and "'c7'" in inv.reason


# --- the writability pre-check: a record read from bytes skips the round trip only when it is safe -----
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**62, max_value=2**80)
    | st.text(st.characters(codec=None), max_size=8) | st.sampled_from(["\ud800", "\udfff", "\u00e9"]),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
    max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(meta=_json_values, args=_json_values, ascii_only=st.booleans())
def test_a_record_skips_the_write_back_check_only_when_it_surely_writes(meta, args, ascii_only):
    from tgrs_agents.curation.ingest import writable_as_read
    from tgrs_agents.curation.jsonl import candidate_problem

    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": json.dumps({"x": args})}}
    rec = {"id": "r", "task_id": "t", "metadata": {"m": meta},
           "messages": [user(), {"role": "assistant", "content": None, "tool_calls": [call]},
                        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                        {"role": "assistant", "content": "done"}]}
    try:
        raw = json.dumps(rec, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # a lone surrogate cannot be UTF-8: only its escape is a valid line
        raw = json.dumps(rec).encode()
    out = parse_line(raw, 3, SRC)
    slow = Candidate.model_validate_json(raw) if not isinstance(out, Invalid) else None
    if writable_as_read(raw):  # the shortcut must be sound: no record it lets through is unwritable
        assert isinstance(out, Candidate) and candidate_problem(out) is None
    if slow is not None:  # what it lets through, the full check lets through too
        assert candidate_problem(slow) is None
    # what the full check refuses is refused with the field named, never passed on
    if isinstance(out, Invalid) and "64-bit" in out.reason:
        assert out.field and out.reason.startswith(f"{SRC}:3:")


def test_the_write_back_check_still_catches_wide_integers_and_lone_surrogates():
    wide = {"id": "r", "messages": [user(), {"role": "assistant", "content": "x"}], "reference": 2**70}
    out = bad(json.dumps(wide), line=4)
    assert out.field == "reference" and "64-bit" in out.reason
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"n": 99999999999999999999999}'}}
    deep = {"id": "r", "messages": [user(), {"role": "assistant", "content": None, "tool_calls": [call]},
                                    {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                                    {"role": "assistant", "content": "done"}]}
    assert "64-bit" in bad(json.dumps(deep)).reason
    call["function"]["arguments"] = json.dumps({"s": "\ud800"})  # a lone surrogate, escaped twice
    assert bad(json.dumps(deep)).field.startswith("messages[1].tool_calls[0]")
