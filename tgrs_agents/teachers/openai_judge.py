"""``kind = "openai"``: a judge through the official ``openai`` SDK (``AsyncOpenAI``).

Works with any OpenAI-compatible ``base_url`` (vLLM serve, SGLang, Ollama, OpenRouter, Together).
Structured output: ``response_format`` with a strict JSON schema; ``seed`` is sent (default 0), as
OpenAI and most compatible servers take one. The SDK's own retries are off (``max_retries=0``); one
attempt per ``call``, the paid-call layer does the rest.

The request goes through the SDK's own HTTP path (``client.post``: auth, timeouts, its error classes,
the raw response's headers) with a body we build in the wire format, read back as plain JSON. The
typed ``chat.completions.create`` would walk the body through the SDK's request transform and
build a pydantic ``ChatCompletion`` for each answer: about 1 ms of CPU a call that a judge has no
use for, and a third of what a client-bound run spends per call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from ..types import Usage
from .base import BuildContext
from .llm_judge import ApiJudge, JudgeConfig


class OpenAIJudgeConfig(JudgeConfig):
    kind: Literal["openai"] = "openai"
    api_key_env: str = "OPENAI_API_KEY"


class OpenAIJudge(ApiJudge):
    Config = OpenAIJudgeConfig
    DEFAULT_BASE_URL: ClassVar[str] = "https://api.openai.com/v1"
    config: OpenAIJudgeConfig

    def __init__(self, config: OpenAIJudgeConfig, ctx: BuildContext | None = None, *,
                 client: Any = None) -> None:
        super().__init__(config, ctx, client=client)
        import openai

        self._connect(openai, "AsyncOpenAI")

    WHAT: ClassVar[str] = "content"

    def body(self, prompt: str, schema: dict[str, Any], name: str, *,
             max_tokens: int | None = None) -> dict[str, Any]:
        c = self.config
        body: dict[str, Any] = {
            "model": c.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": c.temperature,
            "max_tokens": max_tokens or c.max_tokens,
            "response_format": {"type": "json_schema", "json_schema": {
                "name": name, "strict": True, "schema": schema}},
        }
        if c.seed is not None:
            body["seed"] = c.seed
        return body

    async def ask(self, prompt: str, schema: dict[str, Any], name: str, *,
                  max_tokens: int | None = None) -> tuple[Any, Usage, Mapping[str, str]]:
        body = self.body(prompt, schema, name, max_tokens=max_tokens)
        data, headers = await self._send(self._post_chat, body=body)
        if hasattr(data, "model_dump"):  # the typed fallback
            data = data.model_dump()
        if not isinstance(data, dict):
            raise self.malformed(f"the response body is not a JSON object: {str(data)[:120]!r}",
                                 Usage(requests=1), headers)
        u = data.get("usage") or {}
        usage = Usage(requests=1, input_tokens=int(u.get("prompt_tokens") or 0),
                      output_tokens=int(u.get("completion_tokens") or 0))
        choices = data.get("choices") or [{}]
        content = ((choices[0] or {}).get("message") or {}).get("content")
        return (content if content is not None else "null"), usage, headers

    @functools.cached_property
    def _post_chat(self) -> Callable[..., Any]:
        """``POST /chat/completions`` through the SDK, answered by its raw response (headers, and
        ``parse()`` giving the JSON as sent); the typed ``create`` where the SDK lacks that path."""
        try:
            from openai._constants import RAW_RESPONSE_HEADER
        except ImportError:  # pragma: no cover - an SDK that moved it: the typed path, slower
            create = self._client.chat.completions.with_raw_response.create
            return lambda body: create(**body)  # noqa: E731
        return functools.partial(self._client.post, "/chat/completions", cast_to=object,
                                 options={"headers": {RAW_RESPONSE_HEADER: "true"}})
