"""Each hygiene rule on its own: redaction, trimming, tool-call pairing, the answer check, token counts."""

from __future__ import annotations

import copy
import json
import math
from collections import Counter
from typing import Any

import pytest

from tgrs_agents.chat import JUDGE, render
from tgrs_agents.export.hygiene import (
    Dropped,
    estimate_tokens,
    has_answer,
    pair_tool_calls,
    redact,
    tokenizer_counter,
    trim_trailing_user,
)

SECRETS = {
    "openai": "sk-proj-" + "a1B2" * 10,
    "anthropic": "sk-ant-api03-" + "Zx9_" * 8,
    "aws": "AKIA" + "Q" * 16,
    "github": "ghp_" + "k" * 36,
    "private_key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEow" + "A" * 64 + "\n-----END RSA PRIVATE KEY-----",
}


def call(cid: str | None, expr: str, name: str = "calculator") -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps({"expression": expr})}}


def asst(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    return {"role": "assistant", "content": content, "tool_calls": list(calls)}


def tool(cid: str | None, text: str, name: str | None = None) -> dict[str, Any]:
    m = {"role": "tool", "tool_call_id": cid, "content": text}
    return {**m, "name": name} if name else m


U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "Answer: 1"}


# ---------------------------------------------------------------------------------- redaction

@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_each_key_pattern_is_redacted_and_recorded_where(kind: str) -> None:
    secret = SECRETS[kind]
    msgs = [{"role": "user", "content": f"use {secret} please"}]
    sites: list[tuple[str, str]] = []
    out = redact(msgs, "messages", sites)
    assert secret not in json.dumps(out)
    assert out[0]["content"] == f"use [REDACTED:{kind}] please"
    assert sites == [("messages[0].content", kind)]
    assert msgs[0]["content"] == f"use {secret} please"  # the input is not changed


def test_bearer_keeps_the_word_and_secrets_inside_json_arguments_stay_valid_json() -> None:
    args = json.dumps({"h": "Authorization: Bearer abcdefghijklmnop0123", "k": SECRETS["private_key"]})
    sites: list[tuple[str, str]] = []
    out = redact([asst({"id": "c", "type": "function", "function": {"name": "f", "arguments": args}})],
                 "messages", sites)
    parsed = json.loads(out[0]["tool_calls"][0]["function"]["arguments"])
    assert parsed == {"h": "Authorization: Bearer [REDACTED:bearer]", "k": "[REDACTED:private_key]"}
    assert sorted(k for _, k in sites) == ["bearer", "private_key"]
    assert {p for p, _ in sites} == {"messages[0].tool_calls[0].function.arguments"}


def test_a_key_after_bearer_counts_once_and_lookalikes_are_left_alone() -> None:
    sites: list[tuple[str, str]] = []
    text = f"Bearer {SECRETS['anthropic']}; task-{'x' * 30}; sk-short; AKIA123; the ghp_ prefix"
    out = redact(text, "s", sites)
    assert out == f"Bearer [REDACTED:anthropic]; task-{'x' * 30}; sk-short; AKIA123; the ghp_ prefix"
    assert sites == [("s", "anthropic")]


def test_tools_and_parts_are_walked() -> None:
    sites: list[tuple[str, str]] = []
    tools = [{"type": "function", "function": {"name": "f", "description": f"key {SECRETS['aws']}"}}]
    assert "[REDACTED:aws]" in redact(tools, "tools", sites)[0]["function"]["description"]
    parts = [{"role": "user", "content": [{"type": "text", "text": SECRETS["github"]}]}]
    redact(parts, "messages", sites)
    assert sites == [("tools[0].function.description", "aws"), ("messages[0].content[0].text", "github")]


# ------------------------------------------------------------------------------------ turns

def test_trailing_user_turns_are_trimmed_but_a_trace_without_assistant_is_left_to_the_answer_check() -> None:
    msgs = [U, A, {"role": "user", "content": "thanks"}, {"role": "system", "content": "x"}]
    assert trim_trailing_user(msgs) == ([U, A], 2)
    assert trim_trailing_user([U, A]) == ([U, A], 0)
    assert trim_trailing_user([U, U]) == ([U, U], 0)


def test_an_answer_is_a_last_assistant_turn_with_text_and_no_call() -> None:
    assert has_answer([U, A])
    assert not has_answer([U, A, U])
    assert not has_answer([U, {"role": "assistant", "content": "  "}])
    assert not has_answer([U, asst(call("c", "1"), content="Answer: 1")])
    assert not has_answer([U, asst(call("c", "1")), tool("c", "1")])
    assert not has_answer([])


# ---------------------------------------------------------------------------------- pairing

def test_missing_ids_are_minted_stably_and_results_follow_their_calls() -> None:
    msgs = [U, asst(call(None, "1+1"), call(None, "2+2", name="other")), tool(None, "4", name="other"),
            tool(None, "2"), A]
    before = copy.deepcopy(msgs)
    c: Counter[str] = Counter()
    out = pair_tool_calls("t", msgs, "repair", c)
    ids = [tc["id"] for tc in out[1]["tool_calls"]]
    assert all(i.startswith("call_") for i in ids) and len(set(ids)) == 2
    assert [out[2]["tool_call_id"], out[3]["tool_call_id"]] == [ids[1], ids[0]]  # by name, then in order
    assert c == Counter(call_ids_minted=2, result_ids_filled=2)
    assert msgs == before  # copies
    again = pair_tool_calls("t", msgs, "repair", Counter())
    assert [tc["id"] for tc in again[1]["tool_calls"]] == ids  # stable
    other = pair_tool_calls("u", msgs, "repair", Counter())
    assert [tc["id"] for tc in other[1]["tool_calls"]] != ids  # per trace


def test_orphans_are_repaired_and_an_emptied_turn_goes() -> None:
    msgs = [U, asst(call("a", "1"), call("b", "2")), tool("ghost", "9"), tool("a", "1"),
            asst(call("z", "3")), {"role": "user", "content": "go on"}, A]
    c: Counter[str] = Counter()
    out = pair_tool_calls("t", msgs, "repair", c)
    assert out == [U, asst(call("a", "1")), tool("a", "1"), {"role": "user", "content": "go on"}, A]
    assert c == Counter(orphan_calls_removed=2, orphan_results_removed=1)


def test_text_beside_an_orphan_call_is_kept() -> None:
    out = pair_tool_calls("t", [U, asst(call("a", "1"), content="Answer: 1")], "repair", Counter())
    assert out == [U, {"role": "assistant", "content": "Answer: 1"}]


def test_a_second_result_for_one_call_is_an_orphan() -> None:
    c: Counter[str] = Counter()
    out = pair_tool_calls("t", [U, asst(call("a", "1")), tool("a", "1"), tool("a", "1"), A], "repair", c)
    assert [m["role"] for m in out] == ["user", "assistant", "tool", "assistant"]
    assert c["orphan_results_removed"] == 1


def test_an_id_reused_by_a_later_turn_is_minted_anew_and_its_result_follows() -> None:
    msgs = [U, asst(call("call_0", "1")), tool("call_0", "1"), asst(call("call_0", "2")), tool("call_0", "2"), A]
    c: Counter[str] = Counter()
    out = pair_tool_calls("t", msgs, "repair", c)
    second = out[3]["tool_calls"][0]["id"]
    assert out[1]["tool_calls"][0]["id"] == "call_0" and second not in ("call_0", None)
    assert out[2]["tool_call_id"] == "call_0" and out[4]["tool_call_id"] == second
    assert c == Counter(call_ids_minted=1)


def test_drop_mode_drops_a_trace_with_orphans_and_off_changes_nothing() -> None:
    msgs = [U, asst(call("a", "1")), tool("b", "1"), A]
    with pytest.raises(Dropped) as e:
        pair_tool_calls("t", msgs, "drop", Counter())
    assert e.value.rule == "unpaired_tool_calls"
    assert pair_tool_calls("t", msgs, "off", Counter()) is msgs
    good = [U, asst(call(None, "1")), tool(None, "1"), A]
    c: Counter[str] = Counter()
    assert pair_tool_calls("t", good, "drop", c)[2]["tool_call_id"].startswith("call_")  # minting is no orphan
    assert c == Counter(call_ids_minted=1, result_ids_filled=1)


# ----------------------------------------------------------------------------------- tokens

def test_the_estimate_is_a_quarter_of_the_rendered_characters() -> None:
    msgs = [U, asst(call("a", "12+3")), tool("a", "15"), A]
    tools = [{"type": "function", "function": {"name": "calculator"}}]
    chars = len(render(msgs, JUDGE)) + len(json.dumps(tools))
    assert estimate_tokens(msgs, tools) == math.ceil(chars / 4)
    assert estimate_tokens(msgs, None) == math.ceil(len(render(msgs, JUDGE)) / 4)


def test_a_tokenizer_counts_the_chat_template_with_tools(tmp_path: Any) -> None:
    pytest.importorskip("transformers")
    from tgrs_agents.student import tiny

    tok = tiny.train_tokenizer(["What is 12 + 3? Answer: 15"])
    tok.save_pretrained(tmp_path)
    msgs = [{"role": "user", "content": "What is 12 + 3?"}, asst(call("a", "12+3")), tool("a", "15"),
            {"role": "assistant", "content": "Answer: 15"}]
    n = tokenizer_counter(str(tmp_path))(msgs, None)
    # the tiny tokenizer is character level: one token per character of the rendered template
    rendered = "<|user|>What is 12 + 3?<|end|><|assistant|><|call|>calculator 12+3<|end|><|tool|>15<|end|>" \
               "<|assistant|>Answer: 15<|end|>"
    assert n == len(tok(rendered)["input_ids"]) and n != estimate_tokens(msgs, None)


def test_a_tokenizer_that_does_not_load_is_named(tmp_path: Any) -> None:
    pytest.importorskip("transformers")
    from tgrs_agents.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot load a tokenizer from"):
        tokenizer_counter(str(tmp_path / "nothing-here"))
