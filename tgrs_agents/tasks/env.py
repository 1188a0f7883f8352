"""Task environments: the tools a task source brings, made fresh for every rollout.

A run names a *tool factory* (``[tasks] tools = "my_pkg.tools:make_tools"``, or
``"path/to/file.py:make_tools"`` relative to the run config): a function, called once per rollout,
that returns the tools that rollout may call. Called with no argument, or with the rollout's
:class:`~tgrs_agents.types.Task` when it takes one (to seed a database per task, say). Each call
makes fresh tools, so a tool may hold state for one rollout only (an in-memory SQLite database, a
scratch directory); the tools' ``close`` runs when that rollout ends. Built-in families bring their
own factory (the arithmetic calculator is :func:`tgrs_agents.tasks.arithmetic.make_tools`).

A factory returns :class:`Tool` objects, or any object with a ``name``, a JSON schema of its
arguments (``parameters``, or an OpenAI ``schema``), a function (``fn``, or the object itself when
callable; sync or async) and optionally ``close``/``aclose``. :func:`as_tool` reads one.

This module sits with the task families (below ``generate``) so that a family can build its tools
without importing upward; :class:`~tgrs_agents.generate.tools.ToolBox` runs them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..teachers.python_fn import load_function
from ..types import Task

_EMPTY = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    """A callable tool: its name, the JSON schema of its arguments, and the Python function.

    ``fn`` may be sync or async. ``close`` (sync or async) releases what the tool holds when its
    rollout ends. A sync ``fn`` runs on the event loop (cheap pure functions, like the calculator,
    or state bound to one thread, like a SQLite connection), where the per-call timeout cannot
    interrupt it; ``blocking = True`` runs it in a worker thread, under the timeout.
    """

    name: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    description: str = ""
    close: Callable[[], Any] | None = field(default=None, compare=False)
    blocking: bool = False
    _signature: inspect.Signature | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            sig: inspect.Signature | None = inspect.signature(self.fn)
        except (TypeError, ValueError):  # some builtins have none: the call itself will tell
            sig = None
        object.__setattr__(self, "_signature", sig)

    @classmethod
    def from_schema(cls, schema: dict[str, Any], fn: Callable[..., Any], **kw: Any) -> Tool:
        """From an OpenAI tool schema (``{"type": "function", "function": {...}}``) and a function."""
        f = schema.get("function", schema)
        return cls(name=f["name"], parameters=f.get("parameters", _EMPTY), fn=fn,
                   description=f.get("description", ""), **kw)

    @property
    def schema(self) -> dict[str, Any]:
        """The OpenAI tool schema the model is shown."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


def as_tool(obj: Any) -> Tool:
    """A :class:`Tool` from whatever a factory returned (see the module docstring); TypeError if
    ``obj`` has no name, no schema or nothing to call."""
    if isinstance(obj, Tool):
        return obj
    schema = getattr(obj, "schema", None)
    fn = getattr(obj, "fn", None) or (obj if callable(obj) else None)
    close = getattr(obj, "aclose", None) or getattr(obj, "close", None)
    if isinstance(schema, dict) and "function" in schema and fn is not None:
        return Tool.from_schema(schema, fn, close=close, blocking=bool(getattr(obj, "blocking", False)))
    name, params = getattr(obj, "name", None), getattr(obj, "parameters", None)
    if not isinstance(name, str) or not isinstance(params, dict) or fn is None:
        raise TypeError(f"not a tool: {obj!r} (a tool needs a name, a JSON schema in 'parameters' "
                        f"or 'schema', and a function in 'fn' or __call__)")
    return Tool(name=name, parameters=params, fn=fn, description=str(getattr(obj, "description", "") or ""),
                close=close, blocking=bool(getattr(obj, "blocking", False)))


class ToolFactory:
    """Makes one rollout's tools: ``factory.make(task)`` -> fresh :class:`Tool` objects."""

    def __init__(self, fn: Callable[..., Iterable[Any]], *, spec: str = "") -> None:
        self.fn = fn
        self.spec = spec or getattr(fn, "__qualname__", repr(fn))
        try:
            params = [p for p in inspect.signature(fn).parameters.values()
                      if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        except (TypeError, ValueError):
            params = []
        self._takes_task = len(params) >= 1

    def make(self, task: Task | None = None) -> list[Tool]:
        """Fresh tools for one rollout of ``task``; TypeError naming the factory when it returns no tools."""
        out = self.fn(task) if self._takes_task else self.fn()
        if out is None or isinstance(out, str | bytes | dict) or not isinstance(out, Iterable):
            raise TypeError(f"tool factory {self.spec} returned {type(out).__name__}, not a list of tools")
        try:
            return [as_tool(t) for t in out]
        except TypeError as e:
            raise TypeError(f"tool factory {self.spec}: {e}") from None


def load_tool_factory(spec: str, *, base_dir: str | Path = ".", source: str | None = None,
                      field: str = "tasks.tools") -> ToolFactory:
    """The factory named by ``"module.path:function"`` or ``"path/to/file.py:function"`` (relative to
    ``base_dir``); every mistake is a ConfigError naming ``source`` and ``field``."""
    try:
        fn = load_function(spec, Path(base_dir))
    except FileNotFoundError as e:
        raise ConfigError(f"tool {e}", file=source, field=field) from None
    except (ValueError, ImportError, AttributeError, TypeError) as e:
        raise ConfigError(str(e), file=source, field=field) from None
    return ToolFactory(fn, spec=spec)


def check_factory(factory: ToolFactory, tasks: Iterable[Task], *, source: str | None = None,
                  field: str = "tasks.tools") -> None:
    """Make one set of tools (closing them again) and check every task's ``tools`` are among them:
    a ConfigError now, not an 'unknown tool' in every trajectory later."""
    tasks = list(tasks)
    try:
        tools = factory.make(tasks[0] if tasks else None)
    except Exception as e:
        raise ConfigError(f"tool factory {factory.spec} failed: {type(e).__name__}: {e}", file=source,
                          field=field) from None
    names = {t.name for t in tools}
    for close in closers(tools):
        out = close()
        if inspect.isawaitable(out):  # an async close: run it to completion here
            import asyncio

            asyncio.run(_await(out))
    for task in tasks:
        for schema in task.tools or ():
            want = (schema.get("function") or schema).get("name")
            if want not in names:
                raise ConfigError(f"task {task.id!r} names tool {want!r}, which {factory.spec} does not make "
                                  f"(it makes: {', '.join(sorted(names)) or 'none'})", file=source, field=field)


def closers(tools: Iterable[Tool]) -> list[Callable[[], Any]]:
    """Each distinct ``close`` of ``tools`` once (two tools over one connection share its close)."""
    out: list[Callable[[], Any]] = []
    for t in tools:
        if t.close is not None and t.close not in out:  # bound methods compare by object and function
            out.append(t.close)
    return out


async def _await(x: Any) -> Any:
    return await x
