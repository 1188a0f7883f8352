"""Sampling from any OpenAI-compatible chat endpoint: vLLM serve, SGLang, llama.cpp, or a hosted model.

One ``chat.completions.create`` per conversation, all concurrently, through the paid-call layer
every remote call crosses (:meth:`Services.stack <tgrs_agents.paid.services.Services.stack>`): the
endpoint's shared limiter (concurrency, request and token buckets, Retry-After), the run's retry
policy (errors classified by :func:`~tgrs_agents.paid.sdk_errors.classify_sdk_error`), and the run
budget, checked before every attempt and settled with the usage the server reported. Sampling is
never cached. The SDK's own retries are off.

:class:`ChatCompletions` is that one attempt as a :class:`~tgrs_agents.paid.call.PaidAdapter`; the
refiner (:class:`~tgrs_agents.loop.refine.OpenAIRefiner`) sends its rewrites through it too.

A conversation the server keeps refusing (after retries) comes back as a turn whose
``finish_reason`` is ``"error: ..."``, so one bad prompt does not sink a batch; a missing or wrong
API key (``auth``) and an exhausted budget raise.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import CallsStopped, ConfigError, TeacherError
from ..paid.call import CacheIdentity, Paid
from ..paid.cost import Price, price_for
from ..paid.limits import EndpointLimits, endpoint_key
from ..paid.sdk_errors import classify_sdk_error
from ..types import Usage
from .base import SamplingParams, Turn, token_caps

if TYPE_CHECKING:
    from ..paid.services import Services


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One request: the keyword arguments of ``chat.completions.create`` and its token estimate."""

    body: dict[str, Any]
    est_in: int
    est_out: int


class ChatCompletions:
    """One attempt at ``chat.completions.create`` on an OpenAI-compatible endpoint (a PaidAdapter).

    ``api_key_env=None`` is for local servers that take no key. Prices are USD per million tokens;
    unset, the list price of a known model is used, and an unknown model needs them set (0 for a
    self-hosted one) so that the budget means something. Never cached (``cache_identity`` is None).
    """

    def __init__(self, name: str, model: str, base_url: str, api_key_env: str | None, *,
                 limits: EndpointLimits, price_input_per_mtok: float | None = None,
                 price_output_per_mtok: float | None = None, timeout_s: float = 120.0,
                 max_attempts: int | None = None, client: Any = None) -> None:
        import openai

        price = price_for(model, price_input_per_mtok, price_output_per_mtok)
        if price is None:
            raise ConfigError(f"{name}: no price known for model {model!r}: set price_input_per_mtok "
                              "and price_output_per_mtok (0 for a self-hosted model)",
                              field="price_input_per_mtok")
        key = None
        if api_key_env is not None:
            key = os.environ.get(api_key_env) or None
            if key is None and client is None:
                raise ConfigError(f"{name}: environment variable {api_key_env} is not set (the API "
                                  "key is read from it and nowhere else)", field="api_key_env")
        self.name = name
        self.model = model
        self.base_url = base_url
        self._price = price
        self._limits = limits
        self._max_attempts = max_attempts
        self._endpoint = endpoint_key(base_url, key)
        self._sdk = openai
        self.client = client if client is not None else openai.AsyncOpenAI(
            api_key=key or "EMPTY", base_url=base_url, max_retries=0, timeout=timeout_s)

    @property
    def endpoint_key(self) -> str:
        return self._endpoint

    @property
    def limits(self) -> EndpointLimits:
        return self._limits

    @property
    def price(self) -> Price:
        return self._price

    @property
    def max_attempts(self) -> int | None:
        return self._max_attempts

    def estimate(self, request: ChatRequest) -> tuple[int, int]:
        return request.est_in, request.est_out

    def cache_identity(self) -> CacheIdentity | None:
        return None  # sampling (and rewriting) is never answered from the ledger

    async def call(self, request: ChatRequest) -> Paid[Any]:
        """One request: the parsed completion, its usage and the response's headers."""
        try:
            raw = await self.client.chat.completions.with_raw_response.create(**request.body)
            resp = raw.parse()
            if inspect.isawaitable(resp):  # async in some SDK versions
                resp = await resp
        except Exception as e:
            err = classify_sdk_error(e, self._sdk, self.name)
            if err is None:
                raise
            raise err from None
        u = resp.usage
        usage = Usage(requests=1, input_tokens=getattr(u, "prompt_tokens", 0) or 0,
                      output_tokens=getattr(u, "completion_tokens", 0) or 0)
        return Paid(resp, usage, dict(raw.headers.items()))

    async def aclose(self) -> None:
        await self.client.close()


class OpenAIChatBackend:
    """A :class:`~tgrs_agents.generate.base.ChatBackend` over the official ``openai`` SDK.

    Every request crosses ``services`` (the run's shared limiters, retry policy and budget; a
    fresh :class:`~tgrs_agents.paid.services.Services` when none is given); ``max_attempts``
    bounds this backend's attempts. ``usage`` adds up every attempt, failed ones included.
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
        max_concurrency: int = 256,  # a ceiling: the endpoint's limiter sets the pace
        timeout_s: float = 120.0,
        max_attempts: int = 5,
        price_input_per_mtok: float | None = None,
        price_output_per_mtok: float | None = None,
        client: Any = None,
    ) -> None:
        from ..paid.services import Services

        self.model = model
        self.base_url = base_url
        self.name = f"generator:{model}"
        self.services = services or Services()
        self.adapter = ChatCompletions(
            self.name, model, base_url, api_key_env,
            limits=EndpointLimits(rpm=rpm, tpm=tpm, max_concurrency=max_concurrency),
            price_input_per_mtok=price_input_per_mtok, price_output_per_mtok=price_output_per_mtok,
            timeout_s=timeout_s, max_attempts=max_attempts, client=client)
        self._paid = self.services.stack(self.adapter)
        self.limiter = self._paid.limiter
        self.price = self.adapter.price
        self.usage = Usage()
        self.calls = 0

    @property
    def _client(self) -> Any:
        return self.adapter.client

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
        await self.adapter.aclose()

    async def _one(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
                   params: SamplingParams, cap: int, seed: int | None) -> Turn:
        if cap <= 0:
            return Turn("", None, "length", 0)
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "temperature": params.temperature, "top_p": params.top_p,
                                "max_tokens": cap}
        if tools:
            body["tools"] = tools
        if seed is not None:  # one per conversation: the n samples of a task must differ
            body["seed"] = seed
        est_in = len(json.dumps(messages)) // 4 + len(json.dumps(tools or [])) // 4 + 16
        try:
            paid = await self._paid.call(ChatRequest(body, est_in, cap))
        except (TeacherError, CallsStopped) as e:
            self.usage = self.usage + (e.usage or Usage())
            if isinstance(e, CallsStopped) or e.kind == "auth":
                raise
            return Turn("", None, f"error: {e}", 0)
        self.usage = self.usage + paid.usage
        return _turn(paid.value)


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
