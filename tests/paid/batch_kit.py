"""Shared by the batch tests: a stand-in whose clock the test drives, and clients pointed at it."""

from __future__ import annotations

import pytest

from tgrs_agents.paid.batch_anthropic import AnthropicBatchClient
from tgrs_agents.paid.batch_openai import OpenAIBatchClient
from tgrs_agents.paid.cost import Price
from tgrs_agents.testing.standin import FaultPlan, StandIn

GOOD = "<reference>42</reference>\n<final>Answer: 42</final>"
BAD = "<reference>42</reference>\n<final>Answer: 41</final>"
PRICE = Price(1.0, 2.0)
T0 = 1_750_000_000.0


class Clock:
    """Wall time for the stand-in and the runner; ``sleep`` advances it."""

    def __init__(self) -> None:
        self.t = T0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    async def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s


class Killed(BaseException):
    """``kill -9`` at a chosen point: nothing after it runs."""


def body(provider: str, prompt: str) -> dict:
    msgs = [{"role": "user", "content": prompt}]
    if provider == "openai":
        return {"model": "gpt-4o-mini", "messages": msgs, "max_tokens": 64}
    return {"model": "claude-haiku-4", "max_tokens": 64, "messages": msgs,
            "tools": [{"name": "record_verdict", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "record_verdict"}}


def items(provider: str, n: int, bad: frozenset[int] = frozenset()) -> list[tuple[str, dict]]:
    """(candidate id, request body): ids any string, to show custom_ids do not depend on them."""
    return [(f"cand/{i} x", body(provider, BAD if i in bad else GOOD)) for i in range(n)]


def passed(provider: str, value) -> bool:
    import json

    return (json.loads(value) if provider == "openai" else value)["passed"]


@pytest.fixture
def standin():
    servers = []

    def start(**plan) -> tuple[StandIn, Clock]:
        s = StandIn(FaultPlan(**plan))
        clock = Clock()
        s.batches.clock = clock
        s.start()
        servers.append(s)
        return s, clock

    yield start
    for s in servers:
        s.stop()


def client(provider: str, srv: StandIn, **kw):
    if provider == "openai":
        import openai

        return OpenAIBatchClient(openai.AsyncOpenAI(api_key="sk-test", base_url=srv.url_openai, max_retries=0),
                                 price=PRICE, **kw)
    import anthropic

    return AnthropicBatchClient(anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=srv.url_anthropic,
                                                         max_retries=0), price=PRICE, **kw)
