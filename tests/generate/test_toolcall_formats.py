"""Hermes tool calls: the loose forms a small model writes are read, broken blocks stay visible, and a
trajectory rendered with SmolLM2's (upgraded) chat template reads back to the same call."""

from __future__ import annotations

import json

import pytest

from tgrs_agents.generate.toolcall_formats import parse_hermes

CALC = {"type": "function", "function": {"name": "calculator", "arguments": json.dumps({"expression": "2+3"})}}


def names_args(calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


def test_one_block_with_text_before_it():
    t = parse_hermes('Let me compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+3"}}\n'
                     "</tool_call>")
    assert t.content == "Let me compute."
    assert t.tool_calls == [CALC] and t.bad_blocks == 0


@pytest.mark.parametrize("body", [
    '[{"name": "a", "arguments": {"x": 1}}, {"name": "b", "arguments": {}}]',  # a JSON list in one block
    '{"name": "a", "arguments": {"x": 1}}\n{"name": "b", "arguments": {}}',  # two objects in one block
    '{"name": "a", "parameters": {"x": 1}}\n{"name": "b"}',  # "parameters", no arguments at all
    '{"name": "a", "arguments": "{\\"x\\": 1}"}{"name": "b", "arguments": null}',  # arguments as a JSON string
    "[{'name': 'a', 'arguments': {'x': 1}}, {'name': 'b', 'arguments': {}}]",  # a Python literal
])
def test_the_loose_forms_small_models_write(body):
    t = parse_hermes(f"<tool_call>{body}</tool_call>")
    assert names_args(t.tool_calls) == [("a", {"x": 1}), ("b", {})]
    assert t.content == "" and t.bad_blocks == 0


def test_several_blocks_and_an_unclosed_last_one():
    text = ('<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
            '<tool_call>{"name": "b", "arguments": {"q": "x"}}')  # cut at the stop token
    assert names_args(parse_hermes(text).tool_calls) == [("a", {}), ("b", {"q": "x"})]


@pytest.mark.parametrize("bad", [
    '{"name": "a", "arguments": {"x": 1}',  # cut mid-JSON
    '{"arguments": {"x": 1}}',  # no name
    '{"name": "a", "arguments": [1, 2]}',  # arguments not an object
    '{"name": "a", "arguments": "not json"}',
    '{"name": "a"} trailing words',
])
def test_a_block_that_is_not_a_call_stays_in_the_content(bad):
    text = f'<tool_call>{bad}</tool_call> and <tool_call>{{"name": "ok", "arguments": {{}}}}</tool_call>'
    t = parse_hermes(text)
    assert names_args(t.tool_calls) == [("ok", {})]
    assert t.bad_blocks == 1 and f"<tool_call>{bad}</tool_call>" in t.content


def test_text_without_a_parsable_call_is_returned_unchanged():
    for text in ("  plain answer: 5\n", "<tool_call>oops</tool_call>"):
        t = parse_hermes(text)
        assert t.content == text and t.tool_calls == []
    assert parse_hermes("<tool_call>oops</tool_call>").bad_blocks == 1


# ----- SmolLM2's own chat template -----------------------------------------------------------------

TOOLS = [{"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}}}]
TRAJECTORY = [
    {"role": "user", "content": "What is 2+3?"},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", **CALC}]},
    {"role": "tool", "tool_call_id": "c1", "content": "5"},
    {"role": "assistant", "content": "The answer is 5."},
]


@pytest.fixture(scope="module")
def smol_tokenizer():
    from smol_kit import require_smol, smollm2

    require_smol()
    return smollm2()[1]


def test_a_tool_call_rendered_by_smollm2s_template_parses_back(smol_tokenizer):
    from tgrs_agents.chat import template_messages

    tok = smol_tokenizer
    msgs = template_messages(TRAJECTORY)
    text = tok.apply_chat_template(msgs, tools=TOOLS, tokenize=False)
    # the tools reach the prompt (the GGUF's own template drops them), in the model's ChatML
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert json.dumps(TOOLS[0]) in text and "<tool_response>\n5\n</tool_response>" in text
    # what the model would have generated for the first assistant turn reads back to the same call
    enc = tok.apply_chat_template(msgs, tools=TOOLS, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    spans, cur = [], []
    for i, m in zip(enc["input_ids"], enc["assistant_masks"], strict=True):
        if m:
            cur.append(i)
        elif cur:
            spans.append(cur)
            cur = []
    spans += [cur] if cur else []
    turns = [tok.decode(s) for s in spans]
    assert turns[1] == "The answer is 5.<|im_end|>"
    first = parse_hermes(turns[0].removesuffix("<|im_end|>"))
    assert first.tool_calls == [CALC] and first.content == ""


def test_the_upgraded_template_renders_plain_chats_as_the_gguf_does(smol_tokenizer):
    from smol_kit import original_template

    orig = original_template()
    assert smol_tokenizer.chat_template != orig  # upgraded on load
    for msgs in ([{"role": "user", "content": "Hi"}],
                 [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]):
        for gen in (False, True):
            assert (smol_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
                    == smol_tokenizer.apply_chat_template(msgs, chat_template=orig, tokenize=False,
                                                          add_generation_prompt=gen))
