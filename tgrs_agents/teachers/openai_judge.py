"""``kind = "openai"``: a judge through the official ``openai`` SDK (``AsyncOpenAI``).

Works with any OpenAI-compatible ``base_url`` (vLLM serve, SGLang, Ollama, OpenRouter, Together).
Structured output: ``response_format`` with a strict JSON schema. The SDK's own retries are off
(``max_retries=0``); one attempt per call, the wrappers do the rest.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any, ClassVar, Literal

from ..types import Candidate, Usage, Verdict
from .base import BuildContext
from .llm_judge import VERDICT_SCHEMA, ApiJudge, JudgeConfig, classify_sdk_error


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

        self._sdk = openai
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                api_key=os.environ[config.api_key_env], base_url=self.base_url,
                max_retries=0, timeout=config.timeout_s,
            )

    async def judge(self, candidate: Candidate) -> Verdict:
        c = self.config
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=c.model,
                messages=[{"role": "user", "content": self.prompt_for(candidate)}],
                temperature=c.temperature,
                max_tokens=c.max_tokens,
                response_format={"type": "json_schema", "json_schema": {
                    "name": "verdict", "strict": True, "schema": VERDICT_SCHEMA}},
            )
            self._headers(raw.headers)
            resp = raw.parse()
            if inspect.isawaitable(resp):  # the raw response's parse() is async in some SDK versions
                resp = await resp
        except Exception as e:
            if isinstance(e, self._sdk.APIStatusError):
                self._headers(e.response.headers)  # a 429 still says what the limits are
            err = classify_sdk_error(e, self._sdk, self.name)
            if err is None:
                raise
            raise err from None
        u = resp.usage
        usage = Usage(requests=1, input_tokens=getattr(u, "prompt_tokens", 0) or 0,
                      output_tokens=getattr(u, "completion_tokens", 0) or 0)
        content = resp.choices[0].message.content if resp.choices else None
        out, why = self.parse_or_none(content if content is not None else "null")
        if out is None:
            raise self.malformed(f"{why}; content={json.dumps(content)[:120]}", usage)
        return self.to_verdict(out, usage)

    async def aclose(self) -> None:
        if self._client is not None and hasattr(self._client, "close"):
            await self._client.close()
