"""Hermes-style tool calls in a model's own text: the robust reader of ``<tool_call>`` blocks.

Many instruct models (Hermes, Qwen2.5, and SmolLM2 through the upgraded template) write a tool call as
JSON inside ``<tool_call>`` tags and read results inside ``<tool_response>`` tags::

    <tool_call>
    {"name": "calculator", "arguments": {"expression": "2+3"}}
    </tool_call>

Why a module of its own: a 135 M model writes the format loosely, and one slip must not lose the whole
turn. :func:`parse_hermes` therefore accepts what these models are seen to write, and nothing vaguer:

* one JSON object per block, several objects in one block (one after another), or a JSON list of
  objects (a form several function-calling datasets use);
* ``arguments`` or ``parameters``, as an object or as a JSON string holding one;
* a Python-literal dict (single quotes, ``True``/``None``), which small models write often;
* a last block cut off by the token cap or the stop token (no ``</tool_call>``) if its JSON is whole.

A block that does not parse stays in the content as written (and is counted in ``bad_blocks``), so a
verifier sees exactly what the model wrote. Calls come back in OpenAI form (``arguments`` a JSON
string, no ``id``: the rollout assigns ids), as :class:`~tgrs_agents.generate.base.Turn` carries them.

Writing calls the model's way is the chat template's job, so that prompts, SFT rows and IFD share one
rendering: a template that cannot (SmolLM2's plain ChatML) is upgraded when loaded
(:mod:`tgrs_agents.teachers.templates`), and it writes exactly the block form parsed here. Nothing here
imports torch.
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field
from typing import Any

_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)


@dataclass(frozen=True, slots=True)
class ParsedTurn:
    """A generated turn split into its text and its tool calls (OpenAI form, ``arguments`` as JSON text)."""

    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    bad_blocks: int = 0  # <tool_call> blocks left in the content because they did not parse


def parse_hermes(text: str) -> ParsedTurn:
    """Split ``text`` into content and Hermes tool calls; see the module docstring for what is accepted."""
    calls: list[dict[str, Any]] = []
    kept: list[str] = []
    bad, last = 0, 0
    for m in _BLOCK.finditer(text):
        kept.append(text[last:m.start()])
        last = m.end()
        found = _calls_in(m.group(1))
        if found:
            calls.extend(found)
        else:
            kept.append(m.group(0))
            bad += 1
    kept.append(text[last:])
    if not calls:
        return ParsedTurn(text, [], bad)
    return ParsedTurn("".join(kept).strip(), calls, bad)


def _calls_in(body: str) -> list[dict[str, Any]] | None:
    """The calls in one block's body, or None when any part of it is not a call."""
    values = _json_values(body.strip())
    if values is None:
        literal = _literal(body.strip())
        values = None if literal is None else [literal]
    if not values:
        return None
    items = [x for v in values for x in (v if isinstance(v, list) else [v])]
    calls = [_openai_call(x) for x in items]
    return None if not calls or any(c is None for c in calls) else calls  # type: ignore[return-value]


def _json_values(body: str) -> list[Any] | None:
    """Every JSON value in ``body``, one after another (whitespace between), or None."""
    dec, out, i = json.JSONDecoder(), [], 0
    while i < len(body):
        try:
            value, i = dec.raw_decode(body, i)
        except ValueError:
            return None
        out.append(value)
        while i < len(body) and body[i].isspace():
            i += 1
    return out


def _literal(body: str) -> Any:
    """A Python literal (``{'name': 'f', 'arguments': {'x': True}}``), or None."""
    try:
        return ast.literal_eval(body)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _openai_call(obj: Any) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"].strip():
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return None
    return {"type": "function", "function": {"name": obj["name"].strip(), "arguments": json.dumps(args)}}
