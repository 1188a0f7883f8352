"""The chat-shaped readers on hand-written fixtures: openai, openai-ft, anthropic, claude-code, sharegpt,
llamafactory, dolci. Each: auto picks it, tool calls come out paired with their results by id, minted
ids are stable, and what has no OpenAI field is kept (reasoning, metadata)."""

from __future__ import annotations

import json
from pathlib import Path

from format_kit import FIXTURES, assert_paired, calls, extra, read, roles

from tgrs_agents.formats import resolve


def test_openai_keeps_ids_and_decodes_messages_stored_as_a_json_string(tmp_path: Path) -> None:
    assert resolve(FIXTURES / "openai.jsonl")[0].name == "openai"
    good, bad = read(FIXTURES / "openai.jsonl", tmp_path)
    assert not bad and sorted(c.id for c in good.values()) == ["o1", "o2"]
    assert calls(good[1]) == [("c1", "calc", '{"expr": "2+3"}')] and good[1].final_text == "Answer: 5"
    assert good[2].final_text == "hi" and roles(good[2]) == ["user", "assistant"]
    for c in good.values():
        assert_paired(c)


def test_openai_ft_mints_stable_ids_and_undoes_double_encoded_arguments(tmp_path: Path) -> None:
    assert resolve(FIXTURES / "openai_ft.jsonl")[0].name == "openai-ft"
    good, bad = read(FIXTURES / "openai_ft.jsonl", tmp_path)
    again, _ = read(FIXTURES / "openai_ft.jsonl", tmp_path)
    assert not bad and [c.id for c in good.values()] == [c.id for c in again.values()]
    assert all(c.id.startswith("ft-") for c in good.values())
    first, second = good[1], good[2]
    assert calls(first) == [("call_id", "set_lamp", '{"on": false}')]
    assert "double-encoded" in first.metadata["normalized"][0]
    assert first.metadata["parallel_tool_calls"] is False
    assert second.tools and second.tools[0]["function"]["name"] == "set_lamp"  # tools from a JSON string
    assert extra(second.messages[1], "weight") == 1  # the fine-tuning weight stays on the message


def test_openai_ft_ids_differ_when_the_content_differs(tmp_path: Path) -> None:
    path = tmp_path / "ft.jsonl"
    rec = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    other = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}]}
    path.write_text(json.dumps(rec) + "\n" + json.dumps(other) + "\n" + json.dumps(rec) + "\n")
    good, bad = read(path, tmp_path, fmt="openai-ft")
    assert good[1].id != good[2].id
    assert bad[3].field == "id" and "first used on line 1 (the id was minted from the content" in bad[3].reason


def test_anthropic_blocks_map_to_openai_messages(tmp_path: Path) -> None:
    assert resolve(FIXTURES / "anthropic.jsonl")[0].name == "anthropic"
    good, bad = read(FIXTURES / "anthropic.jsonl", tmp_path)
    c = good[1]
    assert roles(c) == ["system", "user", "assistant", "tool", "user", "assistant"]
    assert c.messages[0].content == "You are a careful calculator agent."
    assert c.messages[2].content == "Let me compute that." and extra(c.messages[2], "reasoning_content") == \
        "I should use the tool."
    assert calls(c) == [("toolu_A", "calc", '{"expr": "6*7"}')]
    assert c.messages[3].tool_call_id == "toolu_A" and c.messages[3].content == "42"
    assert c.messages[4].content == "Thanks, and the final answer?"  # the user's text after the result
    assert c.tools == [{"type": "function", "function": {"name": "calc", "description": "Evaluate arithmetic",
                        "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}}]
    assert c.final_text == "Answer: 42"
    assert_paired(c)
    # the second record's final turn is thinking only: no text a teacher can read
    assert bad[2].field == "messages[2].content" and "only reasoning" in bad[2].reason


def test_claude_code_session_is_one_candidate_with_split_blocks_merged(tmp_path: Path) -> None:
    fmt, why = resolve(FIXTURES / "claude_code.jsonl")
    assert fmt.name == "claude-code" and "Claude Code" in why
    good, bad = read(FIXTURES / "claude_code.jsonl", tmp_path)
    assert not bad and list(good) == [1]  # positioned at the session's first line
    c = good[1]
    assert c.id == "0b6e2c1e-5f1d-4a57-9c39-7f2f3a2d9e11"
    assert roles(c) == ["user", "assistant", "tool", "tool", "assistant"]  # the sidechain is left out
    a = c.messages[1]
    assert a.content == "I'll list them." and extra(a, "reasoning_content") == "Use ls."
    assert [x[:2] for x in calls(c)] == [("toolu_1", "Bash"), ("toolu_2", "Bash")]
    assert [m.tool_call_id for m in c.messages[2:4]] == ["toolu_1", "toolu_2"]
    assert c.final_text == "There are 2 files: a.txt and b.txt."
    assert c.metadata["skipped_lines"] == {"file-history-snapshot": 1, "progress": 1, "sidechain": 1, "system": 1}
    assert c.metadata["cwd"] == "/home/dev/project" and c.metadata["models"] == ["claude-x"]
    assert_paired(c)


def test_sharegpt_function_calls_observations_and_hermes_text(tmp_path: Path) -> None:
    assert resolve(FIXTURES / "sharegpt.json")[0].name == "sharegpt"
    good, bad = read(FIXTURES / "sharegpt.json", tmp_path)
    again, _ = read(FIXTURES / "sharegpt.json", tmp_path)
    assert not bad and len(good) == 3
    assert [calls(c) for c in good.values()] == [calls(c) for c in again.values()]  # minted ids are stable
    lamp, pair, hermes = good[1], good[2], good[3]
    (cid, name, args), = calls(lamp)
    assert cid.startswith("call_") and len(cid) == 21 and (name, json.loads(args)) == ("set_lamp", {"on": False})
    assert lamp.messages[2].tool_call_id == cid and lamp.messages[2].content == '{"ok": true}'
    assert lamp.tools == [{"type": "function", "function": {"name": "set_lamp", "description": "Switch the lamp",
                           "parameters": {"type": "object", "properties": {"on": {"type": "boolean"}},
                                          "required": ["on"]}}}]
    assert roles(pair)[:2] == ["system", "user"]
    ids = [x[0] for x in calls(pair)]
    assert len(set(ids)) == 2 and [(m.tool_call_id, m.content) for m in pair.messages[3:5]] == \
        [(ids[0], "2"), (ids[1], "4")]
    assert hermes.id == "hermes-1" and hermes.messages[2].content == "Calling."
    assert [x[1:] for x in calls(hermes)] == [("calc", '{"expr": "3*3"}')]
    assert hermes.messages[3].content == "9" and hermes.final_text == "Answer: 9"
    for c in good.values():
        assert_paired(c)


def test_llamafactory_value_parts_and_tool_call_parts(tmp_path: Path) -> None:
    assert resolve(FIXTURES / "llamafactory.jsonl")[0].name == "llamafactory"
    good, bad = read(FIXTURES / "llamafactory.jsonl", tmp_path)
    c = good[1]
    assert roles(c) == ["system", "user", "assistant", "tool", "assistant"]
    assert c.messages[0].content == "Use tools when needed." and c.messages[2].content is None
    assert extra(c.messages[2], "reasoning_content") == "Call calc."
    assert [x[1:] for x in calls(c)] == [("calc", '{"expr": "5-3"}')]
    assert c.messages[3].tool_call_id == calls(c)[0][0] and c.final_text == "Answer: 2"
    assert c.tools and c.tools[0]["function"]["name"] == "calc"
    assert_paired(c)
    assert bad[2].field == "messages[1].content" and "only reasoning" in bad[2].reason


def test_dolci_python_calls_and_environment_results(tmp_path: Path) -> None:
    assert resolve(FIXTURES / "dolci.json")[0].name == "dolci"
    good, bad = read(FIXTURES / "dolci.json", tmp_path)
    c = good[1]
    assert not bad and c.id == "dolci-a" and roles(c) == ["system", "user", "assistant", "tool", "tool", "assistant"]
    got = [(name, json.loads(args)) for _, name, args in calls(c)]
    assert got == [("calc", {"expr": "1+2"}), ("weather.now", {"city": "Oslo", "days": 1})]
    assert [m.content for m in c.messages[3:5]] == ['{"value": 3}', '{"temp_c": -2}']
    assert [t["function"]["name"] for t in c.tools or []] == ["calc", "weather.now"]
    assert c.metadata == {"dataset_source": "hand-written"}
    assert_paired(c)


def test_dolci_results_that_do_not_split_one_per_call_are_set_aside(tmp_path: Path) -> None:
    doc = json.loads((FIXTURES / "dolci.json").read_text())
    doc[0]["messages"][3]["content"] = "only one line"
    path = tmp_path / "d.json"
    path.write_text(json.dumps(doc))
    _, bad = read(path, tmp_path)
    assert bad[1].field == "messages[3].content" and "expected 2 results, one per line" in bad[1].reason
    assert bad[1].reason.startswith(f"{path}: record 1: field 'messages[3].content'")
