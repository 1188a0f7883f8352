"""``sharegpt``: ``{"conversations": [{"from": ..., "value": ...}], "system"?, "tools"?}`` records, as
LLaMA-Factory, FastChat and Axolotl ship them, in a JSON array or JSONL.

Turns: ``human``/``user`` -> user, ``gpt``/``assistant`` -> assistant, ``system``; ``function_call``
(a JSON ``{"name", "arguments"}`` or a list of them) -> an assistant message with ``tool_calls``;
``observation``/``tool`` -> ``tool`` messages paired with the calls in order. Hermes-style text is
read too: ``<tool_call>{...}</tool_call>`` inside an assistant turn becomes a tool call and
``<tool_response>...</tool_response>`` a tool result. The format has no call ids: they are minted
from the record's content and the call's place, so the same file always gives the same ids.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .base import (
    Pairing,
    Source,
    Unreadable,
    as_list,
    as_object,
    digest,
    mint_call_id,
    records_source,
    tool_call,
    tools_list,
)
from .stream import container

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
         "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system",
         "function_call": "call", "tool_call": "call", "observation": "tool", "tool": "tool",
         "function": "tool", "ipython": "tool", "tool_response": "tool"}
TURNS = ("conversations", "conversation", "messages")
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_RESPONSE = re.compile(r"<tool_response>\s*(.*?)\s*</tool_response>", re.S)


def turns_key(doc: dict[str, Any]) -> str | None:
    for k in TURNS:
        v = doc.get(k)
        if isinstance(v, list) and v and isinstance(v[0], dict) and "from" in v[0]:
            return k
    return None


def parse_calls(text: str, field: str, seed: str, turn: int) -> list[dict[str, Any]]:
    """Tool calls written as JSON ``{"name", "arguments"}`` (one, or a list)."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise Unreadable(field, 'expected a JSON tool call {"name": ..., "arguments": ...}') from None
    calls = obj if isinstance(obj, list) else [obj]
    out = []
    for k, c in enumerate(calls):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise Unreadable(field, 'expected a JSON tool call {"name": ..., "arguments": ...}')
        out.append(tool_call(c.get("id") or mint_call_id(seed, turn, k), c["name"],
                             c.get("arguments", c.get("parameters"))))
    return out


def results(text: str, n_waiting: int) -> list[str]:
    """A tool turn's results: ``<tool_response>`` blocks, a JSON list with one item per call, or the text."""
    blocks = _RESPONSE.findall(text)
    if blocks:
        return blocks
    if n_waiting > 1:
        try:
            items = json.loads(text)
        except ValueError:
            items = None
        if isinstance(items, list) and len(items) == n_waiting:
            return [i if isinstance(i, str) else json.dumps(i, ensure_ascii=False) for i in items]
    return [text]


def convert(doc: Any) -> dict[str, Any]:
    doc = as_object(doc)
    key = turns_key(doc)
    if key is None:
        raise Unreadable("conversations", "expected a list of {from, value} turns")
    turns = as_list(doc[key], key)
    cid = doc.get("id") if isinstance(doc.get("id"), str) and doc.get("id") else "sharegpt-" + digest(
        [doc.get("system"), turns, doc.get("tools")])
    msgs: list[dict[str, Any]] = []
    if isinstance(doc.get("system"), str) and doc["system"]:
        msgs.append({"role": "system", "content": doc["system"]})
    pairing = Pairing()
    for i, t in enumerate(turns):
        field = f"{key}[{i}]"
        t = as_object(t, field)
        role = ROLES.get(str(t.get("from")).lower())
        value = t.get("value")
        if role is None:
            raise Unreadable(f"{field}.from", f"expected one of {', '.join(ROLES)}; got {t.get('from')!r}")
        if not isinstance(value, str):
            raise Unreadable(f"{field}.value", f"expected a string; got {type(value).__name__}")
        if role == "call":
            calls = parse_calls(value, f"{field}.value", cid, i)
            pairing.called(calls)
            msgs.append({"role": "assistant", "content": None, "tool_calls": calls})
        elif role == "tool":
            for text in results(value, len(pairing.waiting)):
                call_id, name = pairing.result(f"{field}.value")
                msgs.append({"role": "tool", "tool_call_id": call_id, "content": text}
                            | ({"name": name} if name else {}))
        elif role == "assistant" and _CALL.search(value):
            calls = [c for k, body in enumerate(_CALL.findall(value))
                     for c in parse_calls(body, f"{field}.value", cid, i * 1000 + k)]
            pairing.called(calls)
            text = _CALL.sub("", value).strip()
            msgs.append({"role": "assistant", "content": text or None, "tool_calls": calls})
        else:
            msgs.append({"role": role, "content": value})
    meta = {k: v for k, v in doc.items() if k not in (key, "system", "tools", "id", "task_id", "reference")}
    out = {"id": cid, "messages": msgs, "tools": tools_list(doc.get("tools"), "tools"), "metadata": meta}
    for k in ("task_id", "reference"):
        if k in doc:
            out[k] = doc[k]
    return out


def open_sharegpt(path: Path) -> Source:
    return records_source(path, container(path), convert)
