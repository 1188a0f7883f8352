"""Trajectories as text: the one place that reads message content, writes a trajectory out, and
looks at chat templates.

* :func:`content_text`: a message's ``content`` (a string, a list of OpenAI content parts, or
  None) as text. Every reader of content goes through it (it is defined beside
  :class:`~tgrs_agents.types.Message`, whose ``text`` it is, and re-exported here).
* :func:`render` / :func:`pieces`: a trajectory (OpenAI-format messages, as dicts or
  :class:`~tgrs_agents.types.Message`) as text in a :class:`Style`. The presets are the layouts the
  project uses; each is pinned by a test, because the text feeds judge prompts, the r-IFD prompt,
  near-duplicate similarity, length filters and pool deduplication::

      [user] What is 2 + 3?               JUDGE: the judges' transcript (also the reward model's
      [assistant calls calculator] {...}  fallback for tokenizers without a chat template)
      [tool result] 5
      [assistant] Answer: 5

* :func:`template_messages`: the copy of stored messages a chat template wants (tool-call
  ``arguments`` as a mapping, not the stored JSON string); nothing is changed in place.
* :func:`has_generation_markers`: whether a chat template marks assistant text with
  ``{% generation %}`` (so ``return_assistant_tokens_mask=True`` works).

This module imports nothing heavy: the loopback stand-in server uses it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .types import content_text

__all__ = ["CALLS", "FLAT", "JUDGE", "RIFD", "SPOKEN", "Style", "content_text", "final_answer_text",
           "has_generation_markers", "parse_arguments", "pieces", "render", "template_messages"]

_GENERATION = re.compile(r"\{%-?\s*generation\s*-?%\}")


def parse_arguments(args: str | Mapping[str, Any]) -> dict[str, Any]:
    """A stored tool call's ``arguments`` (a JSON string) as a mapping; text that is not an object becomes
    ``{"input": ...}`` so a template always gets a mapping. A mapping (the SFT rows' form) is copied."""
    if isinstance(args, Mapping):
        return dict(args)
    try:
        parsed = json.loads(args) if args.strip() else {}
    except ValueError:
        parsed = {"input": args}
    return parsed if isinstance(parsed, dict) else {"input": parsed}


def template_messages(messages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``messages`` for a chat template: None fields dropped, tool-call arguments parsed."""
    out = []
    for m in messages:
        m = {k: v for k, v in m.items() if v is not None}
        if m.get("tool_calls"):
            calls = []
            for tc in m["tool_calls"]:
                fn = dict(tc.get("function", {}))
                if isinstance(fn.get("arguments"), str):
                    fn["arguments"] = parse_arguments(fn["arguments"])
                calls.append({**tc, "function": fn})
            m["tool_calls"] = calls
            m.setdefault("content", "")
        out.append(m)
    return out


def has_generation_markers(template: str | Mapping[str, str] | None) -> bool:
    """True iff the chat template has ``{% generation %}`` (trim variants too; of a named set, ``default``)."""
    if isinstance(template, Mapping):
        template = template.get("default")
    return bool(template) and _GENERATION.search(str(template)) is not None


# ----------------------------------------------------------------------------------- rendering

@dataclass(frozen=True, slots=True)
class Style:
    """How :func:`pieces` writes each message. A format that is None leaves that piece out.

    Placeholders: ``{role}``, ``{text}`` (the content), ``{name}`` (a tool result's name after a
    space, or nothing), ``{fn}`` and ``{args}`` (a tool call's function and arguments).
    """

    text: str | None = "[{role}] {text}"  # a message's text (not a tool result)
    result: str | None = "[tool result{name}] {text}"  # a tool message's text
    call: str | None = "[{role} calls {fn}] {args}"  # one tool call
    args: Literal["json", "sorted", "values"] = "json"  # strings as stored, else json.dumps (sorted
    # keys); "values": the parsed arguments' values joined by spaces
    empty: frozenset[str] = frozenset({"text", "result"})  # kinds written even when their text is
    # empty; a message's empty text beside its tool calls is never written
    sep: str = "\n"  # between pieces in :func:`render`


JUDGE = Style()
"""The API judges' ``{trajectory}`` (and the reward model's fallback without a chat template)."""
RIFD = Style(text="{text}", result="-> {text}", call="{fn}({args})", args="values", empty=frozenset({"result"}))
"""The r-IFD prompt's view of a response: texts, ``name(values)`` per call, ``-> result``."""
FLAT = Style(text="{text}", result="{text}", call="{fn}({args})", args="sorted", empty=frozenset(), sep=" ")
"""Everything on one line: near-duplicate similarity (which then normalises case and spaces)."""
SPOKEN = Style(text="{text}", result=None, call="{fn} {args}", args="json", empty=frozenset())
"""What the assistant said (use with ``roles={"assistant"}``): the pieces whose length is counted."""
CALLS = Style(text=None, result=None, call="{fn}:{args}", args="sorted", empty=frozenset(), sep="|")
"""The tool-call sequence alone: pool deduplication."""


def _as_dict(m: Any) -> Mapping[str, Any]:
    """A stored message as it is, or a :class:`~tgrs_agents.types.Message` as the dict it stores."""
    return m if isinstance(m, Mapping) else m.model_dump(mode="json", exclude_none=True)


def _args(args: Any, how: str) -> str:
    if how == "values":
        if isinstance(args, str):
            args = parse_arguments(args)
        return " ".join(str(v) for v in args.values()) if isinstance(args, dict) else str(args or "")
    return args if isinstance(args, str) else json.dumps(args, sort_keys=how == "sorted")


def pieces(messages: Iterable[Any], style: Style = JUDGE, *, roles: Collection[str] | None = None,
           from_assistant: bool = False) -> list[str]:
    """The pieces of ``messages`` in ``style``, in order: per message its text (or tool result), then its calls.

    ``roles``: only messages of these roles. ``from_assistant``: start at the first assistant message
    (the response, without the instruction before it).
    """
    out: list[str] = []
    started = not from_assistant
    for raw in messages:
        m = _as_dict(raw)
        role = str(m.get("role", ""))
        started = started or role == "assistant"
        if not started or (roles is not None and role not in roles):
            continue
        calls = m.get("tool_calls") or []
        text = content_text(m.get("content"))
        if role == "tool":
            if style.result is not None and (text or "result" in style.empty):
                name = m.get("name")
                out.append(style.result.format(name=f" {name}" if name else "", text=text, role=role))
        elif style.text is not None and (text or ("text" in style.empty and not calls)):
            out.append(style.text.format(role=role, text=text))
        if style.call is not None:
            for tc in calls:
                fn = tc.get("function") or {}
                out.append(style.call.format(role=role, fn=fn.get("name") or "",
                                             args=_args(fn.get("arguments"), style.args)))
    return out


def render(messages: Iterable[Any], style: Style = JUDGE, *, roles: Collection[str] | None = None,
           from_assistant: bool = False) -> str:
    """:func:`pieces` joined by the style's separator."""
    return style.sep.join(pieces(messages, style, roles=roles, from_assistant=from_assistant))


def final_answer_text(messages: Iterable[Any]) -> str:
    """The text of the last assistant message without tool calls, stripped (``""`` if there is none)."""
    final = ""
    for raw in messages:
        m = _as_dict(raw)
        if m.get("role") == "assistant" and not m.get("tool_calls"):
            final = content_text(m.get("content")).strip()
    return final
