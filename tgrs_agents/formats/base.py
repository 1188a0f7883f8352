"""What every reader shares: the :class:`Format` record, the error a converter raises, and the helpers
that build canonical OpenAI-format candidates (tool schemas, tool calls, minted ids).

A reader turns one source record into a *canonical candidate dict*: ``id``, ``task_id``,
``messages`` (OpenAI chat: ``tool_calls`` on assistant messages, ``tool`` messages with
``tool_call_id``), ``tools`` (OpenAI function schemas), ``reference`` and ``metadata``. What a source
records that this shape has no place for goes under ``metadata``; thinking goes to the assistant
message's ``reasoning_content`` (the field chat templates such as Qwen's read).

A record that cannot be read faithfully raises :class:`Unreadable` with the *source's* field path
and what was expected; the run sets it aside in ``invalid.jsonl`` instead of guessing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from ..types import Candidate, content_text

Unit = Literal["line", "record"]
Raw = Any  # one source record as the container gave it: bytes (a JSONL line) or decoded JSON


class Unreadable(Exception):
    """A source record this reader cannot map without losing or inventing content."""

    def __init__(self, field: str | None, expected: str) -> None:
        self.field = field
        self.expected = expected
        super().__init__(f"{field}: {expected}" if field else expected)


@dataclass(frozen=True, slots=True)
class Source:
    """An opened input: its records with their positions, and how to convert one.

    ``unit``: what a position counts (``line`` of a JSONL file, or ``record`` of an array or zip).
    ``per_line``: one candidate per line, so a line count is the number of candidates.
    ``convert`` returns a canonical dict, or the raw bytes themselves for the ``openai`` reader
    (validated straight from JSON, the fast path).
    """

    unit: Unit
    records: Iterable[tuple[int, Raw]]
    convert: Callable[[Raw], dict[str, Any] | bytes]
    per_line: bool = False


@dataclass(frozen=True, slots=True)
class Format:
    """A registered reader: ``open(path)`` gives the file's :class:`Source`.

    ``suffixes``: the file names it reads in a directory input (see :mod:`.dirs`).
    """

    name: str
    summary: str
    open: Callable[[Path], Source]
    require_assistant: bool = True  # a record without an assistant turn is set aside
    suffixes: tuple[str, ...] = (".jsonl", ".json")


# ------------------------------------------------------------------------------------ ids

def digest(obj: Any, n: int = 16) -> str:
    """A stable hex digest of JSON-able ``obj`` (sorted keys): the same content, the same id."""
    data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(data).hexdigest()[:n]


MINTED = re.compile(r"^[a-z][a-z-]*-[0-9a-f]{16}$")
"""The shape of a candidate id minted by a reader (``<prefix>-<16 hex digits of the content>``)."""


def mint_call_id(seed: str, turn: int, k: int) -> str:
    """A tool-call id for a format that has none: stable in the record's content and the call's place."""
    return "call_" + hashlib.sha256(f"{seed}:{turn}:{k}".encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------ tools

def parse_json_field(value: Any, field: str, what: str = "JSON") -> Any:
    """``value`` itself, or decoded when it is a JSON string (formats that store JSON as text)."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except ValueError:
        raise Unreadable(field, f"expected {what} (a JSON string was given and does not parse)") from None


def function_tool(tool: Any, field: str) -> dict[str, Any]:
    """A tool schema as OpenAI's ``{"type": "function", "function": {name, description, parameters}}``.

    Takes the wrapped form, a bare ``{name, description, parameters}`` (ShareGPT, Hermes) or
    Anthropic's ``{name, description, input_schema}``.
    """
    if not isinstance(tool, dict):
        raise Unreadable(field, f"expected a tool schema object; got {type(tool).__name__}")
    if tool.get("type") == "function" and isinstance(tool.get("function"), dict):
        return tool
    if not isinstance(tool.get("name"), str):
        raise Unreadable(f"{field}.name", "expected the tool's name (a string)")
    fn = {k: v for k, v in tool.items() if k not in ("input_schema", "type")}
    if "input_schema" in tool:
        fn["parameters"] = tool["input_schema"]
    return {"type": "function", "function": fn}


def tools_list(value: Any, field: str) -> list[dict[str, Any]] | None:
    """A record's tools (a list or a JSON string of one) as OpenAI function schemas; None if empty."""
    value = parse_json_field(value, field, "a list of tool schemas")
    if value in (None, [], {}):
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise Unreadable(field, f"expected a list of tool schemas; got {type(value).__name__}")
    return [function_tool(t, f"{field}[{i}]") for i, t in enumerate(value)]


def arguments_json(args: Any) -> tuple[str, bool]:
    """A call's arguments as the JSON text OpenAI stores, and whether a double encoding was undone.

    A mapping is dumped; a string is kept, except a JSON string *of a JSON object string*
    (``"\\"{\\\\\\"a\\\\\\": 1}\\""``, seen in the wild), which is decoded once.
    """
    if args is None:
        return "{}", False
    if not isinstance(args, str):
        return json.dumps(args, ensure_ascii=False), False
    try:
        inner = json.loads(args)
    except ValueError:
        return args, False
    if isinstance(inner, str):
        try:
            if isinstance(json.loads(inner), dict):
                return inner, True
        except ValueError:
            pass
    return args, False


def tool_call(call_id: str, name: str, args: Any) -> dict[str, Any]:
    text, _ = arguments_json(args)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": text}}


def join_text(parts: Iterable[str]) -> str:
    """Text blocks of one message as one string: non-blank blocks joined by a blank line."""
    texts = [p for p in parts if p and p.strip()]
    return texts[0] if len(texts) == 1 else "\n\n".join(t.strip() for t in texts)


class Pairing:
    """Tool calls waiting for their results, in order: results that carry no id take the oldest."""

    def __init__(self) -> None:
        self.waiting: list[tuple[str, str]] = []  # (id, function name)

    def called(self, calls: list[dict[str, Any]]) -> None:
        self.waiting.extend((c["id"], c["function"]["name"]) for c in calls)

    def result(self, field: str, call_id: str | None = None) -> tuple[str, str | None]:
        """The id (and function name) a result answers; ``call_id`` given: that one, if called."""
        if call_id is not None:
            for i, (cid, name) in enumerate(self.waiting):
                if cid == call_id:
                    del self.waiting[i]
                    return cid, name
            return call_id, None
        if not self.waiting:
            raise Unreadable(field, "expected a tool call before this tool result; none is waiting")
        cid, name = self.waiting.pop(0)
        return cid, name


# ------------------------------------------------------------------------------------ checks

KNOWN_PARTS = {"text": "text", "image_url": "image_url", "input_audio": "input_audio", "file": "file",
               "refusal": "refusal"}


def check_readable(c: Candidate, *, require_assistant: bool = True) -> tuple[str, str] | None:
    """Why a validated candidate would be mis-read by every teacher, as (field, what was expected).

    Content parts must be OpenAI's (``text`` with a string ``text``, image/audio/file, refusal); the
    final assistant turn must carry text a teacher can read or a tool call.
    """
    last = None
    for i, m in enumerate(c.messages):
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                kind = part.get("type")
                where = f"messages[{i}].content[{j}]"
                if kind not in KNOWN_PARTS:
                    return f"{where}.type", (f"expected a content part of type {', '.join(KNOWN_PARTS)}; "
                                             f"got {kind!r} (keys {', '.join(sorted(part))})")
                key = KNOWN_PARTS[kind]
                if key not in part or (kind == "text" and not isinstance(part["text"], str)):
                    return where, (f"expected a {kind!r} part to carry {key!r}"
                                   + (" (a string)" if kind == "text" else "")
                                   + f"; it has {', '.join(sorted(part))}")
        if m.role == "assistant":
            last = i
    if last is None:
        return ("messages", "expected at least one assistant message (the trajectory to judge)"
                ) if require_assistant else None
    m = c.messages[last]
    if not content_text(m.content).strip() and not m.tool_calls:
        got = "no content" if m.content in (None, "", []) else "content without text"
        extra = " (only reasoning)" if m.model_extra and m.model_extra.get("reasoning_content") else ""
        return (f"messages[{last}].content",
                f"expected the final assistant message to have text a teacher can read or a tool call; "
                f"got {got}{extra}")
    return None


def records_source(path: Path, container: str, convert: Callable[[Any], dict[str, Any]],
                   *, per_line: bool = True) -> Source:
    """The usual walk: JSONL lines (by line), array elements (by index), or one document."""
    from .stream import ArrayStream, iter_lines

    if container == "array":
        return Source("record", enumerate(ArrayStream(path), start=1), convert)
    if container == "document":
        return Source("record", [(1, path)], lambda p: convert(json.loads(Path(p).read_bytes())))
    return Source("line", iter_lines(path), lambda raw: convert(_loads(raw)), per_line=per_line)


def _loads(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise Unreadable(None, f"not valid JSON ({e})") from None


def as_object(doc: Any, field: str | None = None) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise Unreadable(field, f"expected a JSON object; got {type(doc).__name__}")
    return doc


def as_list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        got = type(value).__name__ if not isinstance(value, list) else "an empty list"
        raise Unreadable(field, f"expected a non-empty list; got {got}")
    return value


def iter_messages(msgs: list[Any], field: str) -> Iterator[tuple[int, dict[str, Any], str]]:
    for i, m in enumerate(msgs):
        yield i, as_object(m, f"{field}[{i}]"), f"{field}[{i}]"
