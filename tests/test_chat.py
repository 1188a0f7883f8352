"""The one trajectory-to-text module: content reader, renderer presets (pinned byte for byte), template checks."""

from __future__ import annotations

import json
import re

import pytest

from tgrs_agents.chat import (
    CALLS,
    FLAT,
    JUDGE,
    RIFD,
    SPOKEN,
    Style,
    content_text,
    final_answer_text,
    has_generation_markers,
    pieces,
    render,
    template_messages,
)
from tgrs_agents.types import Candidate, Message

CALL = {"id": "c1", "type": "function",
        "function": {"name": "calculator", "arguments": json.dumps({"expression": "2+3", "b": 1})}}
TRAJ = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2 + 3?"}]},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "name": "calculator", "content": "5"},
    {"role": "assistant", "content": "Let me check.",
     "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "noop", "arguments": {"z": 1, "a": 2}}}]},
    {"role": "tool", "tool_call_id": "c2", "content": ""},
    {"role": "assistant", "content": "Answer:  5 "},
]


# ----- content ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "sep", "want"), [
    ("plain", "", "plain"),
    (None, "", ""),
    ([{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}], "", "ab"),
    ([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "\n", "a\nb"),
    (["bare", {"text": None}], "|", "bare|"),
    (42, "", ""),
])
def test_content_text_reads_strings_parts_and_none(content: object, sep: str, want: str) -> None:
    assert content_text(content, sep) == want


def test_message_text_is_the_content_reader() -> None:
    m = Message(role="user", content=[{"type": "text", "text": "x"}, {"type": "text", "text": "y"}])
    assert m.text == content_text(m.content) == "xy"


# ----- the presets, byte for byte (they feed judge prompts, r-IFD, filters and dedupe) -----------

def test_judge_transcript() -> None:
    want = ("[system] Be brief.\n"
            "[user] What is 2 + 3?\n"
            '[assistant calls calculator] {"expression": "2+3", "b": 1}\n'
            "[tool result calculator] 5\n"
            "[assistant] Let me check.\n"
            '[assistant calls noop] {"z": 1, "a": 2}\n'
            "[tool result] \n"
            "[assistant] Answer:  5 ")
    assert render(TRAJ, JUDGE) == want
    # a Candidate's messages render the same as the stored dicts
    assert render(Candidate(id="a", messages=TRAJ).messages, JUDGE) == want


def test_judge_transcript_keeps_empty_turns_but_not_an_empty_text_beside_calls() -> None:
    msgs = [{"role": "user", "content": ""}, {"role": "assistant", "content": "", "tool_calls": [CALL]},
            {"role": "assistant", "content": None}]
    assert render(msgs, JUDGE).splitlines() == [
        "[user] ", '[assistant calls calculator] {"expression": "2+3", "b": 1}', "[assistant] "]


def test_rifd_view_of_the_response() -> None:
    assert render(TRAJ[2:], RIFD) == ("calculator(2+3 1)\n-> 5\nLet me check.\nnoop(1 2)\n-> \nAnswer:  5 ")


def test_flat_starts_at_the_first_assistant_turn_and_sorts_argument_keys() -> None:
    assert render(TRAJ, FLAT, from_assistant=True) == (
        'calculator({"expression": "2+3", "b": 1}) 5 Let me check. noop({"a": 2, "z": 1}) Answer:  5 ')


def test_spoken_pieces_are_the_assistant_s_own() -> None:
    assert pieces(TRAJ, SPOKEN, roles={"assistant"}) == [
        'calculator {"expression": "2+3", "b": 1}', "Let me check.", 'noop {"z": 1, "a": 2}', "Answer:  5 "]


def test_calls_and_final_answer() -> None:
    assert render(TRAJ, CALLS) == 'calculator:{"expression": "2+3", "b": 1}|noop:{"a": 2, "z": 1}'
    assert final_answer_text(TRAJ) == "Answer:  5"
    assert final_answer_text(TRAJ[:3]) == ""


def test_a_custom_style_is_one_renderer_with_other_formats() -> None:
    style = Style(text="{role}> {text}", result=None, call=None, sep=" / ")
    assert render(TRAJ[:2], style) == "system> Be brief. / user> What is 2 + 3?"


def test_the_old_callers_use_the_renderer() -> None:
    pytest.importorskip("openai")
    from tgrs_agents.loop.filters import trajectory_text
    from tgrs_agents.teachers.llm_judge import render_transcript
    from tgrs_agents.teachers.student_compat import transcript

    assert render_transcript(Candidate(id="a", messages=TRAJ)) == render(TRAJ, JUDGE)
    assert transcript(TRAJ[2:]) == render(TRAJ[2:], RIFD)
    assert trajectory_text({"messages": TRAJ}) == re.sub(r"\s+", " ", render(TRAJ, FLAT, from_assistant=True)
                                                         ).strip().casefold()


# ----- templates ----------------------------------------------------------------------------------

def test_template_messages_parse_arguments_and_copy() -> None:
    out = template_messages(TRAJ)
    assert out[2]["tool_calls"][0]["function"]["arguments"] == {"expression": "2+3", "b": 1}
    assert out[2]["content"] == "" and all(v is not None for m in out for v in m.values())
    assert TRAJ[2]["tool_calls"][0]["function"]["arguments"] == CALL["function"]["arguments"]  # not in place
    odd = template_messages([{"role": "assistant", "tool_calls": [
        {"function": {"name": "f", "arguments": "not json"}}, {"function": {"name": "g", "arguments": "[1]"}},
        {"function": {"name": "h", "arguments": " "}}]}])
    assert [c["function"]["arguments"] for c in odd[0]["tool_calls"]] == [{"input": "not json"}, {"input": [1]}, {}]


@pytest.mark.parametrize(("template", "want"), [
    ("{% generation %}x{% endgeneration %}", True),
    ("{%- generation -%}x{%- endgeneration %}", True),
    ({"default": "{% generation %}", "tool_use": "plain"}, True),
    ({"tool_use": "{% generation %}"}, False),
    ("{{ messages }}", False),
    (None, False),
    ("", False),
])
def test_generation_markers(template: object, want: bool) -> None:
    assert has_generation_markers(template) is want  # type: ignore[arg-type]


def test_the_tiny_students_template_has_markers() -> None:
    from tgrs_agents.student.tiny import CHAT_TEMPLATE

    assert has_generation_markers(CHAT_TEMPLATE)
