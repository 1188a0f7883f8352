"""The example's verifiers (``kind = "python"`` teachers, named in ``panel.toml`` and ``eval-panel.toml``).

Each takes a :class:`~tgrs_agents.types.Candidate` (a trajectory with the task's ``reference``) and
returns ``(passed, why)``. Write your own the same way: any check of the trajectory you can code.
"""

from __future__ import annotations

from tgrs_agents.teachers.final_answer import FinalAnswerConfig, FinalAnswerTeacher, extract_answer
from tgrs_agents.types import Candidate

_MATCH = FinalAnswerTeacher(FinalAnswerConfig(name="match", kind="final_answer"))  # numbers within tolerance


def sql_results(candidate: Candidate) -> list[str]:
    """What the ``sql`` tool answered, in order (its error messages left out)."""
    names = {tc.id: tc.function.name for m in candidate.messages if m.role == "assistant"
             for tc in (m.tool_calls or [])}
    return [m.text for m in candidate.messages if m.role == "tool" and names.get(m.tool_call_id) == "sql"
            and not m.text.startswith("error:")]


def correct(candidate: Candidate) -> tuple[bool, str]:
    """The final ``Answer:`` equals the reference (evaluation: what pass@1 counts)."""
    answer = extract_answer(candidate.final_text)
    if answer is None:
        return False, "no 'Answer:' line"
    return bool(_MATCH.matches(answer, candidate.reference)), f"answer {answer!r} vs reference {candidate.reference!r}"


def grounded(candidate: Candidate) -> tuple[bool, str]:
    """The answer was read from the database: the last successful query's result holds it (training:
    a right guess without a query teaches nothing worth keeping)."""
    results = sql_results(candidate)
    answer = extract_answer(candidate.final_text)
    if not results:
        return False, "no successful sql query"
    if answer is None:
        return False, "no 'Answer:' line"
    cells = {c.strip().casefold() for line in results[-1].splitlines() for c in line.split("|")}
    return answer.strip().casefold() in cells, f"answer {answer!r} vs last result {results[-1][:40]!r}"
