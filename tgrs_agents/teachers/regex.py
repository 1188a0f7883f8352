"""``kind = "regex"``: the final assistant message matches (or must not match) a pattern."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from ..types import Candidate, Verdict
from .base import BuildContext, Teacher, TeacherConfig

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


class RegexConfig(TeacherConfig):
    kind: Literal["regex"] = "regex"
    pattern: str = Field(min_length=1)
    must_match: bool = True
    flags: str = ""
    target: Literal["final", "trajectory"] = "final"

    @field_validator("flags")
    @classmethod
    def _flags(cls, v: str) -> str:
        bad = sorted(set(v) - set(_FLAGS))
        if bad:
            raise ValueError(f"expected letters from 'imsx'; got {''.join(bad)!r}")
        return v

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as e:
            raise ValueError(f"expected a Python regular expression; {e}") from None
        return v


class RegexTeacher(Teacher):
    Config = RegexConfig
    inline: ClassVar[bool] = True
    config: RegexConfig

    def __init__(self, config: RegexConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(config, ctx)
        flags = 0
        for f in config.flags:
            flags |= _FLAGS[f]
        self._search = re.compile(config.pattern, flags).search

    def memo_content(self, candidate: Candidate) -> tuple[str]:
        """The text it searches, for the panel's memo (tgrs_agents.curation.memo)."""
        return (self._text(candidate),)

    def _text(self, candidate: Candidate) -> str:
        if self.config.target == "final":
            return candidate.final_text
        return "\n".join(m.text for m in candidate.messages)

    async def judge(self, candidate: Candidate) -> Verdict:
        text = self._text(candidate)
        found = self._search(text) is not None
        ok = found if self.config.must_match else not found
        what = "matches" if found else "does not match"
        return self.verdict(ok, rationale=f"{self.config.target} message {what} /{self.config.pattern}/")
