"""Tools an agent may call during a rollout, and the box that runs them safely.

Whatever a model writes, :meth:`ToolBox.execute` answers with a ``tool`` message: an unknown tool,
arguments that are not a JSON object, arguments the function does not take, and exceptions raised
by the function all come back as ``"error: ..."`` content for the model to read, never as raised
exceptions. A weak student's mistakes are data, not crashes.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Tool:
    """A callable tool: its name, the JSON schema of its arguments, and the Python function."""

    name: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    description: str = ""
    _signature: inspect.Signature | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            sig: inspect.Signature | None = inspect.signature(self.fn)
        except (TypeError, ValueError):  # some builtins have none: the call itself will tell
            sig = None
        object.__setattr__(self, "_signature", sig)

    @classmethod
    def from_schema(cls, schema: dict[str, Any], fn: Callable[..., Any]) -> Tool:
        """From an OpenAI tool schema (``{"type": "function", "function": {...}}``) and a function."""
        f = schema.get("function", schema)
        return cls(name=f["name"], parameters=f.get("parameters", {"type": "object", "properties": {}}),
                   fn=fn, description=f.get("description", ""))

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI tool schema the model is shown."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


class ToolBox:
    """Tools by name. ``execute`` turns one OpenAI-format tool call into one ``tool`` message."""

    def __init__(self, tools: Iterable[Tool] = (), *, max_chars: int = 4000) -> None:
        self.tools: dict[str, Tool] = {}
        self.max_chars = max_chars
        for t in tools:
            if t.name in self.tools:
                raise ValueError(f"two tools named {t.name!r}")
            self.tools[t.name] = t

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema for t in self.tools.values()]

    def execute(self, tool_call: dict[str, Any]) -> dict[str, Any]:
        return {"role": "tool", "tool_call_id": tool_call.get("id"), "content": self.run(tool_call)}

    def run(self, tool_call: dict[str, Any]) -> str:
        """The tool's output as text, or ``"error: ..."``."""
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
        try:
            out = tool.fn(**args)
        except Exception as e:
            return f"error: {e}" if str(e) else f"error: {type(e).__name__}"
        text = out if isinstance(out, str) else json.dumps(out, default=str)
        return text if len(text) <= self.max_chars else text[: self.max_chars] + " [truncated]"


def calculator_tool() -> Tool:
    """The arithmetic task family's calculator: digits and + - * only, never ``eval``."""
    from ..tasks.arithmetic import calculator
    from ..tasks.arithmetic_data import CALCULATOR_TOOL

    return Tool.from_schema(CALCULATOR_TOOL, calculator)
