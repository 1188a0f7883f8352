"""``openai``: today's input (OpenAI chat messages with an ``id``), and ``openai-ft``: OpenAI's chat
fine-tuning JSONL (``messages``, ``tools``, ``parallel_tool_calls``; no id).

Both also take records whose ``messages`` / ``tools`` are stored as JSON *strings* (as Hub datasets
often hold them). ``openai`` validates each line straight from its bytes (the fast path the curate
benchmarks measure); ``openai-ft`` mints an id from the content and undoes double-encoded tool-call
``arguments`` (a JSON string of a JSON string) and pairs tool results that carry no id with their
calls, noting each under ``metadata.normalized``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import (
    Source,
    Unreadable,
    arguments_json,
    as_list,
    as_object,
    digest,
    mint_call_id,
    parse_json_field,
    records_source,
)
from .stream import container

_STRINGS = ("messages", "tools")


def unpack_strings(doc: Any) -> dict[str, Any] | None:
    """``doc`` with ``messages`` / ``tools`` decoded when they are JSON strings; None if neither is."""
    if not isinstance(doc, dict) or not any(isinstance(doc.get(k), str) for k in _STRINGS):
        return None
    out = dict(doc)
    for k in _STRINGS:
        if isinstance(out.get(k), str):
            try:
                out[k] = parse_json_field(out[k], k, "a list")
            except Unreadable:
                return None  # leave the error to validation, which names the field and type
    return out


def _openai(doc: Any) -> dict[str, Any]:
    doc = as_object(doc)
    return unpack_strings(doc) or doc


def open_openai(path: Path) -> Source:
    kind = container(path)
    if kind == "jsonl":
        from .stream import iter_lines

        return Source("line", iter_lines(path), lambda raw: raw, per_line=True)
    return records_source(path, kind, _openai)


_FT_KEYS = ("messages", "tools", "id", "task_id", "reference", "tests", "metadata")


def convert_ft(doc: Any) -> dict[str, Any]:
    """One fine-tuning record as a candidate: id minted from messages and tools unless one is given.

    Fine-tuning files in the wild may leave tool-call ids out: a call without one gets an id minted
    from the content, and a tool result without ``tool_call_id`` answers the oldest call still
    waiting (results follow their calls in order), each noted under ``metadata.normalized``. A
    result naming a call nobody announced is left as it is (the ingest gate sets it aside).
    """
    doc = _openai(doc)
    msgs = as_list(doc.get("messages"), "messages")
    normalized = []
    out_msgs = []
    seed = digest(msgs)
    waiting: list[str] = []
    for i, m in enumerate(msgs):
        if isinstance(m, dict) and isinstance(m.get("tool_calls"), list):
            calls = []
            for j, tc in enumerate(m["tool_calls"]):
                fn = tc.get("function") if isinstance(tc, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    text, undone = arguments_json(fn["arguments"])
                    if undone:
                        normalized.append(f"messages[{i}].tool_calls[{j}].function.arguments: "
                                          "double-encoded JSON decoded once")
                        tc = {**tc, "function": {**fn, "arguments": text}}
                if isinstance(tc, dict) and tc.get("id") in (None, ""):
                    tc = {**tc, "id": mint_call_id(seed, i, j)}
                    normalized.append(f"messages[{i}].tool_calls[{j}].id: minted (the call had none)")
                if isinstance(tc, dict) and isinstance(tc.get("id"), str):
                    waiting.append(tc["id"])
                calls.append(tc)
            m = {**m, "tool_calls": calls}
        elif isinstance(m, dict) and m.get("role") == "tool":
            tid = m.get("tool_call_id")
            if tid in (None, "") and waiting:
                m = {**m, "tool_call_id": waiting.pop(0)}
                normalized.append(f"messages[{i}].tool_call_id: filled in order ({m['tool_call_id']}, "
                                  "the oldest call without a result)")
            elif tid in waiting:
                waiting.remove(tid)
        out_msgs.append(m)
    meta = dict(doc["metadata"]) if isinstance(doc.get("metadata"), dict) else {}
    meta.update({k: v for k, v in doc.items() if k not in _FT_KEYS})
    if normalized:
        meta["normalized"] = normalized
    out = {k: doc[k] for k in _FT_KEYS if k in doc and k != "metadata"}
    out.update(messages=out_msgs, metadata=meta)
    if not isinstance(out.get("id"), str) or not out["id"]:
        out["id"] = "ft-" + digest([msgs, doc.get("tools")])
    return out


def open_openai_ft(path: Path) -> Source:
    return records_source(path, container(path), convert_ft)
