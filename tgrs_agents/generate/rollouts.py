"""The agent loop: N trajectories per task, every step one batch.

Each step sends every unfinished conversation to the backend in one call, appends the assistant
turns, runs their tool calls, and appends the ``tool`` messages. A trajectory stops at

* ``"final"``: an assistant turn without tool calls (the answer),
* ``"turns"``: ``max_turns`` assistant turns without an answer,
* ``"tokens"``: ``max_tokens`` generated tokens, or a turn cut by a token limit,
* ``"error"``: a remote backend gave up on it (the turn's ``finish_reason`` starts with ``error``).

The records are candidates for ``tgrs curate`` and the panel: OpenAI-format ``messages`` (assistant
``tool_calls`` with ids and JSON-string arguments, ``tool`` messages answering them), the task's
``tools`` and ``reference``, and ``metadata.stop`` / ``metadata.n_tokens``.

Tools come from one shared ``toolbox`` (stateless tools), or from a ``tools`` factory
(:class:`~tgrs_agents.tasks.env.ToolFactory`): then every trajectory gets a fresh box of its own,
restricted to the tools its task names (when it names any), and closed as soon as that trajectory
stops (or when the rollout fails or is cancelled). A step's tool calls run concurrently across
trajectories (one trajectory's calls in order: they may share state), each under ``tool_timeout_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..tasks.env import ToolFactory
from ..types import Task
from .base import ChatBackend, SamplingParams, Turn
from .tools import ToolBox


@dataclass
class RolloutStats:
    """What one :func:`rollout` call did. Pass one in to have it filled."""

    rollouts: int = 0
    steps: int = 0
    generated_tokens: int = 0
    wall_s: float = 0.0
    stops: Counter[str] = field(default_factory=Counter)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def rollouts_per_s(self) -> float:
        return self.rollouts / self.wall_s if self.wall_s > 0 else 0.0


@dataclass
class _Trajectory:
    task: Task
    k: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    box: ToolBox
    own_box: bool = False  # made for this trajectory alone: closed when it stops
    turns: int = 0
    n_tokens: int = 0
    stop: str | None = None


async def rollout(
    backend: ChatBackend,
    tasks: list[Task],
    *,
    n: int | None = None,
    toolbox: ToolBox | None = None,
    tools: ToolFactory | None = None,
    tool_timeout_s: float | None = None,
    params: SamplingParams,
    max_turns: int = 4,
    max_tokens: int = 256,
    id_prefix: str = "",
    stats: RolloutStats | None = None,
) -> list[dict[str, Any]]:
    """``n`` (default ``params.n``) candidate trajectories per task, in task order then sample order.

    Pass a shared ``toolbox``, or a ``tools`` factory for a fresh box per trajectory (not both)."""
    n = params.n if n is None else n
    if n < 1 or max_turns < 1 or max_tokens < 1:
        raise ValueError("n, max_turns and max_tokens must be >= 1")
    if toolbox is not None and tools is not None:
        raise ValueError("pass a toolbox or a tools factory, not both")
    t0 = time.perf_counter()
    shared = toolbox if toolbox is not None else ToolBox(timeout_s=tool_timeout_s)
    trajs: list[_Trajectory] = []
    try:
        for task in tasks:
            for k in range(n):
                box = _box(tools, task, tool_timeout_s) if tools is not None else shared
                trajs.append(_Trajectory(task, k, [m.model_dump(exclude_none=True) for m in task.messages],
                                         task.tools if task.tools is not None else (box.schemas() or None),
                                         box, own_box=tools is not None))
        active = list(trajs)
        steps = 0
        while active:
            caps = [min(params.max_new_tokens, max_tokens - t.n_tokens) for t in active]
            turns = await backend.complete([t.messages for t in active], [t.tools for t in active],
                                           params, max_new_tokens=caps)
            if len(turns) != len(active):
                raise RuntimeError(f"backend returned {len(turns)} turns for {len(active)} conversations")
            steps += 1
            calls = [(traj, calls) for traj, turn in zip(active, turns, strict=True)
                     if (calls := _advance(traj, turn)) is not None]
            if calls:  # every trajectory's calls at once; each trajectory's in order
                async with asyncio.TaskGroup() as tg:
                    for traj, tcs in calls:
                        tg.create_task(_run_calls(traj, tcs, max_turns=max_turns, max_tokens=max_tokens))
            for t in active:
                if t.stop is not None and t.own_box:
                    t.own_box = False
                    await t.box.aclose()
            active = [t for t in active if t.stop is None]
    finally:  # a failed or cancelled rollout still closes what it opened
        for t in trajs:
            if t.own_box:
                t.own_box = False
                await t.box.aclose()

    if stats is not None:
        stats.rollouts += len(trajs)
        stats.steps += steps
        stats.generated_tokens += sum(t.n_tokens for t in trajs)
        stats.wall_s += time.perf_counter() - t0
        stats.stops.update(t.stop for t in trajs if t.stop)
    return [_record(t, id_prefix) for t in trajs]


def _box(tools: ToolFactory, task: Task, timeout_s: float | None) -> ToolBox:
    """A fresh box for one rollout of ``task``: the factory's tools, only those the task names."""
    made = tools.make(task)
    if task.tools is not None:
        wanted = {(s.get("function") or s).get("name") for s in task.tools}
        made = [t for t in made if t.name in wanted]
    return ToolBox(made, timeout_s=timeout_s)


def _advance(traj: _Trajectory, turn: Turn) -> list[dict[str, Any]] | None:
    """Append the turn; the tool calls to run next (None when the trajectory stopped)."""
    traj.turns += 1
    traj.n_tokens += turn.n_tokens
    reason = turn.finish_reason
    msg: dict[str, Any] = {"role": "assistant", "content": turn.text}
    if turn.tool_calls:
        msg["content"] = turn.text or None
        msg["tool_calls"] = [
            {"id": tc.get("id") or f"call_{traj.turns}_{j}", "type": "function",
             "function": {"name": tc["function"]["name"],
                          "arguments": tc["function"].get("arguments") or "{}"}}
            for j, tc in enumerate(turn.tool_calls)
        ]
    traj.messages.append(msg)
    if reason.startswith("error"):
        traj.stop = "error"
    elif reason.startswith("length"):
        traj.stop = "tokens"  # the turn was cut: its calls are not run, its text is no answer
    elif not turn.tool_calls:
        traj.stop = "final"
    else:
        return list(msg["tool_calls"])
    return None


async def _run_calls(traj: _Trajectory, calls: list[dict[str, Any]], *, max_turns: int,
                     max_tokens: int) -> None:
    for tc in calls:
        traj.messages.append(await traj.box.aexecute(tc))
    if traj.n_tokens >= max_tokens:
        traj.stop = "tokens"
    elif traj.turns >= max_turns:
        traj.stop = "turns"


def _record(t: _Trajectory, id_prefix: str) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": f"{id_prefix}{t.task.id}-s{t.k}",
        "task_id": t.task.id,
        "messages": t.messages,
        "tools": t.tools,
        "reference": t.task.reference,
        "metadata": {"stop": t.stop, "n_tokens": t.n_tokens, "turns": t.turns},
    }
    if t.task.tests is not None:
        rec["tests"] = t.task.tests
    return rec
