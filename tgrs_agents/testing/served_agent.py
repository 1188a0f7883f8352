"""A served calculator agent for the stand-in (``StandIn(chat=calculator_agent)``): what an
OpenAI-compatible teacher model does with an arithmetic task, without a model. Asked "What is E?"
with tools, it calls the ``calculator`` tool with E; given the tool's result, it answers
``Answer: N``. ``off_by_one``: odd results are answered one too high, so a panel has something to
reject. A request without tools is a judge's: None lets the stand-in answer with its verdict."""

from __future__ import annotations

import json
import re
from typing import Any

QUESTION = re.compile(r"^\s*What is (.+?)\?\s*$")


def calculator_agent(body: dict[str, Any], *, off_by_one: bool = False) -> dict[str, Any] | None:
    if not body.get("tools"):
        return None
    last = body["messages"][-1]
    if last["role"] == "user":
        match = QUESTION.match(last["content"])
        expr = match.group(1) if match else last["content"]
        call = {"id": "call_0", "type": "function",
                "function": {"name": "calculator", "arguments": json.dumps({"expression": expr})}}
        return {"content": None, "tool_calls": [call]}
    value = int(last["content"])
    return {"content": f"Answer: {value + 1 if off_by_one and value % 2 else value}"}
