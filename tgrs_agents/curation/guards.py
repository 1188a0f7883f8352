"""Bias guards: no judge grades its own model family unless the panel says so.

Why: LLM judges prefer text that reads like their own (self-preference bias: Panickssery et al.,
2024; Zheng et al., 2023). A Qwen judge grading a Qwen student's trajectories, or GPT grading
GPT's, lets that preference decide what the student learns from, and the loop then amplifies it.

The panel knows the student's (or the generator's) model from ``student_model`` in the panel file,
``--student-model`` on ``tgrs curate``, or the loop. An LLM judge (``kind = "openai"`` or
``"anthropic"``) whose model belongs to the same *family* is refused at load time, with a message
that names both, unless its table says ``allow_self_judging = true``. A family is the lineage a
model name reveals (the provider prefix and path are ignored): gpt/o-series/chatgpt, claude, llama,
qwen, mistral/mixtral, gemma, gemini, deepseek, phi, command, grok, yi, olmo, smollm, falcon,
granite. A name no pattern recognises (a local checkpoint path, say) has no family: no refusal,
since a wrong refusal would be worse than a missed one, which ``allow_self_judging`` cannot fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import ConfigError

_FAMILIES: tuple[tuple[str, str], ...] = (
    ("gpt", r"(^|[^a-z])(gpt|chatgpt|o[134](-mini|-pro|-preview)?|davinci|text-embedding)([^a-z]|$)"),
    ("claude", r"claude"),
    ("llama", r"llama"),
    ("qwen", r"qwen|qwq"),
    ("mistral", r"mistral|mixtral|ministral|codestral|magistral|devstral"),
    ("gemma", r"gemma"),
    ("gemini", r"gemini"),
    ("deepseek", r"deepseek"),
    ("phi", r"(^|[^a-z])phi-?\d"),
    ("command", r"command-?r|c4ai|aya"),
    ("grok", r"grok"),
    ("yi", r"(^|[^a-z])yi-"),
    ("olmo", r"olmo|tulu"),
    ("smollm", r"smollm"),
    ("falcon", r"falcon"),
    ("granite", r"granite"),
)
JUDGE_KINDS = frozenset({"openai", "anthropic"})


def model_family(model: str | None) -> str | None:
    """The family of a model name (``"openai/gpt-4o-mini"`` -> ``"gpt"``), or None if unknown."""
    if not model:
        return None
    name = model.strip().lower().rstrip("/").rsplit("/", 1)[-1]
    for family, pattern in _FAMILIES:
        if re.search(pattern, name):
            return family
    return None


def students(student_model: str | Iterable[str] | None) -> list[str]:
    if student_model is None:
        return []
    return [student_model] if isinstance(student_model, str) else [s for s in student_model if s]


def self_judging(teachers: Iterable[Any], student_model: str | Iterable[str] | None,
                 allowed: Mapping[str, bool]) -> list[tuple[str, str, str, str]]:
    """(teacher, its model, the student model, the family) for each refused judge."""
    out = []
    for t in teachers:
        if getattr(t, "kind", None) not in JUDGE_KINDS or allowed.get(t.name, False):
            continue
        fam = model_family(getattr(t, "model", None))
        for s in students(student_model):
            if fam is not None and fam == model_family(s):
                out.append((t.name, t.model, s, fam))
                break
    return out


def check_self_judging(teachers: Iterable[Any], student_model: str | Iterable[str] | None,
                       allowed: Mapping[str, bool], *, source: str = "<panel>",
                       where: Mapping[str, str] | None = None) -> None:
    """Raise a ConfigError naming the first judge of the student's family (see the module)."""
    refused = self_judging(teachers, student_model, allowed)
    if not refused:
        return
    name, model, student, fam = refused[0]
    raise ConfigError(
        f"judge {name!r} ({model}) is of the same model family ({fam}) as the student/generator "
        f"{student!r}: a model grading its own family's outputs favours them. Use a judge of another "
        "family, or set allow_self_judging = true in its table to accept the bias",
        file=source, field=f"{(where or {}).get(name, 'teacher')}.model")
