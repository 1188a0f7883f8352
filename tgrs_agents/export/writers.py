"""The trainers' formats: one converter per format (canonical trace -> row) and the files they go to.

* ``openai-ft``: OpenAI chat fine-tuning JSONL. Each line holds ``messages`` and, when the agent had
  tools, ``tools``, and nothing else (the fine-tuning API refuses unknown keys). Messages keep
  ``role``, ``content``, ``name``, ``tool_calls`` (``id``, ``type``, ``function.name``,
  ``function.arguments`` as a JSON string), ``tool_call_id`` and ``weight``; ``developer`` turns are
  written as ``system``.
* ``sharegpt``: LLaMA-Factory's sharegpt convention, one JSON object a line: ``conversations`` of
  ``{"from", "value"}`` turns (``human``, ``gpt``, ``function_call``, ``observation``), ``system``
  and ``tools`` (a JSON string of the function schemas), plus ``id``. A ``function_call`` value is
  ``{"name", "arguments"}`` (a list of them for parallel calls, arguments as an object); one
  ``observation`` answers it (parallel results as a JSON list of their texts, in call order).
  LLaMA-Factory wants human/observation and gpt/function_call to alternate, so consecutive user
  turns are joined, and assistant text beside tool calls is dropped (counted); tool-call ids
  have no place in this format.
* ``llamafactory``: a directory LLaMA-Factory reads as ``dataset_dir``: the sharegpt rows in
  ``NAME.jsonl`` and a ``dataset_info.json`` that declares them (formatting, columns and tags).
* ``hf``: a ``datasets`` dataset (``save_to_disk``; parquet when the path ends in ``.parquet``)
  with the columns ``id``, ``task_id``, ``messages`` and ``tools`` that TRL's ``SFTTrainer`` takes
  as they are. Arrow needs one type per column, so the schema is fixed (:func:`hf_features`):
  ``content`` is a string, and tool-call ``arguments`` and ``tools`` are ``datasets.Json``
  columns (a ``datasets`` that has ``Json``, as 5.2 does): stored as JSON text (Arrow's
  ``arrow.json`` extension type, in parquet too) and read back as objects. So a chat template gets
  the arguments as a mapping, exactly what the project's own SFT renders
  (:func:`tgrs_agents.loop.distill.encode`), and a Qwen-style ``arguments | tojson`` does not quote
  them twice. With an older ``datasets`` (no ``Json``) the export falls back to JSON strings
  (:func:`hf_strings`, the schema of earlier versions): parse them before a template sees them
  (:func:`tgrs_agents.chat.template_messages`). The rows are held in memory until the end.
* ``dpo``: preference pairs, one JSON object a line, in TRL's conversational preference format
  (``prompt``, ``chosen``, ``rejected``, ``tools``); the messages are the ``hf`` ones without their
  empty fields. Built by :mod:`.pairs`, which reads rejected candidates as well.

Message content must be text (a string or text parts); a record with an image or another non-text
part is set aside with the field path, never silently flattened.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..chat import parse_arguments
from ..errors import ConfigError

FORMATS = ("openai-ft", "sharegpt", "hf", "llamafactory", "dpo")
_TEXT_PARTS = {"text", "input_text", "output_text"}


class Unconvertible(Exception):
    """A trace the chosen format cannot express; the message says where and why."""


@dataclass
class Trace:
    """One trajectory on its way out: canonical (OpenAI-format) messages as dicts."""

    id: str
    task_id: str
    line: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None


# ----------------------------------------------------------------------------- shared pieces

def text(content: Any, where: str) -> str:
    """``content`` as one string; non-text parts raise :class:`Unconvertible` naming the part."""
    if content is None or isinstance(content, str):
        return content or ""
    out = []
    for i, p in enumerate(content):
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, dict) and p.get("type", "text") in _TEXT_PARTS and isinstance(p.get("text"), str):
            out.append(p["text"])
        else:
            kind = p.get("type") if isinstance(p, dict) else type(p).__name__
            raise Unconvertible(f"{where}.content[{i}]: a {kind!r} part; exports carry text only")
    return "".join(out)


def arguments_json(args: Any) -> str:
    """A tool call's arguments as the JSON string OpenAI's format and Arrow columns want."""
    return args if isinstance(args, str) else json.dumps(args if args is not None else {}, ensure_ascii=False)


def _calls(m: dict[str, Any], *, objects: bool = False) -> list[dict[str, Any]]:
    """The tool calls in OpenAI's shape; ``arguments`` a JSON string, or with ``objects`` a mapping
    (what a chat template renders, and what the project's SFT trains on)."""
    out = []
    for tc in m.get("tool_calls") or []:
        fn = tc.get("function") or {}
        args: Any = arguments_json(fn.get("arguments"))
        if objects:
            args = parse_arguments(args)
        out.append({"id": tc.get("id"), "type": "function",
                    "function": {"name": fn.get("name") or "", "arguments": args}})
    return out


# ------------------------------------------------------------------------------ converters

def to_openai_ft(t: Trace, counts: Counter[str]) -> dict[str, Any]:
    msgs = []
    for i, m in enumerate(t.messages):
        role = m["role"]
        if role == "developer":
            role = "system"
            counts["developer_as_system"] += 1
        out: dict[str, Any] = {"role": role}
        if m.get("content") is not None or not m.get("tool_calls"):
            out["content"] = text(m.get("content"), f"messages[{i}]")
        if m.get("name") and role != "tool":
            out["name"] = m["name"]
        if role == "assistant" and m.get("tool_calls"):
            out["tool_calls"] = _calls(m)
        if role == "tool":
            out["tool_call_id"] = m.get("tool_call_id")
        if role == "assistant" and m.get("weight") in (0, 1):
            out["weight"] = m["weight"]
        counts["message_keys_dropped"] += len(set(m) - {"role", "content", "name", "tool_calls",
                                                         "tool_call_id", "weight"})
        msgs.append(out)
    row: dict[str, Any] = {"messages": msgs}
    if t.tools:
        row["tools"] = t.tools
    return row


def _bare(tool: dict[str, Any]) -> dict[str, Any]:
    fn = tool.get("function")
    return fn if tool.get("type") == "function" and isinstance(fn, dict) else tool


def to_sharegpt(t: Trace, counts: Counter[str]) -> dict[str, Any]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []  # {"from", "value"} or, for observations, {"from", "results"}
    for i, m in enumerate(t.messages):
        role, where = m["role"], f"messages[{i}]"
        if role in ("system", "developer"):
            if turns:
                raise Unconvertible(f"{where}: a {role} turn inside the conversation has no sharegpt form")
            system.append(text(m.get("content"), where))
        elif role == "user":
            value = text(m.get("content"), where)
            if turns and turns[-1]["from"] == "human":
                turns[-1]["value"] += "\n\n" + value
                counts["user_turns_joined"] += 1
            else:
                turns.append({"from": "human", "value": value})
        elif role == "tool":
            if turns and turns[-1]["from"] == "observation":
                turns[-1]["results"].append(text(m.get("content"), where))
            else:
                turns.append({"from": "observation", "results": [text(m.get("content"), where)]})
        elif m.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": parse_arguments(c["function"]["arguments"])}
                     for c in _calls(m)]
            said = bool(text(m.get("content"), where).strip())
            if turns and turns[-1]["from"] == "gpt":  # text, then calls: one assistant turn here
                said = bool(turns.pop()["value"].strip()) or said
            counts["text_beside_calls_dropped"] += said
            turns.append({"from": "function_call",
                          "value": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)})
        else:
            value = text(m.get("content"), where)
            if turns and turns[-1]["from"] == "gpt":
                turns[-1]["value"] += "\n\n" + value
            else:
                turns.append({"from": "gpt", "value": value})
    for n, turn in enumerate(turns):
        if "results" in turn:
            r = turn.pop("results")
            turn["value"] = r[0] if len(r) == 1 else json.dumps(r, ensure_ascii=False)
        want = ("human", "observation") if n % 2 == 0 else ("gpt", "function_call")
        if turn["from"] not in want:
            raise Unconvertible(f"turn {n}: {turn['from']!r} where LLaMA-Factory's sharegpt needs "
                                f"{' or '.join(want)} (turns alternate, starting with human)")
    if len(turns) % 2:
        raise Unconvertible(f"ends on {turns[-1]['from']!r}: sharegpt ends on gpt or function_call")
    return {"id": t.id, "conversations": turns, "system": "\n\n".join(system),
            "tools": json.dumps([_bare(x) for x in t.tools or []], ensure_ascii=False)}


def to_hf(t: Trace, counts: Counter[str]) -> dict[str, Any]:
    """One ``hf`` row: tool-call ``arguments`` as objects and ``tools`` a list (None without tools)."""
    msgs = []
    for i, m in enumerate(t.messages):
        calls = _calls(m, objects=True) if m.get("tool_calls") else None
        msgs.append({"role": m["role"], "content": text(m.get("content"), f"messages[{i}]"),
                     "tool_calls": calls, "tool_call_id": m.get("tool_call_id"), "name": m.get("name")})
        counts["message_keys_dropped"] += len(set(m) - {"role", "content", "tool_calls", "tool_call_id", "name"})
    return {"id": t.id, "task_id": t.task_id, "messages": msgs,
            "tools": t.tools or None}


def hf_json_type() -> Any:
    """``datasets.Json()`` where the installed ``datasets`` has it (5.2 does; 3.x does not), else None."""
    import datasets

    json_type = getattr(datasets, "Json", None)
    return json_type() if json_type is not None else None


def hf_features() -> Any:
    """The ``datasets`` schema of the ``hf`` export (list literals: datasets 3, 4 and 5 read them):
    ``arguments`` and ``tools`` are ``Json`` columns, or strings where ``datasets`` has no ``Json``."""
    from datasets import Features, Value

    s = Value("string")
    obj = hf_json_type() or s
    call = {"id": s, "type": s, "function": {"name": s, "arguments": obj}}
    message = {"role": s, "content": s, "tool_calls": [call], "tool_call_id": s, "name": s}
    return Features({"id": s, "task_id": s, "messages": [message], "tools": obj})


def hf_strings(row: dict[str, Any]) -> dict[str, Any]:
    """A :func:`to_hf` row with ``arguments`` and ``tools`` as JSON strings (the fallback schema)."""
    def strings(calls: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        return [{**c, "function": {**c["function"], "arguments": arguments_json(c["function"]["arguments"])}}
                for c in calls] if calls else None

    msgs = [{**m, "tool_calls": strings(m["tool_calls"])} for m in row["messages"]]
    tools = json.dumps(row["tools"], ensure_ascii=False) if row["tools"] else None
    return {**row, "messages": msgs, "tools": tools}


CONVERTERS: dict[str, Callable[[Trace, Counter[str]], dict[str, Any]]] = {
    "openai-ft": to_openai_ft, "sharegpt": to_sharegpt, "llamafactory": to_sharegpt, "hf": to_hf}


# --------------------------------------------------------------------------------- writers

class Writer:
    """Rows to ``out``, written beside it first and moved into place by :meth:`close` (no half files)."""

    def __init__(self, fmt: str, out: Path, *, force: bool = False, name: str = "tgrs") -> None:
        self.fmt, self.out, self.name = fmt, out, name
        self.dir_out = fmt == "llamafactory" or (fmt == "hf" and out.suffix != ".parquet")
        if self.dir_out and out.exists() and (out.is_file() or any(out.iterdir())) and not force:
            raise ConfigError("exists and is not empty; pass --force to replace it", file=out)
        if not self.dir_out and out.is_dir():
            raise ConfigError(f"is a directory; the {fmt} export writes one file", file=out)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = out.with_name(out.name + ".tmp")
        _remove(self.tmp)
        self.rows: list[dict[str, Any]] = []
        self.file = None
        if fmt in ("openai-ft", "sharegpt", "llamafactory", "dpo"):
            data = self.tmp / f"{name}.jsonl" if fmt == "llamafactory" else self.tmp
            data.parent.mkdir(parents=True, exist_ok=True)
            self.file = data.open("w", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            self.rows.append(row)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        if self.fmt == "llamafactory":
            (self.tmp / "dataset_info.json").write_text(json.dumps(dataset_info(self.name), indent=2) + "\n")
        elif self.fmt == "hf":
            try:
                import datasets
            except ImportError:
                raise ConfigError("the hf export needs `datasets`: pip install 'tgrs-agents[hf]'") from None
            bars = datasets.is_progress_bar_enabled()
            datasets.disable_progress_bars()  # the export prints its own summary
            try:
                rows = self.rows if hf_json_type() is not None else [hf_strings(r) for r in self.rows]
                ds = datasets.Dataset.from_list(rows, features=hf_features())
                if self.out.suffix == ".parquet":
                    ds.to_parquet(str(self.tmp))
                else:
                    ds.save_to_disk(str(self.tmp))
            finally:
                if bars:
                    datasets.enable_progress_bars()
        _remove(self.out)
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
        _remove(self.tmp)


def dataset_info(name: str) -> dict[str, Any]:
    """LLaMA-Factory's ``dataset_info.json`` entry for the sharegpt rows in ``NAME.jsonl``."""
    return {name: {
        "file_name": f"{name}.jsonl",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
        "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                 "observation_tag": "observation", "function_tag": "function_call"},
    }}


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
