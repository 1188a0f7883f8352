"""The jury keys of a panel file: seat roles, reserves, ties, quorum, calibrated weights, the student.

Top-level keys (beside ``policy``, ``k``, ``threshold``, ``weights``, ``best_k``)::

    weights = "auto"                 # or "calibration.json" (from `tgrs calibrate`), or a table
    margin = 0.1                     # escalation: the base seats' mean score within this of t
    ties = "reject"                  # majority on an even split: reject | accept | escalate
    min_successful = 2               # quorum; failed judges are dropped instead of failing the candidate
    reserve = ["backup_judge"]       # judges (defined as [[teacher]] tables) that fill failed seats
    student_model = "Qwen/Qwen2.5-7B-Instruct"   # or a list: the student and the generator
    audit = 0.1                      # share of candidates every seat judges (default 0.1 with "auto")

Per-teacher keys (in a ``[[teacher]]`` table, any kind; they are roles of the seat, not settings of
the teacher, so they never enter a teacher's cache key)::

    escalate_only = true             # called only when the other seats disagree (see policy.py)
    repeats = 3                      # majority of 3 calls with seeds seed, seed+1, seed+2
    gold = true                      # an exact verifier: anchors the reliability estimates
    allow_self_judging = true        # accept a judge of the student's model family
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ConfigError

JURY_KEYS = frozenset({"margin", "ties", "min_successful", "reserve", "student_model", "audit"})
ROLE_KEYS = frozenset({"escalate_only", "repeats", "gold", "allow_self_judging"})


class SeatRole(BaseModel):
    """How the panel uses a teacher (not what the teacher decides)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    escalate_only: bool = False
    repeats: int = Field(default=1, ge=1, le=15)
    gold: bool = False
    allow_self_judging: bool = False

    def non_default(self) -> dict[str, Any]:
        return self.model_dump(exclude_defaults=True)


def seat_role(data: MutableMapping[str, Any], *, source: str, where: str) -> SeatRole:
    """Take the role keys out of a teacher table (``data`` is changed) and validate them."""
    raw = {k: data.pop(k) for k in list(data) if k in ROLE_KEYS}
    try:
        return SeatRole.model_validate(raw)
    except ValidationError as e:
        err = e.errors(include_url=False)[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{err['msg']}; got {err.get('input')!r}", file=source, field=f"{where}.{key}") from None


def load_calibration(value: str, *, source: str, base_dir: Path) -> dict[str, Any]:
    """A calibration file named by ``weights = "<file>"`` (relative to the panel file)."""
    p = Path(value)
    p = p if p.is_absolute() else base_dir / p
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"calibration file not found: {p} (write one with `tgrs calibrate PANEL "
                          "LABELLED.jsonl --out FILE`, or use weights = \"auto\")",
                          file=source, field="weights") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the calibration file {p}: {e}", file=source, field="weights") from None
    from .reliability import Reliability

    try:
        Reliability.from_json(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{p} is not a calibration file (expected \"prevalence\" and, per teacher, "
                          f"\"sensitivity\" and \"specificity\"; missing {e})", file=source, field="weights") from None
    return doc


def check_jury(doc: Mapping[str, Any], teachers: list[Any], roles: Mapping[str, SeatRole], *,
               source: str) -> list[str]:
    """Cross-field checks of the jury keys (errors) and the load-time warnings (returned)."""
    names = [t.name for t in teachers]
    reserve = doc.get("reserve", [])
    if not isinstance(reserve, list) or not all(isinstance(r, str) for r in reserve):
        raise ConfigError("expected a list of teacher names", file=source, field="reserve")
    for r in reserve:
        if r not in names:
            raise ConfigError(f"{r!r} is not a teacher of this panel (define it as a [[teacher]] table)",
                              file=source, field="reserve")
        if roles.get(r, SeatRole()).escalate_only or roles.get(r, SeatRole()).gold:
            raise ConfigError(f"reserve judge {r!r} cannot be escalate_only or gold", file=source, field="reserve")
    if len(set(reserve)) != len(reserve):
        raise ConfigError("a reserve judge is listed twice", file=source, field="reserve")
    if len(reserve) == len(names):
        raise ConfigError("every teacher is a reserve: at least one must hold a seat", file=source,
                          field="reserve")
    for t in teachers:
        role = roles.get(t.name, SeatRole())
        if role.repeats > 1 and not hasattr(t, "seed"):
            raise ConfigError(f"repeats needs a judge with a seed (kind openai or anthropic); {t.name!r} "
                              f"is kind {t.kind!r}", file=source, field=f"teacher.{t.name}.repeats")
        if role.repeats > 1 and getattr(t, "mode", "pointwise") == "group":
            raise ConfigError("repeats is not supported for mode = 'group' (use debias = 'swap')",
                              file=source, field=f"teacher.{t.name}.repeats")
    weights = doc.get("weights", {})
    if isinstance(weights, str) and doc.get("policy", "unanimous") != "weighted_mean":
        raise ConfigError(f"weights = {weights!r} needs policy = \"weighted_mean\"", file=source, field="weights")
    student = doc.get("student_model")
    if student is not None and not (isinstance(student, str) or (
            isinstance(student, list) and all(isinstance(s, str) for s in student))):
        raise ConfigError("expected a model name or a list of them", file=source, field="student_model")
    audit = doc.get("audit")
    if audit is not None and (isinstance(audit, bool) or not isinstance(audit, int | float) or not 0 <= audit <= 1):
        raise ConfigError(f"expected a share between 0 and 1; got {audit!r}", file=source, field="audit")
    warnings = []
    seats = len(names) - len(reserve)
    if doc.get("policy") == "majority" and seats % 2 == 0 and "ties" not in doc:
        warnings.append(
            f"{source}: policy \"majority\" over {seats} seats can end in a tie ({seats // 2} against "
            f"{seats // 2}) and no tie rule is set, so a tie rejects; say so with ties = \"reject\", or "
            "choose \"accept\" or \"escalate\"")
    return warnings
