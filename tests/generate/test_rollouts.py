"""The batched agent loop and the tool box, driven by a scripted backend (no model, no network)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from tgrs_agents.generate import (
    RolloutStats,
    SamplingParams,
    Tool,
    ToolBox,
    Turn,
    calculator_tool,
    rollout,
)
from tgrs_agents.generate.base import ChatBackend
from tgrs_agents.tasks.arithmetic import make_tasks
from tgrs_agents.tasks.arithmetic_data import CALCULATOR_TOOL
from tgrs_agents.types import Candidate, Task


def call(name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"type": "function", "function": {"name": name, "arguments": args}}


class Scripted:
    """A backend whose next turn is ``policy(conversation, k)``; it records every call it gets."""

    def __init__(self, policy: Callable[[list[dict[str, Any]]], Turn]) -> None:
        self.policy = policy
        self.calls: list[dict[str, Any]] = []

    async def complete(self, conversations: list[list[dict[str, Any]]],
                       tools: list[list[dict[str, Any]] | None], params: SamplingParams, *,
                       max_new_tokens: Sequence[int] | None = None) -> list[Turn]:
        self.calls.append({"n": len(conversations), "caps": list(max_new_tokens or []),
                           "tools": tools})
        return [self.policy(c) for c in conversations]

    async def aclose(self) -> None:
        return None


def solver(conv: list[dict[str, Any]]) -> Turn:
    """Calls the calculator with the question's expression, then answers with its result."""
    last = conv[-1]
    if last["role"] == "tool":
        return Turn(f"Answer: {last['content']}", None, "stop", 5)
    expr = re.search(r"What is (.*)\?", last["content"]).group(1).replace(" ", "")
    return Turn("", [call("calculator", {"expression": expr})], "tool_calls", 10)


def first_call_then_answer(tool_call: dict[str, Any]) -> Callable[[list[dict[str, Any]]], Turn]:
    def policy(conv: list[dict[str, Any]]) -> Turn:
        if conv[-1]["role"] == "tool":
            return Turn("Answer: ?", None, "stop", 3)
        return Turn("", [tool_call], "tool_calls", 7)
    return policy


TASKS = make_tasks(5, seed=3)
BOX = ToolBox([calculator_tool()])
PARAMS = SamplingParams(n=4, temperature=1.0, max_new_tokens=32)


def run(backend: Any, tasks: list[Task] = TASKS, **kw: Any) -> list[dict[str, Any]]:
    kw.setdefault("toolbox", BOX)
    kw.setdefault("params", PARAMS)
    return asyncio.run(rollout(backend, tasks, **kw))


def test_scripted_backend_is_a_chat_backend() -> None:
    assert isinstance(Scripted(solver), ChatBackend)


def test_tool_call_then_answer_gives_panel_ready_records() -> None:
    be = Scripted(solver)
    stats = RolloutStats()
    recs = run(be, n=3, id_prefix="r1-", stats=stats)
    assert len(recs) == len(TASKS) * 3
    assert [r["id"] for r in recs[:3]] == [f"r1-{TASKS[0].id}-s{k}" for k in range(3)]
    for r, task in zip(recs[::3], TASKS, strict=True):
        assert r["task_id"] == task.id and r["reference"] == task.reference
        assert r["tools"] == [CALCULATOR_TOOL]
        assert r["metadata"] == {"stop": "final", "n_tokens": 15, "turns": 2}
        user, asst, tool, final = r["messages"]
        assert user == {"role": "user", "content": task.messages[0].content}
        assert asst["content"] is None and len(asst["tool_calls"]) == 1
        tc = asst["tool_calls"][0]
        assert tc["type"] == "function" and tc["id"]
        assert isinstance(tc["function"]["arguments"], str)
        assert tool == {"role": "tool", "tool_call_id": tc["id"], "content": str(task.reference)}
        assert final == {"role": "assistant", "content": f"Answer: {task.reference}"}
        Candidate.model_validate(r)  # what curate and the panel read
    assert (stats.rollouts, stats.steps, stats.generated_tokens) == (15, 2, 15 * 15)
    assert stats.stops == {"final": 15} and stats.tokens_per_s > 0 and stats.rollouts_per_s > 0


def test_every_step_is_one_batch_of_all_active_rollouts() -> None:
    # task 0 answers at once; the others call the tool first; so step 2 holds 4 tasks x 4 samples
    def policy(conv: list[dict[str, Any]]) -> Turn:
        if conv[0]["content"] == TASKS[0].messages[0].content:
            return Turn("Answer: 0", None, "stop", 4)
        return solver(conv)

    be = Scripted(policy)
    recs = run(be)
    assert [c["n"] for c in be.calls] == [20, 16]
    assert all(len(c["tools"]) == c["n"] for c in be.calls)
    assert sum(r["metadata"]["turns"] == 1 for r in recs) == 4


def test_n_defaults_to_the_sampling_params() -> None:
    recs = run(Scripted(solver), tasks=TASKS[:2])
    assert len(recs) == 2 * PARAMS.n


@pytest.mark.parametrize(("tool_call", "expected"), [
    (call("calculator", {"expression": "7/2"}), "error: unsupported expression '7/2'"),
    (call("calculator", "{not json"), "error: arguments are not valid JSON"),
    (call("calculator", "[1, 2]"), "error: arguments must be a JSON object"),
    (call("calculator", {"expr": "1+2"}), "error: wrong arguments for calculator"),
    (call("web_search", {"q": "x"}), "error: unknown tool 'web_search' (tools: calculator)"),
])
def test_tool_problems_come_back_as_tool_messages(tool_call: dict[str, Any], expected: str) -> None:
    recs = run(Scripted(first_call_then_answer(tool_call)), tasks=TASKS[:1], n=1)
    msgs = recs[0]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "tool", "assistant"]
    assert msgs[2]["content"].startswith(expected), msgs[2]["content"]
    assert msgs[2]["tool_call_id"] == msgs[1]["tool_calls"][0]["id"]
    assert recs[0]["metadata"]["stop"] == "final"


def test_turn_limit() -> None:
    be = Scripted(lambda conv: Turn("", [call("calculator", {"expression": "1+1"})], "tool_calls", 2))
    recs = run(be, tasks=TASKS[:2], n=2, max_turns=3)
    for r in recs:
        assert r["metadata"] == {"stop": "turns", "n_tokens": 6, "turns": 3}
        assert [m["role"] for m in r["messages"]] == ["user"] + ["assistant", "tool"] * 3
        ids = [tc["id"] for m in r["messages"] if m["role"] == "assistant" for tc in m["tool_calls"]]
        assert len(set(ids)) == 3  # call ids are unique within a trajectory
    assert len(be.calls) == 3


def test_token_limit_caps_each_turn_and_stops_the_rollout() -> None:
    def policy(conv: list[dict[str, Any]]) -> Turn:
        turns = sum(m["role"] == "assistant" for m in conv)
        if turns < 2:
            return Turn("", [call("calculator", {"expression": "2*3"})], "tool_calls", 30)
        return Turn("Answer: 6 and then some", None, "length", 4)  # cut at its cap

    be = Scripted(policy)
    recs = run(be, tasks=TASKS[:1], n=2, max_tokens=64, max_turns=10)
    assert [c["caps"] for c in be.calls] == [[32, 32], [32, 32], [4, 4]]
    assert all(r["metadata"] == {"stop": "tokens", "n_tokens": 64, "turns": 3} for r in recs)


def test_budget_spent_on_a_tool_call_turn_stops_with_tokens() -> None:
    be = Scripted(lambda conv: Turn("", [call("calculator", {"expression": "1"})], "tool_calls", 50))
    recs = run(be, tasks=TASKS[:1], n=1, max_tokens=40)  # a backend may overshoot; we stop anyway
    assert recs[0]["metadata"]["stop"] == "tokens"
    assert recs[0]["messages"][-1]["role"] == "tool"


def test_a_cut_turn_does_not_run_its_tool_calls() -> None:
    be = Scripted(lambda conv: Turn("", [call("calculator", {"expression": "12-"})], "length", 32))
    recs = run(be, tasks=TASKS[:1], n=1)
    assert recs[0]["metadata"]["stop"] == "tokens"
    assert [m["role"] for m in recs[0]["messages"]] == ["user", "assistant"]


def test_backend_errors_stop_only_that_rollout() -> None:
    def policy(conv: list[dict[str, Any]]) -> Turn:
        if conv[0]["content"] == TASKS[1].messages[0].content:
            return Turn("", None, "error: HTTP 400", 0)
        return solver(conv)

    recs = run(Scripted(policy), tasks=TASKS[:2], n=1)
    assert [r["metadata"]["stop"] for r in recs] == ["final", "error"]


def test_a_backend_that_drops_turns_is_caught() -> None:
    class Short(Scripted):
        async def complete(self, conversations: Any, tools: Any, params: Any, *,
                           max_new_tokens: Any = None) -> list[Turn]:
            return [Turn("x")]

    with pytest.raises(RuntimeError, match="1 turns for 2 conversations"):
        run(Short(solver), tasks=TASKS[:1], n=2)


def test_task_tools_fall_back_to_the_toolbox() -> None:
    task = Task(id="q", messages=[{"role": "user", "content": "What is 2 + 2?"}], reference=4)
    be = Scripted(solver)
    recs = run(be, tasks=[task], n=1)
    assert recs[0]["tools"] == BOX.schemas()
    assert be.calls[0]["tools"] == [BOX.schemas()]
    assert recs[0]["messages"][-1]["content"] == "Answer: 4"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        run(Scripted(solver), n=0)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)


# ----- tools ----------------------------------------------------------------------------------------

def test_calculator_tool_schema_and_run() -> None:
    tool = calculator_tool()
    assert tool.name == "calculator" and tool.schema == CALCULATOR_TOOL
    box = ToolBox([tool])
    msg = box.execute({"id": "c1", **call("calculator", {"expression": "07 + 5*2"})})
    assert msg == {"role": "tool", "tool_call_id": "c1", "content": "17"}


def test_toolbox_never_raises() -> None:
    def boom() -> None:
        raise RuntimeError

    def big() -> dict[str, Any]:
        return {"x": "y" * 100}

    box = ToolBox([Tool("boom", {"type": "object", "properties": {}}, boom),
                   Tool("big", {"type": "object", "properties": {}}, big)], max_chars=20)
    assert box.run(call("boom", "{}")) == "error: RuntimeError"
    assert box.run(call("boom", "{")).startswith("error: arguments are not valid JSON")
    assert box.run(call("boom", "")) == "error: RuntimeError"  # "" and null: no arguments
    assert box.run(call("boom", "null")) == "error: RuntimeError"
    assert box.run({"function": {"arguments": "{}"}}).startswith("error: unknown tool None")
    assert box.run({}).startswith("error: unknown tool")
    assert box.run(call("big", {})) == json.dumps({"x": "y" * 100})[:20] + " [truncated]"
    with pytest.raises(ValueError, match="two tools"):
        ToolBox([calculator_tool(), calculator_tool()])


def test_generate_package_surface_is_light_and_complete() -> None:
    import subprocess
    import sys

    import tgrs_agents.generate as g

    assert list(g.__all__) == sorted(g.__all__)
    assert all(getattr(g, name) is not None for name in g.__all__)
    code = ("import sys, tgrs_agents.generate; print(sorted(m for m in ('torch', 'transformers', "
            "'openai', 'httpx', 'tenacity', 'vllm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
