"""Tools from a user's factory: loaded by path, fresh per rollout, closed at its end, run concurrently
under a timeout, and named wrongly -> a ConfigError naming the file and field."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from tgrs_agents.errors import ConfigError
from tgrs_agents.generate import SamplingParams, Tool, ToolBox, Turn, rollout
from tgrs_agents.tasks.env import ToolFactory, as_tool, check_factory, load_tool_factory
from tgrs_agents.types import Task

# A stateful environment in a user's file: a counter per rollout, and a log of what was closed.
USER_TOOLS = textwrap.dedent('''
    import asyncio, itertools
    OPENED = []
    CLOSED = []
    _ids = itertools.count()

    class Counter:
        """Each rollout's own state: the values added so far."""
        name = "add"
        parameters = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}

        def __init__(self, task):
            self.id = next(_ids)
            self.task_id = task.id if task is not None else None
            self.values = []
            OPENED.append(self.id)

        async def __call__(self, n):
            await asyncio.sleep(0.01)  # an I/O-bound tool: calls of other rollouts run meanwhile
            self.values.append(n)
            return {"instance": self.id, "total": sum(self.values)}

        def close(self):
            CLOSED.append(self.id)

    def make_tools(task):
        return [Counter(task)]
''')


@pytest.fixture
def user_file(tmp_path: Path) -> Path:
    p = tmp_path / "env" / "my_tools.py"
    p.parent.mkdir()
    p.write_text(USER_TOOLS)
    return p


class AddTwice:
    """Calls ``add`` with 1 then with 2, then answers with the total it was told."""

    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, conversations: list[list[dict[str, Any]]], tools: Any, params: Any, *,
                       max_new_tokens: Any = None) -> list[Turn]:
        self.calls += 1
        out = []
        for conv in conversations:
            answered = [m for m in conv if m["role"] == "tool"]
            if len(answered) < 2:
                n = len(answered) + 1
                tc = {"type": "function", "function": {"name": "add", "arguments": json.dumps({"n": n})}}
                out.append(Turn("", [tc], "tool_calls", 3))
            else:
                out.append(Turn(f"Answer: {json.loads(answered[-1]['content'])['total']}", None, "stop", 3))
        return out

    async def aclose(self) -> None:
        return None


TASKS = [Task(id=f"t{i}", messages=[{"role": "user", "content": "add 1 and 2"}]) for i in range(2)]


def test_user_factory_state_is_per_rollout_and_closed(user_file: Path) -> None:
    factory = load_tool_factory(f"{user_file.name}:make_tools", base_dir=user_file.parent)
    mod = factory.fn.__globals__
    recs = asyncio.run(rollout(AddTwice(), TASKS, n=2, tools=factory, params=SamplingParams(n=2),
                               max_turns=4, max_tokens=100))
    assert len(recs) == 4 and len(mod["OPENED"]) == 4  # one fresh instance per rollout
    assert sorted(mod["CLOSED"]) == sorted(mod["OPENED"])  # ... each closed once, when it ended
    for r in recs:
        results = [json.loads(m["content"]) for m in r["messages"] if m["role"] == "tool"]
        assert [x["total"] for x in results] == [1, 3]  # 1, then 1 + 2: nobody else's values
        assert len({x["instance"] for x in results}) == 1  # the same instance for the whole rollout
        assert r["messages"][-1]["content"] == "Answer: 3"
        assert r["tools"][0]["function"]["name"] == "add"  # the factory's schema is shown
    assert len({json.loads(m["content"])["instance"] for r in recs for m in r["messages"]
                if m["role"] == "tool"}) == 4


def test_tool_calls_run_concurrently_across_rollouts(user_file: Path) -> None:
    factory = load_tool_factory(str(user_file) + ":make_tools")
    tasks = [Task(id=f"t{i}", messages=[{"role": "user", "content": "x"}]) for i in range(40)]
    t0 = time.perf_counter()
    asyncio.run(rollout(AddTwice(), tasks, n=1, tools=factory, params=SamplingParams(), max_turns=4))
    # 80 calls of 10 ms each: one after the other that is 0.8 s; concurrently about 2 x 10 ms
    assert time.perf_counter() - t0 < 0.5


def test_closed_when_the_rollout_fails(user_file: Path) -> None:
    factory = load_tool_factory(str(user_file) + ":make_tools")
    mod = factory.fn.__globals__

    class Breaks(AddTwice):
        async def complete(self, conversations: Any, tools: Any, params: Any, *, max_new_tokens: Any = None) -> Any:
            if self.calls == 1:
                raise RuntimeError("backend down")
            return await super().complete(conversations, tools, params, max_new_tokens=max_new_tokens)

    with pytest.raises(RuntimeError, match="backend down"):
        asyncio.run(rollout(Breaks(), TASKS, n=1, tools=factory, params=SamplingParams(), max_turns=4))
    assert len(mod["OPENED"]) == 2 and sorted(mod["CLOSED"]) == sorted(mod["OPENED"])


def test_task_tools_select_from_the_factory() -> None:
    made: list[list[str]] = []

    def make() -> list[Tool]:
        tools = [Tool("a", {"type": "object", "properties": {}}, lambda: "A"),
                 Tool("b", {"type": "object", "properties": {}}, lambda: "B")]
        return tools

    class CallsB(AddTwice):
        async def complete(self, conversations: Any, tools: Any, params: Any, *, max_new_tokens: Any = None) -> Any:
            made.append([t["function"]["name"] for t in tools[0] or []])
            if conversations[0][-1]["role"] == "tool":
                return [Turn(conversations[0][-1]["content"], None, "stop", 1)]
            return [Turn("", [{"type": "function", "function": {"name": "b", "arguments": "{}"}}], "tool_calls", 1)]

    only_a = Task(id="t", messages=[{"role": "user", "content": "x"}],
                  tools=[{"type": "function", "function": {"name": "a", "parameters": {}}}])
    rec = asyncio.run(rollout(CallsB(), [only_a], n=1, tools=ToolFactory(make), params=SamplingParams()))[0]
    assert made[0] == ["a"]
    assert rec["messages"][2]["content"].startswith("error: unknown tool 'b' (tools: a)")
    rec = asyncio.run(rollout(CallsB(), [only_a.model_copy(update={"tools": None})], n=1,
                              tools=ToolFactory(make), params=SamplingParams()))[0]
    assert rec["messages"][2]["content"] == "B"


def test_timeouts_and_errors_come_back_as_tool_messages() -> None:
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    def blocking_slow() -> str:
        time.sleep(0.5)
        return "late"

    def boom() -> str:
        raise KeyError("no such row")

    empty = {"type": "object", "properties": {}}
    box = ToolBox([Tool("slow", empty, slow), Tool("bslow", empty, blocking_slow, blocking=True),
                   Tool("boom", empty, boom)], timeout_s=0.05)

    def call(name: str) -> dict[str, Any]:
        return {"function": {"name": name, "arguments": "{}"}}

    async def go() -> list[str]:
        return [await box.arun(call(n)) for n in ("slow", "bslow", "boom", "nope")]

    t0 = time.perf_counter()
    out = asyncio.run(go())
    assert out[0] == "error: slow timed out after 0.05s"
    assert out[1] == "error: bslow timed out after 0.05s"
    assert out[2] == "error: 'no such row'"
    assert out[3].startswith("error: unknown tool 'nope'")
    assert time.perf_counter() - t0 < 2
    assert box.run(call("slow")) == "error: slow is async: run it with arun"


def test_as_tool_reads_schema_objects_and_refuses_others() -> None:
    class WithSchema:
        schema: ClassVar[dict[str, Any]] = {"type": "function",
                                            "function": {"name": "s", "parameters": {"type": "object"}}}

        def fn(self) -> str:
            return "ok"

    t = as_tool(WithSchema())
    assert t.name == "s" and t.fn() == "ok"
    with pytest.raises(TypeError, match="not a tool"):
        as_tool(object())
    with pytest.raises(TypeError, match="returned NoneType"):
        ToolFactory(lambda: None).make()


@pytest.mark.parametrize(("spec", "match"), [
    ("no_colon", "is not MODULE:FUNCTION"),
    ("missing.py:make", "tool file not found"),
    ("env/my_tools.py:nothing", "has no 'nothing'"),
    ("env/my_tools.py:OPENED", "is not callable"),
    ("tgrs_agents.no_such_module:make", "cannot import module 'tgrs_agents.no_such_module'"),
    ("env/broken.py:make", "importing .*broken.py failed: ZeroDivisionError"),
])
def test_bad_factory_is_a_config_error_naming_file_and_field(user_file: Path, spec: str, match: str) -> None:
    (user_file.parent / "broken.py").write_text("1 / 0\n")
    with pytest.raises(ConfigError, match=match) as e:
        load_tool_factory(spec, base_dir=user_file.parent.parent, source="run.toml")
    assert e.value.file == "run.toml" and e.value.field == "tasks.tools"
    assert str(e.value).startswith("run.toml: field 'tasks.tools': ")


def test_check_factory_names_a_missing_tool(user_file: Path) -> None:
    factory = load_tool_factory(str(user_file) + ":make_tools")
    task = Task(id="q1", messages=[{"role": "user", "content": "x"}],
                tools=[{"type": "function", "function": {"name": "sql", "parameters": {}}}])
    with pytest.raises(ConfigError, match=r"task 'q1' names tool 'sql'.*it makes: add") as e:
        check_factory(factory, [task], source="run.toml")
    assert e.value.field == "tasks.tools"
    mod = factory.fn.__globals__
    assert mod["CLOSED"] == mod["OPENED"]  # the tools made to check were closed again
