"""What every generation backend shares: sampling parameters, a turn, the protocol, chat-template text.

A backend answers one question: given conversations (OpenAI-format messages) and the tools each
one may call, what is the next assistant turn of each? :func:`~tgrs_agents.generate.rollouts.rollout`
drives the agent loop on top of that. Backends that render prompts themselves (transformers, vLLM)
share :func:`render_prompt`, :func:`fit_prompt`, :func:`decode_turn` and :func:`parse_tool_calls`,
so a model's tool calls are read the same way whichever engine sampled them.

Tool-call formats in generated text:

* ``compact``: the tiny student's ``<|call|>calculator 59-7+13`` (one call per ``<|call|>``).
* ``hermes``: ``<tool_call>{"name": "calculator", "arguments": {"expression": "59-7+13"}}</tool_call>``
  (Qwen2.5, Hermes and many others).

Nothing here imports torch or transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from ..chat import template_messages
from ..student.tiny import parse_compact_call
from .toolcall_formats import parse_hermes

ToolFormat = Literal["compact", "hermes"]

COMPACT_CALL = "<|call|>"


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy; ``seed`` makes a fresh backend repeatable.

    ``n`` is the number of samples per task :func:`rollout` draws when it is not given its own ``n``;
    :meth:`ChatBackend.complete` always returns one turn per conversation it is given.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True, slots=True)
class Turn:
    """One generated assistant turn.

    ``text`` is the message content (tool-call markup removed); ``tool_calls`` are OpenAI-format
    calls (``arguments`` a JSON string; ``id`` may be missing, the rollout assigns one) or None.
    ``finish_reason``: ``"stop"``, ``"length"`` or ``"tool_calls"``, with ``"+prompt_truncated"``
    appended when the prompt was cut from the left to fit the model, or ``"error: ..."`` when a
    remote backend gave up on this conversation.
    """

    text: str
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str = "stop"
    n_tokens: int = 0


@runtime_checkable
class ChatBackend(Protocol):
    """One next assistant turn per conversation, all of them as one batch.

    ``max_new_tokens`` (optional, one per conversation) lowers ``params.max_new_tokens`` for single
    conversations: the rollout uses it to hold each trajectory to its own token budget.
    """

    async def complete(
        self,
        conversations: list[list[dict[str, Any]]],
        tools: list[list[dict[str, Any]] | None],
        params: SamplingParams,
        *,
        max_new_tokens: Sequence[int] | None = None,
    ) -> list[Turn]: ...

    async def aclose(self) -> None: ...


def token_caps(n: int, params: SamplingParams, max_new_tokens: Sequence[int] | None,
               tools: Sequence[Any] | None = None) -> list[int]:
    """Per-conversation new-token caps: ``params.max_new_tokens`` lowered by the optional caps.

    With ``tools``, also checks that there is one tool list per conversation.
    """
    if tools is not None and len(tools) != n:
        raise ValueError(f"{len(tools)} tool lists for {n} conversations")
    if max_new_tokens is None:
        return [params.max_new_tokens] * n
    if len(max_new_tokens) != n:
        raise ValueError(f"max_new_tokens has {len(max_new_tokens)} entries for {n} conversations")
    return [max(0, min(params.max_new_tokens, int(c))) for c in max_new_tokens]


# ----- chat-template text ----------------------------------------------------------------------


def detect_tool_format(chat_template: Any) -> ToolFormat:
    """``compact`` for templates that speak ``<|call|>``; ``hermes`` otherwise (the common case)."""
    text = chat_template if isinstance(chat_template, str) else str(chat_template or "")
    if "<tool_call>" in text:
        return "hermes"
    if COMPACT_CALL in text:
        return "compact"
    return "hermes"


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]],
                  tools: list[dict[str, Any]] | None) -> str:
    """The prompt text for the next assistant turn, from the tokenizer's own chat template."""
    return str(tokenizer.apply_chat_template(
        template_messages(messages), tools=tools or None, tokenize=False, add_generation_prompt=True))


def fit_prompt(ids: list[int], cap: int, max_positions: int | None) -> tuple[list[int], int, bool]:
    """Make ``ids`` plus ``cap`` new tokens fit ``max_positions``: (ids, cap, truncated).

    The prompt is cut from the left to leave room for ``cap`` new tokens, but never below half the
    positions; past that, ``cap`` shrinks instead.
    """
    if not max_positions:
        return ids, cap, False
    keep = max(max_positions - cap, max_positions // 2)
    truncated = len(ids) > keep
    if truncated:
        ids = ids[-keep:]
    return ids, max(0, min(cap, max_positions - len(ids))), truncated


def stop_token_ids(tokenizer: Any, model_eos: int | list[int] | None = None) -> list[int]:
    """The ids that end a turn: the tokenizer's eos, the model's eos and ``<|end|>``/``<|im_end|>``."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    ids.extend([model_eos] if isinstance(model_eos, int) else list(model_eos or []))
    vocab = tokenizer.get_vocab()
    ids.extend(vocab[t] for t in ("<|end|>", "<|im_end|>", "<|eot_id|>") if t in vocab)
    return sorted(set(ids))


def decode_turn(tokenizer: Any, new_ids: Sequence[int], stop_ids: Sequence[int], cap: int,
                tools: list[dict[str, Any]] | None, tool_format: ToolFormat,
                truncated: bool = False) -> Turn:
    """Generated ids -> a :class:`Turn`: cut at the first stop id (counted) or at ``cap``, parse calls."""
    ids = list(new_ids[:cap])
    stops = set(stop_ids)
    end = next((i for i, t in enumerate(ids) if t in stops), None)
    reason = "length" if end is None else "stop"
    body = ids if end is None else ids[:end]
    n_tokens = len(ids) if end is None else end + 1
    text = tokenizer.decode(body, skip_special_tokens=False)
    content, calls = parse_tool_calls(text, tools, tool_format)
    if calls and reason == "stop":
        reason = "tool_calls"
    return Turn(content, calls, reason + ("+prompt_truncated" if truncated else ""), n_tokens)


def parse_tool_calls(text: str, tools: list[dict[str, Any]] | None,
                     tool_format: ToolFormat) -> tuple[str, list[dict[str, Any]] | None]:
    """Generated text -> (content, OpenAI-format tool calls or None)."""
    if tool_format == "compact":
        if COMPACT_CALL not in text:
            return text, None
        head, *bodies = text.split(COMPACT_CALL)
        calls = [c for c in (parse_compact_call(b, tools) for b in bodies) if c is not None]
        return head.strip(), calls or None
    if tool_format == "hermes":
        return _parse_hermes(text)
    raise ValueError(f"unknown tool format {tool_format!r}: use 'compact' or 'hermes'")


def _parse_hermes(text: str) -> tuple[str, list[dict[str, Any]] | None]:
    """Hermes ``<tool_call>`` blocks, read the forgiving way small models need
    (:func:`~tgrs_agents.generate.toolcall_formats.parse_hermes`); blocks that do not parse stay in the
    content as the model wrote them."""
    turn = parse_hermes(text)
    return (turn.content, turn.tool_calls) if turn.tool_calls else (text, None)
