"""The decision record's trajectory fields (``sft_row``): the one-dump fast path equals the plain
rendering (``template_messages`` over ``Candidate.sft_record``) on every shape a record can take."""

from __future__ import annotations

from tgrs_agents.chat import template_messages
from tgrs_agents.curation.jsonl import sft_row
from tgrs_agents.tasks.arithmetic_data import synthetic_lines
from tgrs_agents.types import Candidate


def plain(c: Candidate) -> dict:
    rec = c.sft_record()
    rec["messages"] = template_messages(rec["messages"])
    return rec


def test_sft_row_equals_the_plain_rendering_on_generated_and_odd_records():
    cands = [Candidate.model_validate_json(x) for x in synthetic_lines(300, seed=3, per_task=3)]
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "not json"}}
    odd = [
        {"id": "a", "messages": [{"role": "user", "content": "q"},
                                 {"role": "assistant", "content": None, "tool_calls": [call]},
                                 {"role": "tool", "tool_call_id": "c1", "content": "r", "name": "f"},
                                 {"role": "assistant", "content": "x", "tool_calls": []}]},
        {"id": "b", "task_id": "t", "tools": [{"type": "function", "function": {"name": "f"}}],
         "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}], "extra": 1},
                      {"role": "assistant", "content": "",
                       "tool_calls": [{**call, "function": {"name": "f", "arguments": '[1, 2]'}},
                                      {**call, "id": "c2", "function": {"name": "g", "arguments": ""}}]}]},
    ]
    cands += [Candidate.model_validate(d) for d in odd]
    for c in cands:
        assert sft_row(c) == plain(c), c.id
    row = sft_row(cands[-2])
    assert row["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"input": "not json"}
    assert row["messages"][1]["content"] == ""  # a template needs content beside tool calls
