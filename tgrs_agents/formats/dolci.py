"""``dolci``: Ai2 Dolci / Olmo tool-use SFT rows as the Hub holds them.

``{"id", "dataset_source", "messages": [{"role": system/user/assistant/environment, "content",
"function_calls", "functions"}]}``: the tools are a JSON string in the system message's
``functions``; an assistant's ``function_calls`` are Python call expressions, one per line
(``f(a=1)\\ng(b="x")``); the results of one turn's calls come back in one ``environment`` message,
one per line. Calls are parsed with :mod:`ast` (literal arguments only) into tool calls with minted
ids; a turn whose results do not split one per call is set aside rather than mis-paired.
"""

from __future__ import annotations

import ast
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


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    raise ValueError("not a function name")


def parse_python_calls(text: str, field: str, seed: str, turn: int) -> list[dict[str, Any]]:
    """``f(a=1)\\ng(b=2)`` as OpenAI tool calls; keyword arguments must be Python literals."""
    calls = []
    for k, line in enumerate(ln for ln in text.splitlines() if ln.strip()):
        try:
            node = ast.parse(line.strip(), mode="eval").body
            if not isinstance(node, ast.Call) or node.args:
                raise ValueError("expected keyword arguments only")
            args = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords if kw.arg}
            calls.append(tool_call(mint_call_id(seed, turn, k), _name(node.func), args))
        except (SyntaxError, ValueError) as e:
            raise Unreadable(field, f"expected Python calls name(key=literal, ...), one per line; "
                                    f"line {k + 1} is {line.strip()[:80]!r} ({e})") from None
    return calls


def convert(doc: Any) -> dict[str, Any]:
    doc = as_object(doc)
    raw = as_list(doc.get("messages"), "messages")
    cid = doc["id"] if isinstance(doc.get("id"), str) and doc["id"] else "dolci-" + digest(raw)
    msgs: list[dict[str, Any]] = []
    tools = None
    pairing = Pairing()
    for i, m in enumerate(raw):
        field = f"messages[{i}]"
        m = as_object(m, field)
        role, content = m.get("role"), m.get("content")
        if m.get("functions"):
            tools = tools_list(m["functions"], f"{field}.functions")
        if role == "environment":
            lines = (content or "").split("\n")
            n = len(pairing.waiting)
            if n > 1 and len(lines) != n:
                raise Unreadable(f"{field}.content", f"expected {n} results, one per line, for {n} calls; "
                                                     f"got {len(lines)} lines")
            for piece in (lines if n > 1 else [content or ""]):
                call_id, name = pairing.result(f"{field}.content")
                msgs.append({"role": "tool", "tool_call_id": call_id, "content": piece}
                            | ({"name": name} if name else {}))
            continue
        if role not in ("system", "user", "assistant"):
            raise Unreadable(f"{field}.role", f"expected system, user, assistant or environment; got {role!r}")
        out: dict[str, Any] = {"role": role, "content": content}
        if m.get("function_calls"):
            if role != "assistant":
                raise Unreadable(f"{field}.function_calls", "expected function calls only on assistant messages")
            out["tool_calls"] = parse_python_calls(str(m["function_calls"]), f"{field}.function_calls", cid, i)
            pairing.called(out["tool_calls"])
        msgs.append(out)
    meta = {k: v for k, v in doc.items() if k not in ("messages", "id", "task_id", "reference")}
    return {"id": cid, "messages": msgs, "tools": tools, "metadata": meta}


def open_dolci(path: Path) -> Source:
    return records_source(path, container(path), convert)
