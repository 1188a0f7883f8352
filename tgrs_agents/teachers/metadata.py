"""``kind = "metadata"``: a verdict the source already recorded, read from ``candidate.metadata``.

Agent frameworks often log the outcome with the trajectory: tau-bench's ``reward``, an Inspect
scorer's value, SWE-bench's ``resolved``. This teacher reads that field (a dotted path, list
indices as numbers: ``score.match``, ``info.reward_info.reward``, ``test_result.report.resolved``)
and passes the candidate when the value reaches ``threshold`` or equals ``expected`` (a list: any of
them). It costs nothing and never calls out, so it is the natural first stage of a panel::

    [[teacher]]
    name = "reward"
    kind = "metadata"
    field = "reward"
    threshold = 1.0

A record without the field gets an error verdict (the policy treats it as unknown), unless
``default`` says what to assume.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..errors import TeacherError
from ..types import Candidate, Verdict
from .base import BuildContext, Teacher, TeacherConfig

_MISSING = object()
Scalar = bool | int | float | str


class MetadataConfig(TeacherConfig):
    kind: Literal["metadata"] = "metadata"
    field: str = Field(min_length=1, pattern=r"^[^.\s][^\s]*$")  # dotted path into candidate.metadata
    threshold: float | None = None  # pass iff the value (a number or a boolean) is >= this
    expected: Scalar | list[Scalar] | None = None  # pass iff the value equals this (a list: any of it)
    default: Scalar | None = None  # the value to assume when the field is missing (None: an error verdict)

    @model_validator(mode="after")
    def _one_test(self) -> MetadataConfig:
        if (self.threshold is None) == (self.expected is None):
            raise ValueError("expected exactly one of 'threshold' or 'expected'")
        return self


def lookup(data: Any, path: str) -> Any:
    """``data`` at the dotted ``path`` (``a.b.0.c``), or ``_MISSING``."""
    for key in path.split("."):
        if isinstance(data, dict):
            if key not in data:
                return _MISSING
            data = data[key]
        elif isinstance(data, list) and key.lstrip("-").isdigit() and -len(data) <= int(key) < len(data):
            data = data[int(key)]
        else:
            return _MISSING
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


class MetadataTeacher(Teacher):
    Config = MetadataConfig
    inline: ClassVar[bool] = True
    config: MetadataConfig

    def __init__(self, config: MetadataConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(config, ctx)

    async def judge(self, candidate: Candidate) -> Verdict:
        c = self.config
        value = lookup(candidate.metadata, c.field)
        assumed = ""
        if value is _MISSING or value is None:
            if c.default is None:
                raise TeacherError(f"the record has no metadata field {c.field!r} (set 'default' to assume "
                                   "a value)", teacher=self.name)
            value, assumed = c.default, " (assumed: the field is missing)"
        if c.threshold is not None:
            x = _number(value)
            if x is None:
                raise TeacherError(f"metadata field {c.field!r} is {value!r}; expected a number or a boolean "
                                   "to compare with 'threshold'", teacher=self.name)
            ok = x >= c.threshold
            score = min(max(x, 0.0), 1.0) if 0.0 <= x <= 1.0 else float(ok)
            return self.verdict(ok, score, f"{c.field} = {value!r}{assumed} {'>=' if ok else '<'} {c.threshold}")
        wanted = c.expected if isinstance(c.expected, list) else [c.expected]
        ok = any(_same(value, w) for w in wanted)
        return self.verdict(ok, rationale=f"{c.field} = {value!r}{assumed} {'in' if ok else 'not in'} {wanted!r}"
                            if len(wanted) > 1 else f"{c.field} = {value!r}{assumed} {'==' if ok else '!='} "
                            f"{wanted[0]!r}")


def _same(value: Any, wanted: Any) -> bool:
    """Equal, with numbers compared as numbers (``1`` == ``1.0``) but booleans only with booleans."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        return isinstance(value, bool) and isinstance(wanted, bool) and value == wanted
    if isinstance(value, int | float) and isinstance(wanted, int | float):
        return float(value) == float(wanted)
    return bool(value == wanted)
