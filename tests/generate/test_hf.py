"""The transformers backend on the tiny student: chat template, left padding, batching, tool calls."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tgrs_agents.chat import template_messages  # noqa: E402
from tgrs_agents.generate import (  # noqa: E402
    SamplingParams,
    ToolBox,
    TransformersBackend,
    Turn,
    calculator_tool,
    detect_tool_format,
    parse_tool_calls,
    render_prompt,
    rollout,
)
from tgrs_agents.generate.base import decode_turn, fit_prompt, stop_token_ids  # noqa: E402
from tgrs_agents.student import tiny  # noqa: E402
from tgrs_agents.tasks import arithmetic  # noqa: E402
from tgrs_agents.tasks.arithmetic_data import CALCULATOR_TOOL  # noqa: E402

TASKS = arithmetic.make_tasks(4, seed=5)
DEMOS = [arithmetic.demonstration(t) for t in TASKS]
TOOLS = [CALCULATOR_TOOL]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=24)


@pytest.fixture(scope="module")
def tok() -> Any:
    return tiny.train_tokenizer([m["content"] for d in DEMOS for m in d["messages"] if m.get("content")])


@pytest.fixture(scope="module")
def model(tok: Any) -> Any:
    return tiny.build_model(tok, seed=1).eval()


@pytest.fixture(scope="module")
def trained(tok: Any) -> Any:
    """The tiny model overfit on the four demonstrations: it calls the calculator, then answers."""
    model = tiny.build_model(tok, seed=2)
    rows = []
    for d in DEMOS:
        enc = tok.apply_chat_template(template_messages(d["messages"]), tools=TOOLS, return_dict=True,
                                      return_assistant_tokens_mask=True)
        ids = torch.tensor(enc["input_ids"])
        rows.append((ids, torch.where(torch.tensor(enc["assistant_masks"]) == 1, ids, -100)))
    width = max(len(r[0]) for r in rows)
    ids = torch.stack([torch.nn.functional.pad(r[0], (0, width - len(r[0])), value=tok.pad_token_id)
                       for r in rows])
    labels = torch.stack([torch.nn.functional.pad(r[1], (0, width - len(r[1])), value=-100) for r in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # steps this small gain nothing from more, and lose a lot on busy cores
    try:
        for _ in range(80):
            loss = model(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def first_turns() -> list[list[dict[str, Any]]]:
    return [[t.messages[0].model_dump(exclude_none=True)] for t in TASKS]


def complete(backend: Any, convs: list[list[dict[str, Any]]], params: SamplingParams = GREEDY,
             **kw: Any) -> list[Turn]:
    return asyncio.run(backend.complete(convs, [TOOLS] * len(convs), params, **kw))


# ----- chat template ----------------------------------------------------------------------------

def test_template_round_trip(tok: Any) -> None:
    text = tok.apply_chat_template(template_messages(DEMOS[0]["messages"]), tools=TOOLS, tokenize=False)
    expr = TASKS[0].metadata["expression"].replace(" ", "")
    assert f"<|assistant|><|call|>calculator {expr}<|end|><|tool|>{TASKS[0].reference}<|end|>" in text
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert tok.unk_token_id not in ids


def test_save_and_load_keep_left_padding_and_template(tok: Any, model: Any, tmp_path: Any) -> None:
    from transformers import AutoTokenizer

    tiny.save(model, tok, tmp_path / "student")
    again = AutoTokenizer.from_pretrained(tmp_path / "student")
    assert again.padding_side == "left"
    assert again.chat_template == tok.chat_template
    conv = DEMOS[1]["messages"][:3]
    assert render_prompt(again, conv, TOOLS) == render_prompt(tok, conv, TOOLS)
    assert again(["ab", "abcd"], padding=True)["attention_mask"][0] == [0, 0, 1, 1]


def test_assistant_mask_covers_assistant_turns_only(tok: Any) -> None:
    enc = tok.apply_chat_template(template_messages(DEMOS[0]["messages"]), tools=TOOLS, return_dict=True,
                                  return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    kept = tok.decode([i for i, m in zip(ids, mask, strict=True) if m], skip_special_tokens=False)
    expr = TASKS[0].metadata["expression"].replace(" ", "")
    assert kept == f"<|call|>calculator {expr}<|end|>Answer: {TASKS[0].reference}<|end|>"
    dropped = tok.decode([i for i, m in zip(ids, mask, strict=True) if not m], skip_special_tokens=False)
    assert f"<|tool|>{TASKS[0].reference}<|end|>" in dropped and "What is" in dropped


def test_render_prompt_ends_with_the_generation_prompt(tok: Any) -> None:
    assert render_prompt(tok, DEMOS[0]["messages"][:3], TOOLS).endswith("<|end|><|assistant|>")


# ----- the backend ------------------------------------------------------------------------------

def test_one_turn_per_conversation_with_left_padding(tok: Any, model: Any) -> None:
    be = TransformersBackend(model, tok)
    seen: list[Any] = []
    real = model.generate

    def spy(**kw: Any) -> Any:
        seen.append(kw)
        return real(**kw)

    model.generate = spy
    try:
        convs = first_turns() + [d["messages"][:3] for d in DEMOS[:2]]  # prompts of two lengths
        turns = complete(be, convs)
    finally:
        del model.generate
    assert len(turns) == len(convs) and all(isinstance(t, Turn) for t in turns)
    assert all(0 < t.n_tokens <= GREEDY.max_new_tokens for t in turns)
    (call,) = seen
    mask = call["attention_mask"]
    assert (mask[:, -1] == 1).all()  # every prompt ends at the right edge
    assert (mask[:, 0] == 0).any()  # shorter ones are padded on the left
    short = mask.sum(dim=1).argmin()
    assert (call["input_ids"][short][mask[short] == 0] == tok.pad_token_id).all()


def test_batched_equals_one_by_one_when_greedy(tok: Any, model: Any) -> None:
    be = TransformersBackend(model, tok)
    convs = first_turns() + [d["messages"][:3] for d in DEMOS]
    batched = complete(be, convs)
    single = [complete(be, [c])[0] for c in convs]
    assert batched == single


def test_small_batches_give_the_same_turns(tok: Any, model: Any) -> None:
    convs = first_turns() + [d["messages"][:3] for d in DEMOS]
    assert complete(TransformersBackend(model, tok, batch_size=3), convs) == complete(
        TransformersBackend(model, tok), convs)


def test_trained_student_calls_the_tool_through_rollout(tok: Any, trained: Any) -> None:
    be = TransformersBackend(trained, tok)
    assert be.tool_format == "compact"
    recs = asyncio.run(rollout(be, TASKS, n=2, toolbox=ToolBox([calculator_tool()]), params=GREEDY))
    for r, task in zip(recs[::2], TASKS, strict=True):
        assert r["metadata"]["stop"] == "final"
        asst, tool, final = r["messages"][1:]
        args = json.loads(asst["tool_calls"][0]["function"]["arguments"])
        assert args == {"expression": task.metadata["expression"].replace(" ", "")}
        assert tool["content"] == str(task.reference)
        assert final["content"] == f"Answer: {task.reference}"


def test_per_conversation_caps_and_zero_cap(tok: Any, model: Any) -> None:
    be = TransformersBackend(model, tok)
    convs = first_turns()[:3]
    turns = complete(be, convs, SamplingParams(temperature=1.0, max_new_tokens=20, seed=0),
                     max_new_tokens=[1, 5, 0])
    assert turns[0].n_tokens == 1 and turns[1].n_tokens <= 5
    assert turns[2] == Turn("", None, "length", 0)
    with pytest.raises(ValueError, match="2 entries for 3"):
        complete(be, convs, max_new_tokens=[1, 2])


def test_long_prompts_are_cut_from_the_left_and_said_so(tok: Any, model: Any) -> None:
    be = TransformersBackend(model, tok)
    long = [{"role": "user", "content": "What is " + "1+" * 100 + "1?"}]
    turns = complete(be, [long, first_turns()[0]])
    assert turns[0].finish_reason.endswith("+prompt_truncated")
    assert "prompt_truncated" not in turns[1].finish_reason


def test_checkpoint_sampling_defaults_do_not_leak(tok: Any) -> None:
    model = tiny.build_model(tok, seed=3).eval()
    model.generation_config.top_k = 1  # would turn sampling into greedy decoding
    model.generation_config.repetition_penalty = 1.3
    be = TransformersBackend(model, tok)
    sampled = complete(be, first_turns(), SamplingParams(temperature=1.0, max_new_tokens=24, seed=0))
    assert sampled != complete(be, first_turns())


def test_sampling_is_repeatable_with_a_seed(tok: Any, model: Any) -> None:
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=12, seed=7)
    a = complete(TransformersBackend(model, tok), first_turns(), params)
    b = complete(TransformersBackend(model, tok), first_turns(), params)
    assert a == b


def test_event_loop_stays_responsive(tok: Any, model: Any) -> None:
    be = TransformersBackend(model, tok)
    convs = first_turns() * 64

    async def main() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.001)
                ticks += 1

        t = asyncio.create_task(ticker())
        await be.complete(convs, [TOOLS] * len(convs), SamplingParams(max_new_tokens=24, seed=0))
        t.cancel()
        return ticks

    assert asyncio.run(main()) > 0


def test_load_student_from_a_directory(tok: Any, trained: Any, tmp_path: Any) -> None:
    tiny.save(trained, tok, tmp_path / "s")
    be = TransformersBackend(str(tmp_path / "s"), device="cpu")
    assert be.tokenizer.padding_side == "left" and be.tool_format == "compact"
    assert be.threads == 1  # a tiny model on CPU: one intra-op thread
    (turn,) = complete(be, first_turns()[:1])
    assert turn.finish_reason == "tool_calls" and turn.tool_calls[0]["function"]["name"] == "calculator"


# ----- decoding and parsing ---------------------------------------------------------------------

def test_decode_turn_reads_compact_calls(tok: Any) -> None:
    stops = stop_token_ids(tok)
    assert stops == [tok.convert_tokens_to_ids("<|end|>")]
    ids = tok("<|call|>calculator 59-7+13<|end|><pad><pad>", add_special_tokens=False)["input_ids"]
    turn = decode_turn(tok, ids, stops, 64, TOOLS, "compact")
    assert turn == Turn("", [{"type": "function", "function": {
        "name": "calculator", "arguments": '{"expression": "59-7+13"}'}}], "tool_calls", 20)
    ids = tok("Answer: 65<|end|>", add_special_tokens=False)["input_ids"]
    assert decode_turn(tok, ids, stops, 64, TOOLS, "compact") == Turn("Answer: 65", None, "stop", 11)
    assert decode_turn(tok, ids, stops, 4, TOOLS, "compact") == Turn("Answ", None, "length", 4)
    text = '<tool_call>{"name": "calculator", "arguments": {"expression": "1+2"}}</tool_call><|end|>'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    turn = decode_turn(tok, ids, stops, 200, TOOLS, "hermes", truncated=True)
    assert turn.finish_reason == "tool_calls+prompt_truncated" and turn.n_tokens == len(ids)
    assert turn.tool_calls == [{"type": "function", "function": {
        "name": "calculator", "arguments": '{"expression": "1+2"}'}}]


def test_parse_compact() -> None:
    content, calls = parse_tool_calls("thinking<|call|>calculator 1+2<|call|>calc 3", TOOLS, "compact")
    assert content == "thinking"
    assert [c["function"] for c in calls] == [
        {"name": "calculator", "arguments": '{"expression": "1+2"}'},
        {"name": "calc", "arguments": '{"input": "3"}'}]
    assert parse_tool_calls("Answer: 3", TOOLS, "compact") == ("Answer: 3", None)
    assert parse_tool_calls("<|call|>", TOOLS, "compact") == ("", None)


def test_parse_hermes() -> None:
    text = ('Let me compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2*3"}}\n'
            '</tool_call>\n<tool_call>{"name": "calculator", "arguments": "{\\"expression\\": \\"1\\"}"}'
            '</tool_call>')
    content, calls = parse_tool_calls(text, TOOLS, "hermes")
    assert content == "Let me compute."
    assert calls == [
        {"type": "function", "function": {"name": "calculator", "arguments": '{"expression": "2*3"}'}},
        {"type": "function", "function": {"name": "calculator", "arguments": '{"expression": "1"}'}}]
    # unparseable blocks stay in the content; a turn with none parsed has no calls
    bad = "<tool_call>{not json</tool_call>"
    assert parse_tool_calls(bad, TOOLS, "hermes") == (bad, None)
    mixed = bad + '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    assert parse_tool_calls(mixed, TOOLS, "hermes") == (
        bad, [{"type": "function", "function": {"name": "f", "arguments": "{}"}}])
    # a call cut off before its closing tag still parses if its JSON is whole
    assert parse_tool_calls('<tool_call>{"name": "f"}', None, "hermes")[1] is not None
    assert parse_tool_calls("Answer: 6", TOOLS, "hermes") == ("Answer: 6", None)
    with pytest.raises(ValueError):
        parse_tool_calls("x", TOOLS, "xml")  # type: ignore[arg-type]


def test_detect_tool_format(tok: Any) -> None:
    assert detect_tool_format(tok.chat_template) == "compact"
    qwen = ('{%- if tools %}...<tools></tools>...<tool_call>\\n{"name": <function-name>, "arguments": '
            '<args-json-object>}\\n</tool_call>{%- endif %}<|im_start|>')
    assert detect_tool_format(qwen) == "hermes"
    assert detect_tool_format(None) == "hermes"


def test_fit_prompt() -> None:
    ids = list(range(100))
    assert fit_prompt(ids, 20, None) == (ids, 20, False)
    assert fit_prompt(ids, 20, 128) == (ids, 20, False)
    assert fit_prompt(ids, 48, 128) == (ids[-80:], 48, True)
    assert fit_prompt(ids, 100, 128) == (ids[-64:], 64, True)  # never below half; the cap shrinks


def test_flush_denormal_stays_in_the_worker_thread(tok: Any, model: Any) -> None:
    import sys

    def subnormals_work() -> bool:
        return sys.float_info.min / 2 > 0

    before = subnormals_work()
    be = TransformersBackend(model, tok)
    complete(be, first_turns()[:1])
    asyncio.run(be.aclose())
    assert subnormals_work() == before  # hypothesis refuses to draw floats when they are flushed


def test_hermes_turns_are_read_the_forgiving_way_small_models_need():
    # a Python-literal dict and a JSON list in one block: both are calls (the robust reader is wired in)
    text = "<tool_call>{'name': 'calculator', 'arguments': {'expression': '1+2'}}</tool_call>"
    content, calls = parse_tool_calls(text, TOOLS, "hermes")
    assert content == "" and calls and calls[0]["function"]["name"] == "calculator"
    assert json.loads(calls[0]["function"]["arguments"]) == {"expression": "1+2"}
    two = ('<tool_call>[{"name": "calculator", "arguments": {"expression": "2*3"}}, '
           '{"name": "calculator", "parameters": {"expression": "4"}}]</tool_call>')
    _, calls = parse_tool_calls(two, TOOLS, "hermes")
    assert [json.loads(c["function"]["arguments"])["expression"] for c in calls] == ["2*3", "4"]
    assert parse_tool_calls("<tool_call>not a call</tool_call>", TOOLS, "hermes") == (
        "<tool_call>not a call</tool_call>", None)  # left as the model wrote it
