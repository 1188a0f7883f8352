"""A training-ready ChatML template with Hermes tool calls, for models whose own template cannot do either.

SmolLM2-135M-Instruct ships the plainest ChatML template: it writes ``role`` and ``content`` and
nothing else. Three things the loop needs are then impossible: tool schemas and tool calls vanish
from the prompt (so a tool-using rollout cannot be shown its tools or its own earlier calls), the SFT
step cannot mask the loss to assistant tokens (no ``{% generation %}`` markers, and TRL has no
training copy of this template), and IFD cannot score exactly the assistant tokens.

:func:`upgrade_chat_template` gives such a tokenizer :data:`CHATML_HERMES` instead: the same text for
every plain conversation (checked on probe conversations before it is adopted, or nothing changes),
plus what was missing, in the layout Hermes and Qwen2.5 made common and SmolLM2's function-calling
data follow:

* tools: a ``# Tools`` section with one JSON schema per line inside ``<tools></tools>``, appended to
  the system message (the model's default system prompt when there is none);
* an assistant tool call: ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` after the
  turn's text (:mod:`tgrs_agents.generate.toolcall_formats` reads it back);
* tool results: ``<tool_response>`` blocks, consecutive ones sharing one ``user`` turn;
* ``{% generation %}`` around each assistant turn's text, calls and ``<|im_end|>``.

Because the rollout (``render_prompt``), the SFT step and ``student_compat`` all render through the
tokenizer's template, they all see this one rendering; ``save_pretrained`` stores it with the
checkpoint, so later rounds keep it. Nothing here imports torch.
"""

from __future__ import annotations

import re
from typing import Any

from ..chat import has_generation_markers

_CHATML_HERMES = r"""{%- set default_system = __DEFAULT_SYSTEM__ -%}
{%- set has_system = messages and messages[0]['role'] == 'system' -%}
{%- if tools or has_system or default_system -%}
{{- '<|im_start|>system\n' + (messages[0]['content'] if has_system else default_system) -}}
{%- if tools -%}
{{- '\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' -}}
{{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' -}}
{%- for tool in tools %}{{- '\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments ' -}}
{{- 'within <tool_call></tool_call> XML tags:\n' -}}
{{- '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' -}}
{%- endif -%}
{{- '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if loop.first and has_system -%}
{%- elif message['role'] == 'assistant' -%}
{{- '<|im_start|>assistant\n' -}}
{%- generation -%}
{{- message['content'] or '' -}}
{%- for call in (message['tool_calls'] or []) -%}
{%- set fn = call['function'] if call['function'] is defined else call -%}
{%- if message['content'] or not loop.first %}{{- '\n' -}}{%- endif -%}
{%- set args = fn['arguments'] if fn['arguments'] is string else (fn['arguments'] | tojson) -%}
{{- '<tool_call>\n{"name": ' + (fn['name'] | tojson) + ', "arguments": ' + args + '}\n</tool_call>' -}}
{%- endfor -%}
{{- '<|im_end|>' -}}
{%- endgeneration -%}
{{- '\n' -}}
{%- elif message['role'] == 'tool' -%}
{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}{{- '<|im_start|>user' -}}{%- endif -%}
{{- '\n<tool_response>\n' + message['content'] + '\n</tool_response>' -}}
{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}{{- '<|im_end|>\n' -}}{%- endif -%}
{%- else -%}
{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"""

_DEFAULT_SYSTEM = re.compile(r"\A<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user\n", re.S)
_PROBES: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}],
    [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
     {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "Red."}],
]


def chatml_hermes(default_system: str) -> str:
    """:data:`CHATML_HERMES` with the model's default system prompt ('' for none)."""
    import json

    return _CHATML_HERMES.replace("__DEFAULT_SYSTEM__", json.dumps(default_system))


CHATML_HERMES = chatml_hermes("")


def _render(tokenizer: Any, template: str | None, messages: list[dict[str, str]], gen: bool) -> str:
    return str(tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=gen))


def needs_upgrade(template: Any) -> bool:
    """A ChatML template that renders neither tools nor assistant-token markers."""
    text = template if isinstance(template, str) else ""
    return "<|im_start|>" in text and "tool" not in text and not has_generation_markers(text)


def upgrade_chat_template(tokenizer: Any) -> bool:
    """Give a plain ChatML tokenizer :data:`CHATML_HERMES` (with its default system prompt) when both render
    every probe conversation identically; True if the template was replaced."""
    if not needs_upgrade(getattr(tokenizer, "chat_template", None)):
        return False
    try:
        head = _DEFAULT_SYSTEM.match(_render(tokenizer, None, _PROBES[0], False))
        candidate = chatml_hermes(head.group(1) if head else "")
        same = all(_render(tokenizer, None, p, g) == _render(tokenizer, candidate, p, g)
                   for p in _PROBES for g in (False, True))
    except Exception:  # a template that cannot render the probes is left as it is
        return False
    if same:
        tokenizer.chat_template = candidate
    return same
