"""``kind = "openai"``: a judge through the official ``openai`` SDK (``AsyncOpenAI``).

Works with any OpenAI-compatible ``base_url`` (vLLM serve, SGLang, Ollama, OpenRouter, Together).
Structured output: ``response_format`` with a strict JSON schema; ``seed`` is sent (default 0), as
OpenAI and most compatible servers take one. The SDK's own retries are off (``max_retries=0``); one
attempt per ``call``, the paid-call layer does the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
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

    async def ask(self, prompt: str, schema: dict[str, Any], name: str, *,
                  max_tokens: int | None = None) -> tuple[Any, Usage, Mapping[str, str]]:
        c = self.config
        seed = {} if c.seed is None else {"seed": c.seed}
        resp, headers = await self._send(
            self._client.chat.completions.with_raw_response.create,
            model=c.model,
            messages=[{"role": "user", "content": prompt}],
            temperature=c.temperature,
            max_tokens=max_tokens or c.max_tokens,
            response_format={"type": "json_schema", "json_schema": {
                "name": name, "strict": True, "schema": schema}},
            **seed,
        )
        u = resp.usage
        usage = Usage(requests=1, input_tokens=getattr(u, "prompt_tokens", 0) or 0,
                      output_tokens=getattr(u, "completion_tokens", 0) or 0)
        content = resp.choices[0].message.content if resp.choices else None
        return (content if content is not None else "null"), usage, headers
