"""Hand-made traces that each exercise one hygiene rule (every one is a trace the shipped verifier
panel accepts: ``Answer: N`` with N the reference and the last tool result), and what the
``curated`` fixture (conftest.py) hands the tests."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgrs_agents.tasks.arithmetic_data import CALCULATOR_TOOL

ROOT = Path(__file__).resolve().parents[2]
OPENAI_KEY = "sk-proj-" + "Q" * 40
AWS_KEY = "AKIA" + "ABCDEFGHIJKLMNOP"
BEARER = "abcdefghijklmnopqrstuvwxyz0123456789"
PAD = "x" * 3000


def call(cid: str | None, expr: str) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": "calculator",
                                                       "arguments": json.dumps({"expression": expr})}}


def trace(cid: str, messages: list[dict[str, Any]], reference: int, **extra: Any) -> dict[str, Any]:
    return {"id": cid, "task_id": cid, "messages": messages, "tools": [CALCULATOR_TOOL],
            "reference": reference, **extra}


def user(text: Any) -> dict[str, Any]:
    return {"role": "user", "content": text}


def result(cid: str | None, text: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": cid, "content": text}


def answer(n: int) -> dict[str, Any]:
    return {"role": "assistant", "content": f"Answer: {n}"}


HANDMADE = [
    trace("secret", [user(f"My key is {OPENAI_KEY} and {AWS_KEY}. What is 2 + 3?"),
                     {"role": "assistant", "content": None, "tool_calls": [{
                         "id": "c1", "type": "function", "function": {"name": "calculator", "arguments": json.dumps(
                             {"expression": "2+3", "header": f"Authorization: Bearer {BEARER}"})}}]},
                     result("c1", "5"), answer(5)], 5),
    trace("noids", [user("What is 4 + 4?"), {"role": "assistant", "tool_calls": [call(None, "4+4")]},
                    result(None, "8"), answer(8)], 8),
    trace("trailing", [user("What is 1 + 1?"), {"role": "assistant", "tool_calls": [call("t1", "1+1")]},
                       result("t1", "2"), answer(2), user("thanks!"), user("bye")], 2),
    trace("orphans", [user("What is 3 + 3?"),
                      {"role": "assistant", "tool_calls": [call("o1", "3+3"), call("o2", "3*2")]},
                      result("ghost", "99"), result("o1", "6"), answer(6)], 6),
    trace("errored", [user("What is 5 + 5?"), {"role": "assistant", "tool_calls": [call("e1", "5+5")]},
                      result("e1", "10"), answer(10)], 10, metadata={"stop": "error"}),
    trace("long", [user("What is 6 + 6? " + PAD), {"role": "assistant", "tool_calls": [call("l1", "6+6")]},
                   result("l1", "12"), answer(12)], 12),
    trace("unanswered", [user("What is 7 + 7?"), {"role": "assistant", "tool_calls": [call("u1", "7+7")]},
                         result("u1", "14"),
                         {"role": "assistant", "content": "Answer: 14", "tool_calls": [call("u2", "14")]},
                         result("u2", "14")], 14),
    trace("roles", [{"role": "system", "content": "You are careful."}, {"role": "developer", "content": "Be brief."},
                    user("What is 2 * 9?"),
                    {"role": "assistant", "content": "Let me compute.", "tool_calls": [call("r1", "2*9")]},
                    result("r1", "18"), answer(18)], 18),
    trace("parallel", [user("What is 2 + 2 and 2 * 5?"),
                       {"role": "assistant", "tool_calls": [call("p1", "2+2"), call("p2", "2*5")]},
                       result("p1", "4"), result("p2", "10"), answer(10)], 10),
    trace("image", [user([{"type": "text", "text": "What is 9 - 2?"},
                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
                    {"role": "assistant", "tool_calls": [call("i1", "9-2")]}, result("i1", "7"), answer(7)], 7),
]


@dataclass(frozen=True)
class Curated:
    dir: Path
    input: Path
    accepted: dict[str, dict[str, Any]]  # id -> the accepted record, as curate wrote it


def loop_rendering() -> Any:
    """tests/loop/test_rendering.py as a module (its Qwen-style template and ``labelled``), loaded under
    its own name: the export tests render the same way and must not copy the template."""
    import importlib.util
    import sys

    name = "tests_loop_test_rendering"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "loop" / "test_rendering.py")
        assert spec and spec.loader
        sys.modules[name] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]
