"""``kind = "final_answer"``: the answer after the last ``Answer:`` equals the record's reference.

Numbers compare numerically within a tolerance (``1,234``, ``$5``, ``12.0`` and ``3/4`` are read as
numbers); anything else compares as text after folding case and whitespace. A list reference
accepts any of its items.
"""

from __future__ import annotations

import json
import math
import re
from fractions import Fraction
from typing import Any, ClassVar, Literal

from pydantic import Field

from ..errors import TeacherError
from ..types import Candidate, Verdict
from .base import BuildContext, Teacher, TeacherConfig

_NUM_JUNK = re.compile(r"[,$€£%\s]")
_SPACE = re.compile(r"\s+")


class FinalAnswerConfig(TeacherConfig):
    kind: Literal["final_answer"] = "final_answer"
    marker: str = Field("Answer:", min_length=1)
    rel_tol: float = Field(1e-6, ge=0)
    abs_tol: float = Field(1e-9, ge=0)
    case_sensitive: bool = False


def parse_number(text: str) -> float | None:
    """A number written the way models write them, or None."""
    t = _NUM_JUNK.sub("", text).rstrip(".")
    if not t:
        return None
    try:
        return float(t)
    except ValueError:
        pass
    try:
        return float(Fraction(t))
    except (ValueError, ZeroDivisionError):
        return None


def extract_answer(text: str, marker: str = "Answer:") -> str | None:
    """The text after the last ``marker`` up to the end of its line, stripped; None if absent."""
    i = text.rfind(marker)
    if i < 0:
        return None
    rest = text[i + len(marker) :].strip()
    return rest.splitlines()[0].strip() if rest else ""


class FinalAnswerTeacher(Teacher):
    Config = FinalAnswerConfig
    inline: ClassVar[bool] = True
    config: FinalAnswerConfig

    def __init__(self, config: FinalAnswerConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(config, ctx)

    def matches(self, answer: str, reference: Any) -> bool:
        if isinstance(reference, list):
            return any(self.matches(answer, r) for r in reference)
        ref_num = (
            float(reference)
            if isinstance(reference, int | float) and not isinstance(reference, bool)
            else parse_number(str(reference))
        )
        got_num = parse_number(answer)
        if ref_num is not None and got_num is not None:
            c = self.config
            return math.isclose(got_num, ref_num, rel_tol=c.rel_tol, abs_tol=c.abs_tol)
        a, r = _SPACE.sub(" ", answer).strip(), _SPACE.sub(" ", str(reference)).strip()
        if not self.config.case_sensitive:
            a, r = a.casefold(), r.casefold()
        return a == r

    def memo_content(self, candidate: Candidate) -> tuple[str, str] | None:
        """The answer it reads and the reference, for the panel's memo (tgrs_agents.curation.memo)."""
        if candidate.reference is None:
            return None
        answer = extract_answer(candidate.final_text, self.config.marker)
        return repr(answer), json.dumps(candidate.reference, sort_keys=True, default=repr)

    async def judge(self, candidate: Candidate) -> Verdict:
        if candidate.reference is None:
            raise TeacherError("record has no 'reference' to compare against", teacher=self.name)
        answer = extract_answer(candidate.final_text, self.config.marker)
        if answer is None:
            return self.verdict(False, rationale=f"no '{self.config.marker}' in the final message")
        ok = self.matches(answer, candidate.reference)
        return self.verdict(
            ok, rationale=f"answer {answer[:80]!r} {'==' if ok else '!='} {candidate.reference!r}"
        )
