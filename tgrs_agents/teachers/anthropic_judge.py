"""``kind = "anthropic"``: a judge through the official ``anthropic`` SDK (``AsyncAnthropic``).

Structured output by a forced tool call: the judge must call ``record_verdict`` whose input schema
is the verdict schema. The SDK's own retries are off (``max_retries=0``).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from ..paid.call import Paid
from ..types import Candidate, Usage, Verdict
from .base import BuildContext
from .llm_judge import VERDICT_SCHEMA, ApiJudge, JudgeConfig

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

    async def call(self, candidate: Candidate) -> Paid[Verdict]:
        c = self.config
        resp, headers = await self._send(
            self._client.messages.with_raw_response.create,
            model=c.model,
            max_tokens=c.max_tokens,
            messages=[{"role": "user", "content": self.prompt_for(candidate)}],
            tools=[{"name": TOOL_NAME, "description": "Record your verdict on the trajectory.",
                    "input_schema": VERDICT_SCHEMA}],
            tool_choice={"type": "tool", "name": TOOL_NAME},
            # anthropic>=1.0 dropped the ``temperature`` keyword; the API still takes it, and
            # extra_body sends the same wire payload on every SDK version
            extra_body={"temperature": c.temperature},
        )
        u = resp.usage
        usage = Usage(requests=1, input_tokens=getattr(u, "input_tokens", 0) or 0,
                      output_tokens=getattr(u, "output_tokens", 0) or 0)
        block = next((b for b in resp.content if getattr(b, "type", None) == "tool_use"), None)
        return self._paid(getattr(block, "input", None), usage, headers, "tool input")
