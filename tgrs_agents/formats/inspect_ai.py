"""``inspect``: Inspect AI eval logs, ``.json`` or the zipped ``.eval``; one candidate per sample and epoch.

Inspect's messages are close to OpenAI's with three differences handled here: a tool call is
``{id, function: "<name>", arguments: {...}}`` (the name a string, the arguments a mapping); content
parts are ``text``, ``reasoning`` (to ``reasoning_content``) and ``image``, any other part type sets
the sample aside; long strings may be stored once as ``attachment://<hash>`` and are put back.
Scores stay in ``metadata.scores`` as written, and as numbers in ``metadata.score`` (Inspect's own
reading: ``C`` 1, ``P`` 0.5, ``I``/``N`` 0, booleans, numbers), so a ``metadata`` teacher can
threshold them. The sample's target becomes the ``reference``. ``events`` (the log of how the sample
ran) is not carried: it is the log's, not the trajectory's.

A ``.json`` log is streamed sample by sample (its header is read first); an ``.eval`` is read one
``samples/*.json`` member at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .base import Source, Unreadable, as_list, as_object, join_text, tool_call
from .stream import ArrayStream, container, zip_json, zip_members

_ATTACH = re.compile(r"attachment://([0-9a-f]{32})")
_LETTERS = {"C": 1.0, "P": 0.5, "I": 0.0, "N": 0.0}
_WORDS = {"yes": 1.0, "true": 1.0, "correct": 1.0, "no": 0.0, "false": 0.0, "incorrect": 0.0}
_TRAJ_KEYS = {"role", "content", "tool_calls", "tool_call_id", "function", "error", "id", "source", "model",
              "metadata", "internal"}


def score_float(value: Any) -> float | None:
    """A score value as Inspect's ``value_to_float`` reads it; None for values it cannot (dicts, lists)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        v = value.strip()
        if v in _LETTERS:
            return _LETTERS[v]
        if v.lower() in _WORDS:
            return _WORDS[v.lower()]
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _resolve(value: Any, attachments: dict[str, str]) -> Any:
    if isinstance(value, str) and "attachment://" in value:
        return _ATTACH.sub(lambda m: attachments.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_resolve(v, attachments) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, attachments) for k, v in value.items()}
    return value


def _content(content: Any, field: str) -> tuple[Any, list[str]]:
    """OpenAI content and the reasoning texts taken out of it."""
    if content is None or isinstance(content, str):
        return content, []
    parts: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for j, p in enumerate(as_list(content, field)):
        kind = p.get("type") if isinstance(p, dict) else None
        if kind == "text":
            parts.append({"type": "text", "text": p.get("text") or ""})
        elif kind == "reasoning":
            reasoning.append("" if p.get("redacted") else p.get("reasoning") or "")
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": p.get("image", "")}})
        else:
            raise Unreadable(f"{field}[{j}].type", f"expected text, reasoning or image; got {kind!r}")
    if all(p["type"] == "text" for p in parts):
        return join_text(p["text"] for p in parts), reasoning
    return parts, reasoning


def convert_sample(sample: Any, header: dict[str, Any]) -> dict[str, Any]:
    sample = as_object(sample)
    ev = header.get("eval") or {}
    attachments = sample.get("attachments") or {}
    task = ev.get("task", "task")
    msgs: list[dict[str, Any]] = []
    tool_errors: list[dict[str, Any]] = []
    models: list[str] = []
    for i, m in enumerate(as_list(sample.get("messages"), "messages")):
        field = f"messages[{i}]"
        m = _resolve(as_object(m, field), attachments)
        role = m.get("role")
        content, reasoning = _content(m.get("content"), f"{field}.content")
        out: dict[str, Any] = {"role": role, "content": content}
        if role == "assistant":
            calls = []
            for j, tc in enumerate(m.get("tool_calls") or []):
                tc = as_object(tc, f"{field}.tool_calls[{j}]")
                fn = tc.get("function")
                name = fn.get("name") if isinstance(fn, dict) else fn
                args = fn.get("arguments") if isinstance(fn, dict) else tc.get("arguments")
                if not isinstance(name, str):
                    raise Unreadable(f"{field}.tool_calls[{j}].function", "expected the function's name")
                calls.append(tool_call(str(tc.get("id")), name, args))
            if calls:
                out["tool_calls"] = calls
            if m.get("model") and m["model"] not in models:
                models.append(m["model"])
        elif role == "tool":
            out["tool_call_id"] = m.get("tool_call_id")
            if m.get("function"):
                out["name"] = m["function"]
            if m.get("error"):
                tool_errors.append({"message": i, **(m["error"] if isinstance(m["error"], dict)
                                                     else {"message": str(m["error"])})})
        if reasoning:
            out["reasoning_content"] = join_text(reasoning)
        out.update({k: v for k, v in m.items() if k not in _TRAJ_KEYS})
        msgs.append(out)
    scores = sample.get("scores") or {}
    meta: dict[str, Any] = {
        "task": task, "model": ev.get("model"), "eval_id": ev.get("eval_id"), "run_id": ev.get("run_id"),
        "sample_id": sample.get("id"), "epoch": sample.get("epoch"), "scores": scores,
        "score": {k: f for k, s in scores.items()
                  if isinstance(s, dict) and (f := score_float(s.get("value"))) is not None},
    }
    for k in ("metadata", "error", "limit", "model_usage", "total_time", "working_time", "uuid"):
        if sample.get(k):
            meta["sample_metadata" if k == "metadata" else k] = sample[k]
    if tool_errors:
        meta["tool_errors"] = tool_errors
    if models:
        meta["models"] = models
    target = sample.get("target")
    task_id = f"{task}:{sample.get('id')}"
    return {"id": f"{task_id}:{sample.get('epoch', 1)}", "task_id": task_id, "messages": msgs,
            "reference": target if target not in (None, "", []) else None, "metadata": meta}


def _json_samples(path: Path) -> Iterator[tuple[int, Any]]:
    stream = ArrayStream(path, key="samples")
    for n, sample in enumerate(stream, start=1):
        yield n, (sample, stream.head)


def _eval_samples(path: Path) -> Iterator[tuple[int, Any]]:
    header = zip_json(path, "header.json") or zip_json(path, "_journal/start.json") or {}
    for n, (_, sample) in enumerate(zip_members(path, "samples/"), start=1):
        yield n, (sample, header)


def open_inspect(path: Path) -> Source:
    records = _eval_samples(path) if container(path) == "zip" else _json_samples(path)
    return Source("record", records, lambda pair: convert_sample(*pair))
