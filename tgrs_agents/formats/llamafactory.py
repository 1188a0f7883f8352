"""``llamafactory``: LLaMA-Factory v1 messages, ``{"messages": [{"role", "content": [{"type", "value"}]}],
"tools": "<JSON>"}``.

Content parts carry ``value``, not ``text``, and tool calls are parts (``{"type": "tool_call",
"value": "{\\"name\\": ..., \\"arguments\\": ...}"}``), not ``tool_calls``. Read as OpenAI messages
these validate with an empty final text, so every teacher would reject every record: this reader maps
``text`` parts to content, ``reasoning`` to ``reasoning_content``, ``tool_call`` parts to tool calls
with minted ids, and pairs ``tool`` messages with them in order. Any other part type sets the
record aside.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import Pairing, Source, Unreadable, as_list, as_object, digest, join_text, records_source, tools_list
from .sharegpt import parse_calls, results
from .stream import container

PARTS = ("text", "reasoning", "tool_call", "image_url", "image")


def convert(doc: Any) -> dict[str, Any]:
    doc = as_object(doc)
    raw_msgs = as_list(doc.get("messages"), "messages")
    cid = doc["id"] if isinstance(doc.get("id"), str) and doc["id"] else "llamafactory-" + digest(
        [raw_msgs, doc.get("tools")])
    msgs: list[dict[str, Any]] = []
    pairing = Pairing()
    for i, m in enumerate(raw_msgs):
        field = f"messages[{i}]"
        m = as_object(m, field)
        role = m.get("role")
        if role not in ("system", "user", "assistant", "tool"):
            raise Unreadable(f"{field}.role", f"expected system, user, assistant or tool; got {role!r}")
        content = m.get("content")
        parts = ([{"type": "text", "value": content}] if isinstance(content, str)
                 else as_list(content, f"{field}.content"))
        texts: list[str] = []
        images: list[dict[str, Any]] = []
        reasoning: list[str] = []
        calls: list[dict[str, Any]] = []
        for j, p in enumerate(parts):
            where = f"{field}.content[{j}]"
            kind = p.get("type") if isinstance(p, dict) else None
            value = p.get("value") if isinstance(p, dict) else None
            if kind not in PARTS:
                raise Unreadable(f"{where}.type", f"expected one of {', '.join(PARTS)}; got {kind!r}")
            if not isinstance(value, str):
                raise Unreadable(f"{where}.value", f"expected a string; got {type(value).__name__}")
            if kind == "text":
                texts.append(value)
            elif kind == "reasoning":
                reasoning.append(value)
            elif kind == "tool_call":
                calls.extend(parse_calls(value, f"{where}.value", cid, i * 1000 + j))
            else:
                images.append({"type": "image_url", "image_url": {"url": value}})
        text = join_text(texts)
        if role == "tool":
            for piece in results(text, len(pairing.waiting)):
                call_id, name = pairing.result(f"{field}.content")
                msgs.append({"role": "tool", "tool_call_id": call_id, "content": piece}
                            | ({"name": name} if name else {}))
            continue
        if (calls or reasoning) and role != "assistant":
            raise Unreadable(f"{field}.content", "expected tool calls and reasoning only in assistant messages")
        out: dict[str, Any] = {"role": role, "content": ([{"type": "text", "text": text}] if text else []) + images
                               if images else (text or (None if calls else ""))}
        if calls:
            pairing.called(calls)
            out["tool_calls"] = calls
        if reasoning:
            out["reasoning_content"] = join_text(reasoning)
        msgs.append(out)
    meta = {k: v for k, v in doc.items() if k not in ("messages", "tools", "id", "task_id", "reference")}
    res = {"id": cid, "messages": msgs, "tools": tools_list(doc.get("tools"), "tools"), "metadata": meta}
    for k in ("task_id", "reference"):
        if k in doc:
            res[k] = doc[k]
    return res


def open_llamafactory(path: Path) -> Source:
    return records_source(path, container(path), convert)
