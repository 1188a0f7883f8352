"""Tools an agent may call during a rollout, and the box that runs them safely.

Whatever a model writes, :meth:`ToolBox.execute` answers with a ``tool`` message: an unknown tool,
arguments that are not a JSON object, arguments the function does not take, and exceptions raised
by the function all come back as ``"error: ..."`` content for the model to read, never as raised
exceptions. A weak student's mistakes are data, not crashes.

:meth:`ToolBox.aexecute` is the rollout's path: it also awaits async tools and runs ``blocking``
ones in a worker thread, each under the box's per-call ``timeout_s`` (a call that runs over answers
``error: ... timed out``). :meth:`ToolBox.aclose` runs the tools' ``close`` once the rollout that
owns the box ends (see :mod:`tgrs_agents.tasks.env`: one fresh box per rollout).
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Iterable
from typing import Any

from ..tasks.env import Tool, closers

__all__ = ["Tool", "ToolBox", "calculator_tool"]


class ToolBox:
    """Tools by name. ``execute`` turns one OpenAI-format tool call into one ``tool`` message."""

    def __init__(self, tools: Iterable[Tool] = (), *, max_chars: int = 4000,
                 timeout_s: float | None = None) -> None:
        self.tools: dict[str, Tool] = {}
        self.max_chars = max_chars
        self.timeout_s = timeout_s
        for t in tools:
            if t.name in self.tools:
                raise ValueError(f"two tools named {t.name!r}")
            self.tools[t.name] = t

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema for t in self.tools.values()]

    def execute(self, tool_call: dict[str, Any]) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": tool_call.get("id"), "content": self.run(tool_call)}

    async def aexecute(self, tool_call: dict[str, Any]) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": tool_call.get("id"), "content": await self.arun(tool_call)}

    def run(self, tool_call: dict[str, Any]) -> str:
        """The tool's output as text, or ``"error: ..."`` (sync tools only; the rollout uses :meth:`arun`)."""
        prep = self._prepare(tool_call)
        if isinstance(prep, str):
            return prep
        tool, args = prep
        try:
            out = tool.fn(**args)
            if inspect.isawaitable(out):
                close = getattr(out, "close", None)
                if close is not None:
                    close()  # never awaited here: no "coroutine was never awaited" warning
                return f"error: {tool.name} is async: run it with arun"
        except Exception as e:
            return _error(e)
        return self._text(out)

    async def arun(self, tool_call: dict[str, Any]) -> str:
        """As :meth:`run`, for sync, blocking and async tools alike, each call under ``timeout_s``."""
        prep = self._prepare(tool_call)
        if isinstance(prep, str):
            return prep
        tool, args = prep
        try:
            if tool.blocking and not inspect.iscoroutinefunction(tool.fn):
                out = await asyncio.wait_for(asyncio.to_thread(tool.fn, **args), self.timeout_s)
            else:
                out = tool.fn(**args)
                if inspect.isawaitable(out):
                    out = await asyncio.wait_for(out, self.timeout_s)
        except TimeoutError:
            return f"error: {tool.name} timed out after {self.timeout_s:g}s"
        except Exception as e:
            return _error(e)
        return self._text(out)

    async def aclose(self) -> None:
        """Run every distinct ``close`` of the tools once; a failing close does not stop the others."""
        for close in closers(self.tools.values()):
            try:
                out = close()
                if inspect.isawaitable(out):
                    await out
            except Exception:  # the rollout is over; its record is already complete
                pass

    def _prepare(self, tool_call: dict[str, Any]) -> tuple[Tool, dict[str, Any]] | str:
        """(tool, arguments) of a call, or the ``error: ...`` text that answers it."""
        fn = tool_call.get("function") or {}
        name = fn.get("name")
        tool = self.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return f"error: unknown tool {name!r} (tools: {known})"
        raw = fn.get("arguments")
        try:
            args = (json.loads(raw) if raw.strip() else {}) if isinstance(raw, str) else raw
        except json.JSONDecodeError as e:
            return f"error: arguments are not valid JSON ({e.msg}): {str(raw)[:200]}"
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return f"error: arguments must be a JSON object, got {type(args).__name__}"
        try:
            if tool._signature is not None:
                tool._signature.bind(**args)
        except TypeError as e:
            return f"error: wrong arguments for {tool.name}: {e}"
        return tool, args

    def _text(self, out: Any) -> str:
        text = out if isinstance(out, str) else json.dumps(out, default=str)
        return text if len(text) <= self.max_chars else text[: self.max_chars] + " [truncated]"


def _error(e: Exception) -> str:
    return f"error: {e}" if str(e) else f"error: {type(e).__name__}"


def calculator_tool() -> Tool:
    """The arithmetic task family's calculator: digits and + - * only, never ``eval``."""
    from ..tasks.arithmetic import make_tools

    return make_tools()[0]
