"""Ready-made ``kind = "python"`` checks for tool-using trajectories.

Use them as ``function = "tgrs_agents.teachers.checks:answer_matches_tool"`` in a panel file, or as
examples of what a user check looks like.
"""

from __future__ import annotations

from ..types import Candidate
from .final_answer import extract_answer, parse_number


def answer_matches_tool(candidate: Candidate) -> tuple[bool, str]:
    """The agent called a tool, and its final answer repeats the last tool result."""
    results = [m.text for m in candidate.messages if m.role == "tool"]
    if not results:
        return False, "no tool was called"
    answer = extract_answer(candidate.final_text)
    if answer is None:
        return False, "no final answer"
    a, r = parse_number(answer), parse_number(results[-1])
    same = (a is not None and r is not None and abs(a - r) < 1e-9) or answer.strip() == results[-1].strip()
    return same, f"answer {answer!r} vs last tool result {results[-1][:40]!r}"
