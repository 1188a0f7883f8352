"""``kind = "anthropic"``: a judge through the official ``anthropic`` SDK (``AsyncAnthropic``).

Structured output by a forced tool call: the judge must call ``record_verdict`` whose input schema
is the verdict schema (``record_scores`` with the group schema in group mode). The API has no seed
parameter: ``seed`` only keys the ledger. The SDK's own retries are off (``max_retries=0``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from ..types import Usage
from .base import BuildContext
from .llm_judge import ApiJudge, JudgeConfig

TOOL_NAME = "record_verdict"


class AnthropicJudgeConfig(JudgeConfig):
    kind: Literal["anthropic"] = "anthropic"
    api_key_env: str = "ANTHROPIC_API_KEY"


class AnthropicJudge(ApiJudge):
    Config = AnthropicJudgeConfig
    DEFAULT_BASE_URL: ClassVar[str] = "https://api.anthropic.com"
    config: AnthropicJudgeConfig

    def __init__(self, config: AnthropicJudgeConfig, ctx: BuildContext | None = None, *,
                 client: Any = None) -> None:
        super().__init__(config, ctx, client=client)
        import anthropic

        self._connect(anthropic, "AsyncAnthropic")

    WHAT: ClassVar[str] = "tool input"

    def body(self, prompt: str, schema: dict[str, Any], name: str, *,
             max_tokens: int | None = None) -> dict[str, Any]:
        c = self.config
        tool = TOOL_NAME if name == "verdict" else f"record_{name}"
        return {
            "model": c.model,
            "max_tokens": max_tokens or c.max_tokens,
            "messages": [{"role": "user", "content": prompt}],
            "tools": [{"name": tool, "description": f"Record your {name} on the trajectory.",
                       "input_schema": schema}],
            "tool_choice": {"type": "tool", "name": tool},
            "temperature": c.temperature,  # the API has no seed
        }

    async def ask(self, prompt: str, schema: dict[str, Any], name: str, *,
                  max_tokens: int | None = None) -> tuple[Any, Usage, Mapping[str, str]]:
        body = self.body(prompt, schema, name, max_tokens=max_tokens)
        # anthropic>=1.0 dropped the ``temperature`` keyword; the API still takes it, and
        # extra_body sends the same wire payload on every SDK version
        extra = {"temperature": body.pop("temperature")}
        resp, headers = await self._send(self._client.messages.with_raw_response.create, **body,
                                         extra_body=extra)
        u = resp.usage
        usage = Usage(requests=1, input_tokens=getattr(u, "input_tokens", 0) or 0,
                      output_tokens=getattr(u, "output_tokens", 0) or 0)
        block = next((b for b in resp.content if getattr(b, "type", None) == "tool_use"), None)
        return getattr(block, "input", None), usage, headers
