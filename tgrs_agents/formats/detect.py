"""``auto``: which reader a file needs, from its first records, with the reason in words.

The container is read from the first bytes (zip, JSON array, JSONL, one document); then up to
:data:`SAMPLE` records are classified by the keys each format is known by, and the commonest answer
wins. ``openai`` and ``openai-ft`` differ only in the id: if any sampled record lacks one, the file
is ``openai-ft`` (which keeps an id where there is one). Nothing recognised: ``openai``, said so.
"""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from ..errors import InputError
from .openhands import is_event
from .sharegpt import turns_key
from .stream import BOM, ArrayStream, container, iter_lines

SAMPLE = 20
_CLAUDE_TYPES = {"user", "assistant", "summary", "progress", "file-history-snapshot", "system",
                 "queue-operation"}
_ANTHROPIC_BLOCKS = {"tool_use", "tool_result", "thinking", "redacted_thinking"}


def _messages(rec: dict[str, Any]) -> list[Any] | None:
    msgs = rec.get("messages")
    if isinstance(msgs, str):
        try:
            msgs = json.loads(msgs)
        except ValueError:
            return None
    return msgs if isinstance(msgs, list) else None


def _parts(msgs: list[Any]) -> list[dict[str, Any]]:
    return [p for m in msgs if isinstance(m, dict) and isinstance(m.get("content"), list)
            for p in m["content"] if isinstance(p, dict)]


def classify(rec: Any) -> tuple[str, str] | None:
    """(format, why) for one decoded record, or None."""
    if not isinstance(rec, dict):
        return None
    if isinstance(rec.get("traj"), list) and "reward" in rec:
        return "tau-bench", "records have 'traj' and 'reward'"
    hist = rec.get("history")
    if isinstance(hist, list) and hist and is_event(hist[0]):
        return "openhands", "records have a 'history' of OpenHands events"
    if isinstance(hist, list) and ("trajectory" in rec or "info" in rec):
        return "swe-agent", "a 'history' with 'trajectory'/'info' (SWE-agent .traj)"
    if "eval" in rec and "samples" in rec:
        return "inspect", "an Inspect log ('eval' and 'samples')"
    if turns_key(rec):
        return "sharegpt", "records have 'conversations' of {from, value} turns"
    if isinstance(rec.get("request"), dict) and isinstance(rec["request"].get("messages"), list):
        return "anthropic", "records have a Messages API 'request'"
    msgs = _messages(rec)
    if msgs is None:
        return None
    if "trajectory_format" in rec:
        return "mini-swe-agent", "records have 'messages' and 'trajectory_format'"
    if any(isinstance(m, dict) and (m.get("role") == "environment" or "function_calls" in m) for m in msgs):
        return "dolci", "messages with role 'environment' / 'function_calls' (Dolci tool use)"
    parts = _parts(msgs)
    if any("value" in p and "text" not in p for p in parts):
        return "llamafactory", "content parts carry 'value' (LLaMA-Factory messages)"
    tools: list[Any] = rec["tools"] if isinstance(rec.get("tools"), list) else []
    if ("system" in rec or any(p.get("type") in _ANTHROPIC_BLOCKS for p in parts)
            or any(isinstance(t, dict) and "input_schema" in t for t in tools)):
        return "anthropic", "Anthropic Messages records (top-level 'system' or tool_use/tool_result blocks)"
    if isinstance(rec.get("id"), str) and rec["id"]:
        return "openai", "OpenAI chat records with an 'id'"
    return "openai-ft", "OpenAI chat records without an 'id' (fine-tuning JSONL)"


def _vote(records: list[Any]) -> tuple[str, str] | None:
    found = [c for r in records if (c := classify(r))]
    if not found:
        return None
    names = Counter(n for n, _ in found)
    if "openai" in names and "openai-ft" in names:  # some records lack an id: the reader that mints one
        names["openai-ft"] += names.pop("openai")
    name, n = names.most_common(1)[0]
    why = next(w for f, w in found if f == name or (name == "openai-ft" and f == "openai"))
    return name, f"{why} ({n} of {len(records)} sampled)"


def _first(path: Path) -> list[Any]:
    """Up to :data:`SAMPLE` elements of a JSON array: those before a break, if it breaks early."""
    out: list[Any] = []
    try:
        out.extend(islice(ArrayStream(path), SAMPLE))
    except InputError:
        pass
    return out


def sniff(path: Path) -> tuple[str, str]:
    """(format name, why) for the file at ``path``."""
    path = Path(path)
    kind = container(path)
    if kind == "zip":
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if "header.json" in names or any(n.startswith("samples/") for n in names):
            return "inspect", "a zip with header.json and samples/ (Inspect .eval log)"
        return "openai", "a zip that is not an Inspect log; no reader recognised it"
    if kind == "document":
        with path.open("rb") as f:
            head = f.read(1 << 12)
        if b'"eval"' in head and b'"version"' in head:
            return "inspect", "an object with 'version' and 'eval' (Inspect .json log)"
        try:
            got = classify(orjson.loads(path.read_bytes().removeprefix(BOM)))
        except orjson.JSONDecodeError:
            return "openai", "the file is not valid JSON; no reader recognised it"
        return got if got else ("openai", "one JSON object no reader recognised")
    if kind == "array":
        first = _first(path)
        if first and is_event(first[0]):
            return "openhands", "a JSON array of OpenHands events (one trajectory)"
        if first and isinstance(first[0], dict) and "role" in first[0] and "content" in first[0]:
            return "mini-swe-agent", "a bare JSON array of {role, content} messages (one trajectory)"
        got = _vote(first)
        return (got[0], f"a JSON array: {got[1]}") if got else ("openai", "a JSON array no reader recognised")
    lines = []
    for _, raw in islice(iter_lines(path), SAMPLE):
        try:
            lines.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            continue
    if lines and all(isinstance(r, dict) and r.get("type") in _CLAUDE_TYPES
                     and ("sessionId" in r or "uuid" in r or "messageId" in r) for r in lines):
        return "claude-code", "JSONL events with 'type' and 'sessionId'/'uuid' (Claude Code transcript)"
    got = _vote(lines)
    return (got[0], f"JSONL: {got[1]}") if got else ("openai", "no record recognised; reading as OpenAI chat")
