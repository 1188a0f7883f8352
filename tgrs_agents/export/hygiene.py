"""Agent-trace hygiene: what an SFT export does to each trajectory before a trainer sees it.

Each rule is an option of :class:`Hygiene`, on by default where it only removes what no trainer
should learn from, and every change is counted (the export prints the counts and writes them to
``PATH.export.json``):

* ``drop_errored``: a trace whose generation failed (see :func:`~.source.errored`) is dropped.
* ``trim_trailing_user``: user / system turns after the last assistant turn are cut (nothing in
  them is trained on, and chat fine-tuning wants the conversation to end on the assistant).
* ``tool_ids``: every assistant tool call gets exactly one tool result carrying its id, and every
  result answers a call. Missing ids are minted from the trace's content (stable: the same trace
  gets the same ids on every export); a result without an id answers the first open call of the
  turn before it (of the same name when it names one); an id used twice in a trace is minted anew
  for its second call. Then ``"repair"`` removes orphans (a call nobody answered, a result nobody
  asked for; an assistant turn left empty goes too), ``"drop"`` drops the trace, ``"off"`` leaves
  everything as it is.
* ``require_answer``: a trace must end on an assistant turn with text and no tool call.
* ``max_tokens``: longer traces are dropped. Tokens are counted with ``tokenizer`` (its chat
  template with the tools when it has one), else estimated as ``ceil(chars / 4)`` over the
  :data:`~tgrs_agents.chat.JUDGE` rendering of the messages plus the tools' JSON (about 4 characters
  a token for English text and code with BPE tokenizers; an estimate, not a count).
* ``redact``: secrets matching common key patterns (:data:`SECRET_PATTERNS`) are replaced by
  ``[REDACTED:<kind>]`` in every string of the messages and tools; how many, of which kind and at
  which field path is recorded, never the secret.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..chat import JUDGE, content_text, render, template_messages
from ..errors import ConfigError

SECRET_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("private_key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
                               re.S)),
    ("anthropic", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}")),
    ("openai", re.compile(r"\bsk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")),
    ("aws", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("github", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    ("bearer", re.compile(r"(?P<keep>\b(?i:bearer)\s+)[A-Za-z0-9._~+/-]{16,}=*")),
)
"""(kind, pattern), most specific first: an OpenAI key after ``Bearer`` is counted once, as openai.
A pattern's ``keep`` group (the word ``Bearer``) stays in the text."""

TokenCounter = Callable[[list[dict[str, Any]], list[dict[str, Any]] | None], int]


@dataclass(frozen=True)
class Hygiene:
    """The export's trace-hygiene options (see the module docstring for each rule)."""

    drop_errored: bool = True
    trim_trailing_user: bool = True
    tool_ids: Literal["repair", "drop", "off"] = "repair"
    require_answer: bool = True
    max_tokens: int | None = None
    tokenizer: str | None = None  # a local tokenizer dir or hub name; None: the chars/4 estimate
    redact: bool = True


class Dropped(Exception):
    """A trace a hygiene rule removes; ``rule`` names the rule."""

    def __init__(self, rule: str, detail: str = "") -> None:
        self.rule = rule
        super().__init__(detail or rule)


# ---------------------------------------------------------------------------------- redaction

def redact(obj: Any, path: str, sites: list[tuple[str, str]]) -> Any:
    """``obj`` with every secret in its strings replaced; appends ``(field path, kind)`` to ``sites``."""
    if isinstance(obj, str):
        for kind, pat in SECRET_PATTERNS:
            obj, n = pat.subn(_replacement(kind), obj)
            sites.extend([(path, kind)] * n)
        return obj
    if isinstance(obj, list):
        return [redact(v, f"{path}[{i}]", sites) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        return {k: redact(v, f"{path}.{k}" if path else str(k), sites) for k, v in obj.items()}
    return obj


def _replacement(kind: str) -> Callable[[re.Match[str]], str]:
    return lambda m: (m.groupdict().get("keep") or "") + f"[REDACTED:{kind}]"


# ------------------------------------------------------------------------------------ turns

def trim_trailing_user(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """``messages`` without the user / system turns after the last assistant turn, and how many went."""
    end = len(messages)
    while end and messages[end - 1].get("role") in ("user", "system", "developer"):
        end -= 1
    if not any(m.get("role") == "assistant" for m in messages[:end]):
        return messages, 0  # nothing to end on: require_answer decides
    return messages[:end], len(messages) - end


def has_answer(messages: list[dict[str, Any]]) -> bool:
    """The trace ends on an assistant turn with text and no tool call."""
    last = messages[-1] if messages else {}
    return (last.get("role") == "assistant" and not last.get("tool_calls")
            and bool(content_text(last.get("content")).strip()))


def _mint(trace_id: str, turn: int, index: int, call: dict[str, Any]) -> str:
    fn = call.get("function") or {}
    args = fn.get("arguments")
    key = f"{trace_id}\x00{turn}\x00{index}\x00{fn.get('name')}\x00" + (
        args if isinstance(args, str) else json.dumps(args, sort_keys=True))
    return "call_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def pair_tool_calls(trace_id: str, messages: list[dict[str, Any]], mode: str,
                    counts: Counter[str]) -> list[dict[str, Any]]:
    """Messages whose tool calls and results pair one to one by id (copies; the input is not changed).

    Raises :class:`Dropped` (``unpaired_tool_calls``) in ``"drop"`` mode when an orphan remains.
    """
    if mode == "off":
        return messages
    out: list[dict[str, Any]] = []
    used: set[str] = set()
    pending: list[tuple[str, dict[str, Any]]] = []  # (id the results use, the call) of the open turn
    orphan_calls: list[dict[str, Any]] = []
    orphan_results = 0
    for turn, m in enumerate(messages):
        role = m.get("role")
        if role == "tool":
            m = dict(m)
            tid = m.get("tool_call_id")
            if not tid:
                named = [p for p in pending if (p[1].get("function") or {}).get("name") == m.get("name")]
                match = (named or pending)[:1]
                if match:
                    counts["result_ids_filled"] += 1
            else:
                match = [p for p in pending if p[0] == tid][:1]
            if not match:
                orphan_results += 1
                continue
            pending.remove(match[0])
            m["tool_call_id"] = match[0][1]["id"]
            out.append(m)
            continue
        orphan_calls += [c for _, c in pending]
        pending = []
        if role == "assistant" and m.get("tool_calls"):
            m = dict(m)
            calls = []
            for i, tc in enumerate(m["tool_calls"]):
                tc = dict(tc)
                cited = tc.get("id") or ""
                if not cited or cited in used:
                    tc["id"] = _mint(trace_id, turn, i, tc)
                    counts["call_ids_minted"] += 1
                used.add(tc["id"])
                pending.append((cited or tc["id"], tc))
                calls.append(tc)
            m["tool_calls"] = calls
        out.append(m)
    orphan_calls += [c for _, c in pending]
    if (orphan_calls or orphan_results) and mode == "drop":
        raise Dropped("unpaired_tool_calls", f"{len(orphan_calls)} calls without a result, "
                      f"{orphan_results} results without a call")
    counts["orphan_calls_removed"] += len(orphan_calls)
    counts["orphan_results_removed"] += orphan_results
    if not orphan_calls:
        return out
    gone = {id(c) for c in orphan_calls}
    kept = []
    for m in out:
        if m.get("role") == "assistant" and m.get("tool_calls"):
            calls = [c for c in m["tool_calls"] if id(c) not in gone]
            if not calls:
                m = {k: v for k, v in m.items() if k != "tool_calls"}
                if not content_text(m.get("content")).strip():
                    continue  # the turn was only the unanswered calls
            else:
                m = {**m, "tool_calls": calls}
        kept.append(m)
    return kept


# ----------------------------------------------------------------------------------- tokens

def estimate_tokens(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
    """``ceil(chars / 4)`` of the JUDGE rendering plus the tools' JSON (see the module docstring)."""
    chars = len(render(messages, JUDGE)) + (len(json.dumps(tools)) if tools else 0)
    return math.ceil(chars / 4)


def tokenizer_counter(path: str) -> TokenCounter:
    """Counts with a real tokenizer: its chat template (with the tools) when it has one, else the text."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError("counting with a tokenizer needs `transformers`: pip install 'tgrs-agents[hf]'",
                          field="tokenizer") from None
    try:
        tok: Any = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a tokenizer from {path!r}: {e}", field="tokenizer") from None

    def count(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> int:
        if tok.chat_template:
            enc = tok.apply_chat_template(template_messages(messages), tools=tools or None,
                                          tokenize=True, return_dict=True)
            return len(enc["input_ids"])
        return len(tok(render(messages, JUDGE))["input_ids"])

    return count
