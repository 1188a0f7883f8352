"""The OpenAI chat rules a canonical candidate must keep to be usable as SFT data.

Pydantic checks the shapes (a role is one of five, a tool call has a function name); these are the
rules between fields that chat templates and the OpenAI API enforce and pydantic cannot see:

* an assistant message carries content (text, parts or a refusal) or tool calls: a template renders
  an empty turn, the API rejects it;
* a tool call's ``arguments`` is a JSON object, as a string or as a mapping: templates call
  ``fromjson`` / ``tojson`` on it, and a model trained on ``"not json"`` learns to emit it;
* a ``tool`` message names, in ``tool_call_id``, a call an earlier assistant message announced:
  the API rejects an orphan result, and a template pairs results with calls by that id.

They live here, not as validators on :class:`~tgrs_agents.types.Candidate`, because they are an
input gate: every reader's output crosses :func:`check_readable <.base.check_readable>`, which
calls :func:`check_openai`, while a student's own generations (which may well hold a malformed call)
must still build a ``Candidate`` so a teacher can reject them. A violation comes back as
``(field path, what was expected)``, the path in the canonical record
(``messages[3].tool_calls[0].function.arguments``), and the record is set aside.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from ..types import Candidate, Message

_EXAMPLE = "e.g. '{\"path\": \"a.py\"}'"


def check_openai(c: Candidate) -> tuple[str, str] | None:
    """The first violation of the rules above in ``c``, as (field path, what was expected); or None."""
    announced: set[str] = set()
    for i, m in enumerate(c.messages):
        if m.role == "assistant":
            calls = m.tool_calls or []
            if not calls and not _has_content(m):
                got = "content null" if m.content is None else f"content {_short(m.content)}"
                return (f"messages[{i}]", "expected an assistant message to have content or tool calls; "
                        f"got {got} and no tool_calls")
            for j, tc in enumerate(calls):
                problem = arguments_problem(tc.function.arguments)
                if problem is not None:
                    return f"messages[{i}].tool_calls[{j}].function.arguments", problem
                if tc.id:
                    announced.add(tc.id)
        elif m.role == "tool":
            where = f"messages[{i}].tool_call_id"
            if not m.tool_call_id:
                return where, ("expected the id of the assistant tool call this tool message answers; "
                               "it has none")
            if m.tool_call_id not in announced:
                said = (f"the calls before it announce {', '.join(map(repr, sorted(announced)[:5]))}"
                        + (" ..." if len(announced) > 5 else "")) if announced else "no tool call comes before it"
                return where, (f"expected the id of a tool call an earlier assistant message made; "
                               f"{m.tool_call_id!r} was not announced ({said})")
    return None


def arguments_problem(args: Any) -> str | None:
    """What is wrong with a tool call's ``arguments`` (None: a JSON object string, or a mapping)."""
    if isinstance(args, dict):
        return None
    if not isinstance(args, str):  # pydantic lets only str | dict through; kept for direct callers
        return f"expected a JSON object string ({_EXAMPLE}) or an object; got {type(args).__name__}"
    if not args.strip():
        return f"expected a JSON object string ({_EXAMPLE}; '{{}}' for no arguments) or an object; got an empty string"
    try:
        value = orjson.loads(args)  # the common case, fast; the standard library decides the rest
    except orjson.JSONDecodeError:
        try:
            value = json.loads(args)
        except ValueError:
            return (f"expected a JSON object string ({_EXAMPLE}) or an object; got text that is not JSON: "
                    f"{_short(args)}")
    if isinstance(value, dict):
        return None
    kind = {list: "an array", str: "a JSON string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")
    hint = " (the arguments are encoded twice; --input-format openai-ft decodes them once)" if (
        isinstance(value, str) and value.lstrip().startswith("{")) else ""
    return f"expected a JSON object string ({_EXAMPLE}) or an object; got {kind}: {_short(args)}{hint}"


def _has_content(m: Message) -> bool:
    """Text that is not blank, any non-text part, a refusal, or a legacy ``function_call``."""
    extra = m.model_extra or {}
    if extra.get("refusal") or extra.get("function_call"):
        return True
    if isinstance(m.content, str):
        return bool(m.content.strip())
    if isinstance(m.content, list):
        return any(p.get("type") != "text" or str(p.get("text") or "").strip() for p in m.content)
    return False


def _short(value: Any, n: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return repr(text if len(text) <= n else text[:n] + "...")
