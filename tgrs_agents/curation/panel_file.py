"""Panel files: TOML in, a small frozen config out, and errors that name the file and the field.

A panel file holds the acceptance policy and a list of ``[[teacher]]`` tables. A teacher table may
``include = "other.toml"`` (relative to the panel file) to start from a shipped teacher file and
override some of its fields.

The TOML reader (:func:`read_toml`) and the translation of pydantic's errors
(:func:`pydantic_problem`) here are shared by every file a user writes: the run config
(:mod:`tgrs_agents.loop.config`) and the input records (:mod:`tgrs_agents.curation.ingest`) too.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError
from ..teachers.base import TeacherConfig, teacher_class
from .jury_file import JURY_KEYS, SeatRole, check_jury, load_calibration, seat_role
from .policy import POLICY_NAMES, Policy, make_policy

_PANEL_KEYS = {"policy", "k", "threshold", "weights", "best_k", "teacher"} | JURY_KEYS


def format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_UNION_TAGS = ("str", "int", "float", "bool", "none", "function-after")


def pydantic_problem(err: ValidationError, *, obj: str = "a JSON object") -> tuple[str | None, str]:
    """The first problem of a validation error as (field path or None, what was expected).

    The one translation of pydantic's errors for users, shared by the config files (panel, run)
    and the input records: union member tags (``str``, ``list[...]``) are dropped from the path,
    and the common kinds read as plain "expected ..." sentences. ``obj`` names an object in the
    user's format ("a table" for TOML).
    """
    e = err.errors(include_url=False)[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p[:1].islower() and "[" in p))
    field = format_loc(tuple(p for p in loc if p not in _UNION_TAGS)) or None
    kind, ctx, got = e["type"], e.get("ctx", {}), e.get("input")
    if kind == "json_invalid":
        return None, f"not valid JSON ({ctx.get('error', 'parse error')})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return field, f"expected {obj}; got {type(got).__name__}"
    if kind == "extra_forbidden":
        return field, "unknown field (not one this kind takes)"
    if kind == "missing":
        return field, "required field is missing"
    if kind == "literal_error":
        return field, f"expected one of {ctx.get('expected')}; got {got!r}"
    if field and field.endswith("content") and kind in ("string_type", "list_type", "dict_type"):
        return field, "expected a string, a list of content-part objects, or null"
    if kind == "string_too_short":
        return field, "expected a non-empty string"
    if kind == "too_short":
        return field, "expected a non-empty list" if isinstance(got, list) else "expected a non-empty string"
    if kind == "string_type":
        return field, f"expected a string; got {type(got).__name__}"
    if kind == "list_type":
        return field, f"expected a list; got {type(got).__name__}"
    msg = e["msg"].removeprefix("Value error, ")
    if kind != "value_error" and "input" in e:
        msg = f"{msg}; got {got!r}"[:300]
    return field, msg


class PanelConfig(BaseModel):
    """The resolved panel: the policy, the teachers in cost order, and the jury settings
    (:mod:`.jury_file`; the decision rule is in :mod:`.policy`)."""

    model_config = ConfigDict(frozen=True)
    policy: str = "unanimous"
    k: int | None = None
    threshold: float | None = None
    weights: dict[str, float] | str = {}  # a table, "auto", or a calibration file
    best_k: int | None = None
    teachers: tuple[TeacherConfig, ...]
    source: str = "<panel>"
    base_dir: str = "."
    margin: float = 0.0
    ties: str | None = None
    min_successful: int | None = None
    reserve: tuple[str, ...] = ()
    student_model: str | tuple[str, ...] | None = None
    audit: float | None = None  # share of candidates judged by every seat (None: 0.1 with "auto", else 0)
    roles: dict[str, SeatRole] = {}
    calibration: dict[str, Any] | None = None  # the file named by weights, as read at load time
    warnings: tuple[str, ...] = ()  # said once at load time (an even majority without a tie rule)

    def role(self, name: str) -> SeatRole:
        return self.roles.get(name, SeatRole())

    def audit_share(self) -> float:
        if self.audit is not None:
            return float(self.audit)
        return 0.1 if self.weights == "auto" else 0.0

    def gold_names(self) -> list[str]:
        return [n for n, r in self.roles.items() if r.gold]

    def build_policy(self) -> Policy:
        from .reliability import Reliability, prior_reliability

        seats = [t.name for t in self.teachers if t.name not in self.reserve]
        rel = None
        if self.weights == "auto":
            rel = prior_reliability(seats, self.gold_names())
        elif isinstance(self.weights, str) and self.calibration is not None:
            rel = Reliability.from_json(self.calibration, source=self.weights)
        return make_policy(
            self.policy,
            seats,
            k=self.k,
            threshold=self.threshold,
            weights=self.weights if isinstance(self.weights, dict) else None,
            best_k=self.best_k,
            ties=self.ties or "reject",
            escalate=[n for n in seats if self.role(n).escalate_only],
            margin=self.margin,
            quorum=self.min_successful,
            reliability=rel,
            rankers=[t.name for t in self.teachers if t.name in seats and getattr(t, "mode", "") == "group"],
        )

    def check_guards(self) -> None:
        """Refuse a judge of the student's model family (see :mod:`.guards`)."""
        from .guards import check_self_judging

        check_self_judging(self.teachers, self.student_model,
                           {n: r.allow_self_judging for n, r in self.roles.items()}, source=self.source,
                           where={t.name: f"teacher[{i}]" for i, t in enumerate(self.teachers)})

    def identity(self) -> dict[str, Any]:
        """What decides outcomes: policy fields and each teacher's identity (no operational knobs).

        The jury settings enter only when set, so the fingerprint of a panel that uses none of
        them is what it always was (its run directories still resume)."""
        weights = self.weights if isinstance(self.weights, str) else dict(sorted(self.weights.items()))
        out: dict[str, Any] = {
            "policy": self.policy,
            "k": self.k,
            "threshold": self.threshold,
            "weights": weights,
            "best_k": self.best_k,
            "teachers": sorted((t.identity() for t in self.teachers), key=lambda d: d["name"]),
        }
        jury = {"margin": self.margin or None, "ties": self.ties, "min_successful": self.min_successful,
                "audit": self.audit,
                "reserve": list(self.reserve) or None,
                "roles": {n: r.non_default() for n, r in sorted(self.roles.items()) if r.non_default()} or None,
                "calibration": self.calibration}
        out.update({k: v for k, v in jury.items() if v is not None})
        return out

    def fingerprint(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_toml(self) -> str:
        import tomli_w

        doc: dict[str, Any] = {"policy": self.policy}
        for key in ("k", "threshold", "best_k", "ties", "min_successful", "student_model", "audit"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        if self.weights:
            doc["weights"] = self.weights if isinstance(self.weights, str) else dict(self.weights)
        if self.margin:
            doc["margin"] = self.margin
        if self.reserve:
            doc["reserve"] = list(self.reserve)
        doc["teacher"] = [
            {**t.model_dump(mode="json", exclude_none=True, by_alias=True), **self.role(t.name).non_default()}
            for t in self.teachers
        ]
        head = f"# resolved panel, from {self.source}\n# fingerprint {self.fingerprint()}\n"
        return head + tomli_w.dumps(doc)


def read_toml(path: Path, *, what: str) -> dict[str, Any]:
    """A TOML config file (panel, teacher, run) as a dict; a missing or unparsable file is a ConfigError."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found", file=path) from None
    except IsADirectoryError:
        raise ConfigError(f"expected a {what} TOML file, got a directory", file=path) from None
    except OSError as e:
        raise ConfigError(f"cannot read the {what} file: {e.strerror or e}", file=path) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"expected valid TOML: {e}", file=path) from None


def teacher_config(
    table: Mapping[str, Any], *, source: str, where: str, base_dir: Path
) -> TeacherConfig:
    """Validate one teacher table with its kind's config class (seat roles are ignored here)."""
    return seat_config(table, source=source, where=where, base_dir=base_dir)[0]


def seat_config(
    table: Mapping[str, Any], *, source: str, where: str, base_dir: Path
) -> tuple[TeacherConfig, SeatRole]:
    """One teacher table: its kind's config and its seat role (:mod:`.jury_file`)."""
    data = dict(table)
    if "include" in data:
        inc = Path(str(data.pop("include")))
        inc = inc if inc.is_absolute() else base_dir / inc
        if not inc.is_file():
            raise ConfigError(
                f"included teacher file not found: {inc}", file=source, field=f"{where}.include"
            )
        data = {**read_toml(inc, what="included teacher"), **data}
    role = seat_role(data, source=source, where=where)
    kind = data.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(
            "expected a teacher kind string, e.g. kind = \"final_answer\"",
            file=source,
            field=f"{where}.kind",
        )
    try:
        cls = teacher_class(kind)
    except ConfigError as e:
        raise ConfigError(e.detail, file=source, field=f"{where}.kind") from None
    try:
        return cls.Config.model_validate(data), role
    except ValidationError as e:
        loc, msg = pydantic_problem(e, obj="a table")
        name = data.get("name")
        label = (f"{where}.{loc}" if loc else where) + (
            f" (teacher {name!r})" if isinstance(name, str) else ""
        )
        raise ConfigError(msg, file=source, field=label) from None


def panel_from_dict(doc: Mapping[str, Any], *, source: str = "<panel>", base_dir: Path) -> PanelConfig:
    unknown = sorted(set(doc) - _PANEL_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown field; expected one of {', '.join(sorted(_PANEL_KEYS))}",
            file=source,
            field=unknown[0],
        )
    tables = doc.get("teacher")
    if not isinstance(tables, list) or not tables:
        raise ConfigError(
            "expected at least one [[teacher]] table", file=source, field="teacher"
        )
    teachers = []
    roles: dict[str, SeatRole] = {}
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError("expected a table", file=source, field=f"teacher[{i}]")
        tc, role = seat_config(table, source=source, where=f"teacher[{i}]", base_dir=base_dir)
        teachers.append(tc)
        if role.non_default():
            roles[tc.name] = role
    names = [t.name for t in teachers]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ConfigError(
            f"expected unique teacher names; {', '.join(dups)} appear more than once",
            file=source,
            field="teacher.name",
        )
    policy = doc.get("policy", "unanimous")
    if policy not in POLICY_NAMES:
        raise ConfigError(
            f"expected one of {', '.join(POLICY_NAMES)}; got {policy!r}", file=source, field="policy"
        )
    teachers.sort(key=lambda t: t.cost_rank)  # stable: file order within a rank
    warnings = check_jury(doc, teachers, roles, source=source)
    weights = doc.get("weights", {})
    student = doc.get("student_model")
    try:
        panel = PanelConfig(
            policy=policy,
            k=doc.get("k"),
            threshold=doc.get("threshold"),
            weights=weights,
            best_k=doc.get("best_k"),
            teachers=tuple(teachers),
            source=source,
            base_dir=str(base_dir),
            margin=doc.get("margin", 0.0),
            ties=doc.get("ties"),
            min_successful=doc.get("min_successful"),
            reserve=tuple(doc.get("reserve", ())),
            student_model=tuple(student) if isinstance(student, list) else student,
            audit=doc.get("audit"),
            roles=roles,
            calibration=(load_calibration(weights, source=source, base_dir=base_dir)
                         if isinstance(weights, str) and weights != "auto" else None),
            warnings=tuple(warnings),
        )
    except ValidationError as e:
        loc, msg = pydantic_problem(e, obj="a table")
        raise ConfigError(msg, file=source, field=loc) from None
    try:
        panel.build_policy()
    except ConfigError as e:
        raise ConfigError(e.detail, file=source, field=e.field) from None
    panel.check_guards()
    return panel


def load_panel(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> PanelConfig:
    """Read and validate a panel file. ``overrides`` (e.g. from ``--policy`` or ``--student-model``)
    replace top-level keys."""
    path = Path(path)
    doc = read_toml(path, what="panel")
    if overrides:
        doc = {**doc, **{k: v for k, v in overrides.items() if v is not None}}
    return panel_from_dict(doc, source=str(path), base_dir=path.resolve().parent)
