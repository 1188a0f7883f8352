"""The converters on hand-made traces: exactly the keys each format allows, LLaMA-Factory's turn rules,
parallel calls, non-text parts set aside with their path, and the fixed Arrow schema of the hf rows."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.errors import ConfigError
from tgrs_agents.export.writers import Trace, Unconvertible, Writer, to_hf, to_openai_ft, to_sharegpt

TOOLS = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]


def call(cid: str, args: Any, name: str = "calc") -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def t(*messages: dict[str, Any], tools: Any = TOOLS) -> Trace:
    return Trace("id-1", "task-1", 7, list(messages), tools)


USER = {"role": "user", "content": "What is 2 + 2 and 2 * 5?"}
PARALLEL = [
    USER,
    {"role": "assistant", "content": "Two sums.", "tool_calls": [call("a", '{"x": "2+2"}'), call("b", {"x": "2*5"})]},
    {"role": "tool", "tool_call_id": "a", "content": "4", "name": "calc"},
    {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "10"}]},
    {"role": "assistant", "content": "4 and 10", "reasoning_content": "easy"},
]


def test_openai_ft_rows_hold_only_what_the_fine_tuning_api_accepts() -> None:
    c: Counter[str] = Counter()
    row = to_openai_ft(t({"role": "developer", "content": "Be brief."}, *PARALLEL), c)
    assert set(row) == {"messages", "tools"} and row["tools"] == TOOLS
    allowed = {"role", "content", "name", "tool_calls", "tool_call_id", "weight"}
    assert all(set(m) <= allowed for m in row["messages"])
    assert row["messages"][0] == {"role": "system", "content": "Be brief."}
    calls = row["messages"][2]["tool_calls"]
    assert calls == [call("a", '{"x": "2+2"}'), call("b", '{"x": "2*5"}')]  # arguments always a JSON string
    assert row["messages"][3] == {"role": "tool", "content": "4", "tool_call_id": "a"}
    assert row["messages"][4] == {"role": "tool", "content": "10", "tool_call_id": "b"}
    assert c == Counter(developer_as_system=1, message_keys_dropped=1)
    assert "tools" not in to_openai_ft(t(USER, {"role": "assistant", "content": "x"}, tools=None), Counter())


def test_sharegpt_alternates_like_llamafactory_wants() -> None:
    c: Counter[str] = Counter()
    row = to_sharegpt(t({"role": "system", "content": "S1"}, {"role": "developer", "content": "S2"}, USER,
                        {"role": "user", "content": "Quickly."}, *PARALLEL[1:]), c)
    assert row["system"] == "S1\n\nS2" and row["id"] == "id-1"
    assert [x["from"] for x in row["conversations"]] == ["human", "function_call", "observation", "gpt"]
    assert row["conversations"][0]["value"] == USER["content"] + "\n\nQuickly."
    assert json.loads(row["conversations"][1]["value"]) == [{"name": "calc", "arguments": {"x": "2+2"}},
                                                            {"name": "calc", "arguments": {"x": "2*5"}}]
    assert json.loads(row["conversations"][2]["value"]) == ["4", "10"]  # parallel results, in call order
    assert json.loads(row["tools"]) == [TOOLS[0]["function"]]  # bare schemas, as in LLaMA-Factory's demos
    assert c == Counter(user_turns_joined=1, text_beside_calls_dropped=1)


def test_sharegpt_single_call_and_a_text_turn_before_calls() -> None:
    c: Counter[str] = Counter()
    row = to_sharegpt(t(USER, {"role": "assistant", "content": "Let me see."},
                        {"role": "assistant", "tool_calls": [call("a", '{"x": 1}')]},
                        {"role": "tool", "tool_call_id": "a", "content": "1"},
                        {"role": "assistant", "content": "one"}, tools=None), c)
    conv = row["conversations"]
    assert json.loads(conv[1]["value"]) == {"name": "calc", "arguments": {"x": 1}}
    assert conv[2] == {"from": "observation", "value": "1"} and row["tools"] == "[]"
    assert c == Counter(text_beside_calls_dropped=1)


@pytest.mark.parametrize("messages,reason", [
    ([{"role": "assistant", "content": "hi"}], r"turn 0: 'gpt' where .* needs human or observation"),
    ([USER, {"role": "assistant", "content": "a"}, {"role": "system", "content": "late"}],
     r"messages\[2\]: a system turn inside the conversation"),
    ([USER, {"role": "assistant", "tool_calls": [call("a", "{}")]}, {"role": "assistant", "content": "x"}],
     r"turn 2: 'gpt' where"),
    ([USER], "ends on 'human'"),
])
def test_sharegpt_refuses_what_llamafactory_would_skip(messages: list[dict[str, Any]], reason: str) -> None:
    with pytest.raises(Unconvertible, match=reason):
        to_sharegpt(t(*messages), Counter())


@pytest.mark.parametrize("convert", [to_openai_ft, to_sharegpt, to_hf])
def test_a_non_text_part_is_set_aside_with_its_path(convert: Any) -> None:
    img = {"role": "user", "content": [{"type": "text", "text": "see"}, {"type": "image_url", "image_url": {}}]}
    with pytest.raises(Unconvertible, match=r"messages\[0\]\.content\[1\]: a 'image_url' part"):
        convert(t(img, {"role": "assistant", "content": "a"}), Counter())


def test_hf_rows_have_one_shape_and_load_into_the_fixed_schema() -> None:
    datasets = pytest.importorskip("datasets")
    from tgrs_agents.export.writers import hf_features

    plain = to_hf(t(USER, {"role": "assistant", "content": "x"}, tools=None), Counter())
    tooled = to_hf(t(*PARALLEL), Counter())
    assert plain["tools"] is None and tooled["tools"] == TOOLS
    # arguments as objects (strings parsed), what the chat template and the project's SFT render
    assert tooled["messages"][1]["tool_calls"][1]["function"]["arguments"] == {"x": "2*5"}
    assert tooled["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"x": "2+2"}
    assert tooled["messages"][3]["content"] == "10" and tooled["messages"][1]["content"] == "Two sums."
    # the first row has no tool calls at all: the schema, not inference, fixes the column types
    ds = datasets.Dataset.from_list([plain, tooled], features=hf_features())
    assert ds[1]["messages"][1]["tool_calls"][0] == call("a", {"x": "2+2"})
    assert ds[1]["tools"] == TOOLS and ds[0]["tools"] is None
    assert ds[0]["messages"][0]["tool_calls"] is None


def test_hf_falls_back_to_json_strings_where_datasets_has_no_json_type(monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    from tgrs_agents.export.writers import hf_features, hf_strings

    monkeypatch.delattr(datasets, "Json", raising=False)
    tooled = hf_strings(to_hf(t(*PARALLEL), Counter()))
    assert json.loads(tooled["tools"]) == TOOLS
    assert tooled["messages"][1]["tool_calls"][1]["function"]["arguments"] == '{"x": "2*5"}'
    ds = datasets.Dataset.from_list([tooled], features=hf_features())
    assert ds.features["tools"].dtype == "string"
    assert ds[0]["messages"][1]["tool_calls"][0] == call("a", '{"x": "2+2"}')


def test_a_non_empty_output_directory_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "lf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="--force"):
        Writer("llamafactory", out)
    w = Writer("llamafactory", out, force=True, name="mine")
    w.write({"conversations": []})
    w.close()
    assert sorted(p.name for p in out.iterdir()) == ["dataset_info.json", "mine.jsonl"]
    assert not (tmp_path / "lf.tmp").exists()


def test_a_file_format_never_replaces_a_directory(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        Writer("openai-ft", tmp_path / "d", force=True)
    assert (tmp_path / "d").is_dir()
