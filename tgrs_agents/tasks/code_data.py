"""The code family's vocabulary: what a task asks for, in words and in code, and how it is probed.

A task is a *spec*: a base (``x``, ``sum of xs``, ``len of s``, ...) followed by arithmetic steps
(``times 3``, ``plus 1``). The words map one to one onto a Python expression
(``Write f(xs): max of xs times 3 plus 1.`` -> ``def f(xs):return max(xs)*3+1``), Python's precedence
included, so a sub-million-parameter student can learn the mapping and be judged by unit tests.

Specs are rendered only from these tables, so evaluating a rendered expression (with no builtins
but the few the bases name) never runs anything a task file wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# base key -> (parameter, words, code)
BASES: dict[str, tuple[str, str, str]] = {
    "x": ("x", "x", "x"),
    "sum": ("xs", "sum of xs", "sum(xs)"),
    "max": ("xs", "max of xs", "max(xs)"),
    "min": ("xs", "min of xs", "min(xs)"),
    "len": ("xs", "len of xs", "len(xs)"),
    "first": ("xs", "first of xs", "xs[0]"),
    "last": ("xs", "last of xs", "xs[-1]"),
    "slen": ("s", "len of s", "len(s)"),
}
OPS: dict[str, str] = {"plus": "+", "minus": "-", "times": "*"}
CONSTANTS = range(2, 10)

# the inputs a task's tests call f with (three asserts), and the wider set twins are told apart by
TEST_INPUTS: dict[str, tuple[Any, ...]] = {
    "x": (0, 3, -4),
    "xs": ([3, 1, 2], [5], [-2, 7, 4, 0]),
    "s": ("abc", "hello world", "a"),
}
PROBE_INPUTS: dict[str, tuple[Any, ...]] = {
    "x": (-7, -2, 0, 1, 2, 5, 11, 100),
    "xs": ([3, 1, 2], [5], [-2, 7, 4, 0], [9, 9], [1, 2, 3, 4, 5, 6], [-5, -1]),
    "s": ("", "abc", "hello world", "a", "xy z"),
}
_BUILTINS = {"sum": sum, "max": max, "min": min, "len": len}

Steps = Sequence[tuple[str, int]]


def check_spec(base: str, steps: Steps) -> None:
    """ValueError unless ``base`` and every step come from the tables above."""
    if base not in BASES:
        raise ValueError(f"unknown base {base!r}")
    for word, c in steps:
        if word not in OPS or not isinstance(c, int) or isinstance(c, bool) or not -1000 < c < 1000:
            raise ValueError(f"bad step {(word, c)!r}")


def param(base: str) -> str:
    return BASES[base][0]


def prompt(base: str, steps: Steps) -> str:
    words = " ".join([BASES[base][1], *(f"{w} {c}" for w, c in steps)])
    return f"Write f({param(base)}): {words}."


def expression(base: str, steps: Steps) -> str:
    return BASES[base][2] + "".join(f"{OPS[w]}{c}" for w, c in steps)


def solution(base: str, steps: Steps) -> str:
    """The reference function, as the student is taught to write it: on one line (for a character-level
    student every character is a chance to slip, and a 128-position one has few to spare)."""
    return f"def f({param(base)}):return {expression(base, steps)}\n"


def answer(code: str) -> str:
    """A final answer: the code in an untagged fence (the ``code_tests`` teacher runs the last one)."""
    return f"```\n{code}```"


def call(base: str, steps: Steps, arg: Any) -> Any:
    """f(arg) for a spec, evaluated from the tables' own expression (see the module docstring)."""
    check_spec(base, steps)
    return eval(expression(base, steps), {"__builtins__": _BUILTINS}, {param(base): arg})  # noqa: S307


def tests(base: str, steps: Steps) -> str:
    """Plain asserts over :data:`TEST_INPUTS` (type-checked: ``3.0`` is not ``3``)."""
    lines = []
    for arg in TEST_INPUTS[param(base)]:
        want = call(base, steps, arg)
        lines.append(f"assert f({arg!r}) == {want!r} and type(f({arg!r})) is {type(want).__name__}")
    return "\n".join(lines) + "\n"


def canonical(base: str, steps: Steps) -> str:
    """What the function does, not how it is worded: its parameter kind and its outputs on
    :data:`PROBE_INPUTS` (``x plus 3 minus 1`` and ``x minus 1 plus 3`` are one problem)."""
    p = param(base)
    return f"code:{p}:" + ",".join(repr(call(base, steps, a)) for a in PROBE_INPUTS[p])
