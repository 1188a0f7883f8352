"""``anthropic``: Messages API records (``system`` on top, content blocks), and ``claude-code``: Claude
Code session transcripts (JSONL, one event per line, the Messages blocks inside ``message``).

Blocks map to OpenAI messages: ``text`` -> content, ``thinking`` -> ``reasoning_content``,
``tool_use`` -> ``tool_calls`` (ids kept), ``tool_result`` (which Anthropic puts in a *user*
message) -> a ``tool`` message with that ``tool_call_id``, placed before the user's own text;
``image`` -> an ``image_url`` part. A block of any other type sets the record aside, naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from .base import (
    Source,
    Unreadable,
    as_list,
    as_object,
    digest,
    join_text,
    records_source,
    tool_call,
    tools_list,
)
from .stream import container, iter_lines

_ASSISTANT_BLOCKS = "text, thinking, redacted_thinking or tool_use"
_USER_BLOCKS = "text, image or tool_result"


def _image(block: dict[str, Any], field: str) -> dict[str, Any]:
    src = block.get("source") or {}
    if src.get("type") == "base64":
        url = f"data:{src.get('media_type', 'image/png')};base64,{src.get('data', '')}"
    elif src.get("type") == "url":
        url = src.get("url", "")
    else:
        raise Unreadable(f"{field}.source.type", f"expected 'base64' or 'url'; got {src.get('type')!r}")
    return {"type": "image_url", "image_url": {"url": url}}


def _result_content(content: Any, field: str) -> str | list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[dict[str, Any]] = []
    for j, b in enumerate(as_list(content, field)):
        kind = b.get("type") if isinstance(b, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": b.get("text", "")})
        elif kind == "image":
            parts.append(_image(b, f"{field}[{j}]"))
        else:
            raise Unreadable(f"{field}[{j}].type", f"expected text or image in a tool result; got {kind!r}")
    if all(p["type"] == "text" for p in parts):
        return join_text(p["text"] for p in parts)
    return parts


class Thread:
    """OpenAI messages built up from Anthropic messages, with what has no OpenAI field on the side."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.tool_errors: list[str] = []
        self.redacted_thinking = 0

    def system(self, system: Any, field: str = "system") -> None:
        if system in (None, "", []):
            return
        if isinstance(system, list):
            system = join_text(b.get("text", "") for b in system if isinstance(b, dict))
        self.messages.append({"role": "system", "content": system})

    def add(self, role: str, content: Any, field: str) -> None:
        if role == "assistant":
            self._assistant(content, field)
        elif role == "user":
            self._user(content, field)
        else:
            raise Unreadable(f"{field}.role", f"expected 'user' or 'assistant'; got {role!r}")

    def _assistant(self, content: Any, field: str) -> None:
        blocks = ([{"type": "text", "text": content}] if isinstance(content, str)
                  else as_list(content, f"{field}.content"))
        texts, thinking, calls = [], [], []
        for j, b in enumerate(blocks):
            kind = b.get("type") if isinstance(b, dict) else None
            if kind == "text":
                texts.append(b.get("text") or "")
            elif kind == "thinking":
                thinking.append(b.get("thinking") or "")
            elif kind == "redacted_thinking":
                self.redacted_thinking += 1
            elif kind in ("tool_use", "server_tool_use"):
                calls.append(tool_call(str(b.get("id")), str(b.get("name")), b.get("input") or {}))
            else:
                raise Unreadable(f"{field}.content[{j}].type", f"expected {_ASSISTANT_BLOCKS}; got {kind!r}")
        msg: dict[str, Any] = {"role": "assistant", "content": join_text(texts) or None}
        if calls:
            msg["tool_calls"] = calls
        if thinking:
            msg["reasoning_content"] = join_text(thinking)
        self.messages.append(msg)

    def _user(self, content: Any, field: str) -> None:
        if isinstance(content, str):
            self.messages.append({"role": "user", "content": content})
            return
        parts: list[dict[str, Any]] = []
        for j, b in enumerate(as_list(content, f"{field}.content")):
            kind = b.get("type") if isinstance(b, dict) else None
            where = f"{field}.content[{j}]"
            if kind == "tool_result":
                self.messages.append({"role": "tool", "tool_call_id": str(b.get("tool_use_id")),
                                      "content": _result_content(b.get("content"), f"{where}.content")})
                if b.get("is_error"):
                    self.tool_errors.append(str(b.get("tool_use_id")))
            elif kind == "text":
                parts.append({"type": "text", "text": b.get("text") or ""})
            elif kind == "image":
                parts.append(_image(b, where))
            else:
                raise Unreadable(f"{where}.type", f"expected {_USER_BLOCKS}; got {kind!r}")
        if parts:
            text_only = all(p["type"] == "text" for p in parts)
            self.messages.append({"role": "user",
                                  "content": join_text(p["text"] for p in parts) if text_only else parts})

    def merge_last_assistant(self, content: Any, field: str) -> None:
        """Fold more blocks of the same API message (Claude Code logs one block per line) into the last one."""
        last = self.messages[-1]
        self._assistant(content, field)
        more = self.messages.pop()
        if more.get("content"):
            last["content"] = join_text([last.get("content") or "", more["content"]])
        if more.get("tool_calls"):
            last["tool_calls"] = [*last.get("tool_calls", []), *more["tool_calls"]]
        if more.get("reasoning_content"):
            last["reasoning_content"] = join_text([last.get("reasoning_content") or "", more["reasoning_content"]])

    def metadata(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.tool_errors:
            out["tool_errors"] = self.tool_errors
        if self.redacted_thinking:
            out["redacted_thinking_blocks"] = self.redacted_thinking
        return out


_ANTHROPIC_KEYS = ("system", "messages", "tools", "id", "task_id", "reference", "metadata")


def convert_anthropic(doc: Any) -> dict[str, Any]:
    """One Messages API record: ``{system, messages, tools, ...}``, or ``{request, response}``."""
    doc = as_object(doc)
    if isinstance(doc.get("request"), dict):
        req, resp = doc["request"], doc.get("response")
        doc = {**{k: v for k, v in doc.items() if k not in ("request", "response")}, **req}
        if isinstance(resp, dict) and resp.get("content") is not None:
            doc["messages"] = [*as_list(req.get("messages"), "request.messages"),
                               {"role": "assistant", "content": resp["content"]}]
    t = Thread()
    t.system(doc.get("system"))
    for i, m in enumerate(as_list(doc.get("messages"), "messages")):
        m = as_object(m, f"messages[{i}]")
        t.add(str(m.get("role")), m.get("content"), f"messages[{i}]")
    meta = dict(doc["metadata"]) if isinstance(doc.get("metadata"), dict) else {}
    meta.update({k: v for k, v in doc.items() if k not in _ANTHROPIC_KEYS})
    meta.update(t.metadata())
    cid = doc.get("id") if isinstance(doc.get("id"), str) and doc.get("id") else None
    out = {"id": cid or "anthropic-" + digest([doc.get("system"), doc.get("messages")]),
           "messages": t.messages, "tools": tools_list(doc.get("tools"), "tools"), "metadata": meta}
    for k in ("task_id", "reference"):
        if k in doc:
            out[k] = doc[k]
    return out


def open_anthropic(path: Path) -> Source:
    return records_source(path, container(path), convert_anthropic)


# ------------------------------------------------------------------------------ Claude Code

def _sessions(path: Path) -> Iterator[tuple[int, list[tuple[int, bytes]]]]:
    """Consecutive lines of one ``sessionId``, keyed by the session's first line."""
    group: list[tuple[int, bytes]] = []
    current: str | None = None
    for n, raw in iter_lines(path):
        try:
            sid = orjson.loads(raw).get("sessionId")
        except (orjson.JSONDecodeError, AttributeError):
            sid = None
        if sid and current and sid != current and group:
            yield group[0][0], group
            group = []
        current = sid or current
        group.append((n, raw))
    if group:
        yield group[0][0], group


def convert_claude_code(lines: list[tuple[int, bytes]]) -> dict[str, Any]:
    """One Claude Code session: its user/assistant lines in file order, sidechains (sub-agents) left out."""
    t = Thread()
    skipped: dict[str, int] = {}
    info: dict[str, Any] = {}
    models: list[str] = []
    last_id: str | None = None
    for n, raw in lines:
        try:
            ev = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise Unreadable(f"line {n}", f"not valid JSON ({e})") from None
        kind = ev.get("type") if isinstance(ev, dict) else None
        if kind not in ("user", "assistant") or ev.get("isSidechain"):
            key = "sidechain" if ev.get("isSidechain") else str(kind)
            skipped[key] = skipped.get(key, 0) + 1
            continue
        for src, dst in (("sessionId", "session_id"), ("cwd", "cwd"), ("gitBranch", "git_branch"),
                         ("version", "version")):
            if ev.get(src) and dst not in info:
                info[dst] = ev[src]
        msg = as_object(ev.get("message"), f"line {n}.message")
        field = f"line {n}.message"
        if kind == "assistant":
            if msg.get("model") and msg["model"] not in models:
                models.append(msg["model"])
            mid = msg.get("id")
            if mid and mid == last_id and t.messages and t.messages[-1]["role"] == "assistant":
                t.merge_last_assistant(msg.get("content"), field)
                continue
            last_id = mid
        else:
            last_id = None
        t.add(kind, msg.get("content"), field)
    meta: dict[str, Any] = {**info, **t.metadata()}
    if models:
        meta["models"] = models
    if skipped:
        meta["skipped_lines"] = skipped
    sid = info.get("session_id")
    return {"id": sid if isinstance(sid, str) else "claude-code-" + digest(t.messages),
            "messages": t.messages, "metadata": meta}


def open_claude_code(path: Path) -> Source:
    return Source("line", _sessions(path), convert_claude_code)
