"""Sampling from any OpenAI-compatible chat endpoint: vLLM serve, SGLang, llama.cpp, or a hosted model.

One ``chat.completions.create`` per conversation, all concurrently, through the same machinery as
the API teachers: the endpoint's shared limiter (concurrency, request and token buckets,
Retry-After), the one retry policy (errors classified by
:func:`~tgrs_agents.paid.sdk_errors.classify_sdk_error`), and the run budget, checked before
every attempt and settled with the usage the server reported. The SDK's own retries are off.

A conversation the server keeps refusing (after retries) comes back as a turn whose
``finish_reason`` is ``"error: ..."``, so one bad prompt does not sink a batch; a missing or wrong
API key (``auth``) and an exhausted budget raise.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, TeacherError
from ..paid.cost import Price, default_price
from ..paid.limits import EndpointLimits, endpoint_key
from ..types import Usage
from .base import SamplingParams, Turn, token_caps

if TYPE_CHECKING:
    from ..paid.services import Services


class OpenAIChatBackend:
    """A :class:`~tgrs_agents.generate.base.ChatBackend` over the official ``openai`` SDK.

    ``api_key_env=None`` is for local servers that take no key. Prices are USD per million tokens;
    unset, the list price of a known model is used, and an unknown model needs them set (0 for a
    self-hosted one) so that the budget means something.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "https://api.openai.com/v1",
        api_key_env: str | None = "OPENAI_API_KEY",
        *,
        services: Services | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_concurrency: int = 64,
        timeout_s: float = 120.0,
        max_attempts: int = 5,
        price_input_per_mtok: float | None = None,
        price_output_per_mtok: float | None = None,
        client: Any = None,
    ) -> None:
        import openai

        from ..paid.retry import RetryPolicy
        from ..paid.services import Services

        self.model = model
        self.base_url = base_url
        self.name = f"generator:{model}"
        self.services = services or Services()
        known = default_price(model) or (None, None)
        pin = price_input_per_mtok if price_input_per_mtok is not None else known[0]
        pout = price_output_per_mtok if price_output_per_mtok is not None else known[1]
        if pin is None or pout is None:
            raise ConfigError(f"no price known for model {model!r}: set price_input_per_mtok and "
                              "price_output_per_mtok (0 for a self-hosted model)")
        self.price = Price(float(pin), float(pout))
        api_key = "EMPTY"
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key and client is None:
                raise ConfigError(f"environment variable {api_key_env} is not set (the API key is "
                                  "read from it and nowhere else)")
            api_key = key or api_key
        self.limiter = self.services.limiters.get(
            endpoint_key(base_url, api_key),
            EndpointLimits(rpm=rpm, tpm=tpm, max_concurrency=max_concurrency))
        self.retry_policy = RetryPolicy(max_attempts=max_attempts)
        self.usage = Usage()
        self.calls = 0
        self._sdk = openai
        self._client = client if client is not None else openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)

    async def complete(self, conversations: list[list[dict[str, Any]]],
                       tools: list[list[dict[str, Any]] | None], params: SamplingParams, *,
                       max_new_tokens: Sequence[int] | None = None) -> list[Turn]:
        caps = token_caps(len(conversations), params, max_new_tokens, tools)
        self.calls += 1
        base_seed = None if params.seed is None else params.seed + 1_000_003 * self.calls
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self._one(c, t, params, cap,
                                                  None if base_seed is None else base_seed + i))
                         for i, (c, t, cap) in enumerate(zip(conversations, tools, caps, strict=True))]
        except BaseExceptionGroup as eg:  # surface the first real error, not the group
            raise eg.exceptions[0] from eg
        return [t.result() for t in tasks]

    async def aclose(self) -> None:
        await self._client.close()

    async def _one(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                   params: SamplingParams, cap: int, seed: int | None) -> Turn:
        if cap <= 0:
            return Turn("", None, "length", 0)
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages,
                                  "temperature": params.temperature, "top_p": params.top_p,
                                  "max_tokens": cap}
        if tools:
            kwargs["tools"] = tools
        if seed is not None:  # one per conversation: the n samples of a task must differ
            kwargs["seed"] = seed
        est_in = len(json.dumps(messages)) // 4 + len(json.dumps(tools or [])) // 4 + 16
        from ..paid.retry import call_with_retries

        try:
            resp = await call_with_retries(lambda n: self._attempt(kwargs, est_in, cap),
                                           self.retry_policy, sleep=self.services.clock.sleep)
        except TeacherError as e:
            if e.kind == "auth":
                raise
            return Turn("", None, f"error: {e}", 0)
        return _turn(resp)

    async def _attempt(self, kwargs: dict[str, Any], est_in: int, est_out: int) -> Any:
        """One request: budget, then limiter, then the call; both settled with the real usage."""
        budget = self.services.budget
        token = budget.reserve(self.price.cost(est_in, est_out))
        await self.limiter.acquire(est_in, est_out)
        used: tuple[int | None, int | None] = (None, None)
        try:
            raw = await self._client.chat.completions.with_raw_response.create(**kwargs)
            self.limiter.learn(raw.headers)
            resp = raw.parse()
            u = resp.usage
            used = (getattr(u, "prompt_tokens", 0) or 0, getattr(u, "completion_tokens", 0) or 0)
            self.limiter.on_success()
            return resp
        except Exception as e:
            from ..paid.sdk_errors import classify_sdk_error

            err = classify_sdk_error(e, self._sdk, self.name)
            if err is None:
                raise
            if err.kind == "rate_limit":
                self.limiter.on_rate_limited(err.retry_after)
            raise err from None
        finally:
            self.limiter.release(est_in, est_out, *used)
            cost = self.price.cost(used[0] or 0, used[1] or 0)
            budget.settle(token, cost)
            self.usage = self.usage + Usage(requests=1, input_tokens=used[0] or 0,
                                            output_tokens=used[1] or 0, cost_usd=cost)


def _turn(resp: Any) -> Turn:
    choice = resp.choices[0] if resp.choices else None
    if choice is None:
        return Turn("", None, "error: no choices in the response", 0)
    msg = choice.message
    calls = [
        {"id": tc.id, "type": "function",
         "function": {"name": tc.function.name, "arguments": tc.function.arguments or "{}"}}
        for tc in (msg.tool_calls or []) if getattr(tc, "function", None) is not None
    ]
    n_out = getattr(resp.usage, "completion_tokens", 0) or 0
    return Turn(msg.content or "", calls or None, choice.finish_reason or "stop", n_out)
