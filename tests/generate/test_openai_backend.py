"""The OpenAI-compatible backend through the real SDK: the loopback stand-in and a mock transport."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from tgrs_agents.errors import BudgetExhausted, ConfigError, TeacherError  # noqa: E402
from tgrs_agents.generate import (  # noqa: E402
    OpenAIChatBackend,
    SamplingParams,
    ToolBox,
    Turn,
    calculator_tool,
    rollout,
)
from tgrs_agents.paid.call import PaidAdapter  # noqa: E402
from tgrs_agents.paid.cost import Budget  # noqa: E402
from tgrs_agents.paid.limits import FakeClock  # noqa: E402
from tgrs_agents.paid.retry import RetryPolicy  # noqa: E402
from tgrs_agents.paid.services import Services  # noqa: E402
from tgrs_agents.tasks.arithmetic import make_tasks  # noqa: E402
from tgrs_agents.tasks.arithmetic_data import CALCULATOR_TOOL  # noqa: E402
from tgrs_agents.testing.standin import FaultPlan, StandIn  # noqa: E402

PARAMS = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=40)
CONVS = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(3)]


def echo(prompt: str) -> dict[str, Any]:
    return {"echo": prompt.strip()}


@pytest.fixture
def srv() -> Any:
    with StandIn(FaultPlan(), brain=echo) as s:
        yield s


def backend(srv: Any, services: Services | None = None, **kw: Any) -> OpenAIChatBackend:
    kw.setdefault("price_input_per_mtok", 0.0)
    kw.setdefault("price_output_per_mtok", 0.0)
    return OpenAIChatBackend("stand-in", srv.url_openai, None,
                             services=services or Services(clock=FakeClock()), **kw)


def run_complete(make: Any, convs: list[list[dict[str, Any]]] = CONVS, seed: int | None = None,
                 **kw: Any) -> tuple[Any, list[Turn]]:
    params = SamplingParams(temperature=PARAMS.temperature, top_p=PARAMS.top_p,
                            max_new_tokens=PARAMS.max_new_tokens, seed=seed)

    async def main() -> tuple[Any, list[Turn]]:
        be = make()
        try:
            return be, await be.complete(convs, [[CALCULATOR_TOOL]] * len(convs), params, **kw)
        finally:
            await be.aclose()

    return asyncio.run(main())


def test_one_turn_per_conversation_through_the_limiter(srv: Any) -> None:
    be, turns = run_complete(lambda: backend(srv, price_input_per_mtok=1.0, price_output_per_mtok=2.0),
                             convs=[CONVS[0]] * 2 + [CONVS[1]], max_new_tokens=[5, 40, 60], seed=3)
    assert [json.loads(t.text)["echo"] for t in turns] == [CONVS[0][0]["content"]] * 2 + [
        CONVS[1][0]["content"]]
    assert all(t.tool_calls is None and t.finish_reason == "stop" and t.n_tokens > 0 for t in turns)
    bodies = sorted((r["body"] for r in srv.requests), key=lambda b: b["max_tokens"])
    assert [b["max_tokens"] for b in bodies] == [5, 40, 40]  # capped per conversation
    assert len({b["seed"] for b in bodies}) == 3  # the samples of one prompt get different seeds
    assert all(b["temperature"] == 0.7 and b["top_p"] == 0.9 and b["model"] == "stand-in" for b in bodies)
    assert bodies[0]["tools"] == [CALCULATOR_TOOL]
    assert be.limiter.stats.acquired == 3
    assert be.usage.requests == 3 and be.usage.output_tokens == sum(t.n_tokens for t in turns)
    assert be.usage.cost_usd == pytest.approx(
        (be.usage.input_tokens * 1.0 + be.usage.output_tokens * 2.0) / 1e6)


def test_retries_429_and_500_and_tells_the_limiter(srv: Any) -> None:
    srv.script.extend(["429", "500"])
    clock = FakeClock()
    services = Services(clock=clock)
    be, turns = run_complete(lambda: backend(srv, services), convs=CONVS[:1])
    assert json.loads(turns[0].text)["echo"] == CONVS[0][0]["content"]
    assert (srv.stats["429"], srv.stats["500"], srv.stats["ok"]) == (1, 1, 1)
    assert be.limiter.stats.rate_limited == 1 and be.limiter.stats.acquired == 3
    assert clock.slept and max(clock.slept) >= 1.0  # the server's retry-after, in virtual time
    assert services.limiters.all() == {be.limiter.key: be.limiter}


def test_backends_on_one_endpoint_share_a_limiter(srv: Any) -> None:
    services = Services(clock=FakeClock())
    a, b = backend(srv, services), backend(srv, services, rpm=60)
    assert a.limiter is b.limiter


def test_a_refused_conversation_becomes_an_error_turn(srv: Any) -> None:
    srv.script.append("400")
    _, turns = run_complete(lambda: backend(srv), convs=CONVS[:1])
    assert turns[0].finish_reason.startswith("error: HTTP 400") and turns[0].n_tokens == 0


def test_retries_run_out_into_an_error_turn(srv: Any) -> None:
    srv.script.extend(["500"] * 2)
    _, turns = run_complete(lambda: backend(srv, max_attempts=2), convs=CONVS[:1])
    assert turns[0].finish_reason.startswith("error: HTTP 500")


def test_auth_errors_raise(srv: Any) -> None:
    srv.script.append("401")
    with pytest.raises(TeacherError) as e:
        run_complete(lambda: backend(srv), convs=CONVS[:1])
    assert e.value.kind == "auth"


def test_budget_is_checked_before_each_call(srv: Any) -> None:
    services = Services(clock=FakeClock(), budget=Budget(limit_usd=1e-9))
    with pytest.raises(BudgetExhausted):
        run_complete(lambda: backend(srv, services, price_input_per_mtok=1.0, price_output_per_mtok=1.0))
    assert srv.stats["requests"] == 0


def test_every_attempt_is_costed_on_the_shared_budget_with_the_injected_retry_policy(srv: Any) -> None:
    srv.script.extend(["500", "500"])
    clock = FakeClock()
    services = Services(clock=clock, retry=RetryPolicy(initial_s=0.5, max_wait_s=10, jitter_s=0))
    be, turns = run_complete(lambda: backend(srv, services, price_input_per_mtok=1.0, price_output_per_mtok=2.0),
                             convs=CONVS[:1])
    assert not turns[0].finish_reason.startswith("error")
    assert clock.slept == [0.5, 1.0]  # the back-off of the services' policy, in virtual time
    assert be.usage.requests == 3 and be.limiter.stats.acquired == 3
    assert services.budget.spent_usd == pytest.approx(be.usage.cost_usd) and be.usage.cost_usd > 0
    assert services.budget.reserved_usd == pytest.approx(0.0)


def test_the_backend_is_an_adapter_inside_the_layer(srv: Any) -> None:
    be = backend(srv, max_concurrency=7, max_attempts=3, rpm=600)
    assert isinstance(be.adapter, PaidAdapter) and be.adapter.cache_identity() is None  # sampling: no cache
    assert be.adapter.max_attempts == 3 and be.adapter.limits.max_concurrency == 7
    assert be.limiter.limits.rpm == 600 and be.services.policy_for(be.adapter).max_attempts == 3
    assert not hasattr(be, "retry_policy")  # the policy is the services'


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TGRS_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="TGRS_TEST_KEY"):
        OpenAIChatBackend("gpt-4o-mini", api_key_env="TGRS_TEST_KEY")
    with pytest.raises(ConfigError, match="no price known"):
        OpenAIChatBackend("my-local-model", "http://127.0.0.1:1/v1", None)
    with pytest.raises(ConfigError) as ei:
        OpenAIChatBackend("gpt-4o-mini", api_key_env="TGRS_TEST_KEY")
    assert ei.value.field == "api_key_env"
    monkeypatch.setenv("TGRS_TEST_KEY", "sk-test")
    be = OpenAIChatBackend("gpt-4o-mini", api_key_env="TGRS_TEST_KEY")  # list price known
    assert be.price.input_per_mtok > 0 and be._client.max_retries == 0


# ----- tool calls, through a mock transport -----------------------------------------------------

def completion(message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "teacher",
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", **message}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9, "total_tokens": 29}}


def teacher(request: httpx.Request) -> httpx.Response:
    """Calls the calculator on the question's expression, then answers with the tool's output."""
    body = json.loads(request.content)
    last = body["messages"][-1]
    if last["role"] == "tool":
        return httpx.Response(200, json=completion({"content": f"Answer: {last['content']}"}, "stop"))
    expr = last["content"].removeprefix("What is ").removesuffix("?").replace(" ", "")
    call = {"id": f"call_{len(body['messages'])}", "type": "function",
            "function": {"name": "calculator", "arguments": json.dumps({"expression": expr})}}
    return httpx.Response(200, json=completion({"content": None, "tool_calls": [call]}, "tool_calls"))


def test_tool_calls_come_back_in_openai_format_and_drive_a_rollout() -> None:
    import openai

    requests: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(json.loads(request.content))
        return teacher(request)

    tasks = make_tasks(3, seed=9)

    async def main() -> list[dict[str, Any]]:
        client = openai.AsyncOpenAI(api_key="k", base_url="http://teacher.test/v1", max_retries=0,
                                    http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        be = OpenAIChatBackend("teacher", "http://teacher.test/v1", None, client=client,
                               price_input_per_mtok=0, price_output_per_mtok=0)
        try:
            return await rollout(be, tasks, n=2, toolbox=ToolBox([calculator_tool()]), params=PARAMS)
        finally:
            await be.aclose()

    recs = asyncio.run(main())
    assert len(requests) == 12
    for r, task in zip(recs[::2], tasks, strict=True):
        assert r["metadata"] == {"stop": "final", "n_tokens": 18, "turns": 2}
        asst, tool, final = r["messages"][1:]
        assert asst["tool_calls"] == [{"id": "call_1", "type": "function", "function": {
            "name": "calculator", "arguments": json.dumps({"expression": task.metadata["expression"]
                                                           .replace(" ", "")})}}]
        assert tool == {"role": "tool", "tool_call_id": "call_1", "content": str(task.reference)}
        assert final == {"role": "assistant", "content": f"Answer: {task.reference}"}
    second = [b for b in requests if len(b["messages"]) == 3]
    assert second and all(b["messages"][2]["tool_call_id"] == "call_1" for b in second)
