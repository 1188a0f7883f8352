"""Panel files: TOML in, a small frozen config out, and errors that name the file and the field.

A panel file holds the acceptance policy and a list of ``[[teacher]]`` tables. A teacher table may
``include = "other.toml"`` (relative to the panel file) to start from a shipped teacher file and
override some of its fields.

The TOML reader (:func:`read_toml`) and the translation of pydantic's errors
(:func:`pydantic_problem`) here are shared by every file a user writes: the run config
(:mod:`tgrs_agents.loop.config`) and the input records (:mod:`tgrs_agents.curate.ingest`) too.
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
from .policy import POLICY_NAMES, Policy, make_policy

_PANEL_KEYS = {"policy", "k", "threshold", "weights", "best_k", "teacher"}


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
    """The resolved panel: the policy and the teachers in cost order."""

    model_config = ConfigDict(frozen=True)
    policy: str = "unanimous"
    k: int | None = None
    threshold: float | None = None
    weights: dict[str, float] = {}
    best_k: int | None = None
    teachers: tuple[TeacherConfig, ...]
    source: str = "<panel>"
    base_dir: str = "."

    def build_policy(self) -> Policy:
        return make_policy(
            self.policy,
            [t.name for t in self.teachers],
            k=self.k,
            threshold=self.threshold,
            weights=self.weights,
            best_k=self.best_k,
        )

    def identity(self) -> dict[str, Any]:
        """What decides outcomes: policy fields and each teacher's identity (no operational knobs)."""
        return {
            "policy": self.policy,
            "k": self.k,
            "threshold": self.threshold,
            "weights": dict(sorted(self.weights.items())),
            "best_k": self.best_k,
            "teachers": sorted((t.identity() for t in self.teachers), key=lambda d: d["name"]),
        }

    def fingerprint(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_toml(self) -> str:
        import tomli_w

        doc: dict[str, Any] = {"policy": self.policy}
        for key in ("k", "threshold", "best_k"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        if self.weights:
            doc["weights"] = dict(self.weights)
        doc["teacher"] = [
            t.model_dump(mode="json", exclude_none=True, by_alias=True) for t in self.teachers
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
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"expected valid TOML: {e}", file=path) from None


def teacher_config(
    table: Mapping[str, Any], *, source: str, where: str, base_dir: Path
) -> TeacherConfig:
    """Validate one teacher table with its kind's config class."""
    data = dict(table)
    if "include" in data:
        inc = Path(str(data.pop("include")))
        inc = inc if inc.is_absolute() else base_dir / inc
        if not inc.is_file():
            raise ConfigError(
                f"included teacher file not found: {inc}", file=source, field=f"{where}.include"
            )
        data = {**read_toml(inc, what="included teacher"), **data}
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
        return cls.Config.model_validate(data)
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
    for i, table in enumerate(tables):
        if not isinstance(table, dict):
            raise ConfigError("expected a table", file=source, field=f"teacher[{i}]")
        teachers.append(teacher_config(table, source=source, where=f"teacher[{i}]", base_dir=base_dir))
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
    try:
        panel = PanelConfig(
            policy=policy,
            k=doc.get("k"),
            threshold=doc.get("threshold"),
            weights=doc.get("weights", {}),
            best_k=doc.get("best_k"),
            teachers=tuple(teachers),
            source=source,
            base_dir=str(base_dir),
        )
    except ValidationError as e:
        loc, msg = pydantic_problem(e, obj="a table")
        raise ConfigError(msg, file=source, field=loc) from None
    try:
        panel.build_policy()
    except ConfigError as e:
        raise ConfigError(e.detail, file=source, field=e.field) from None
    return panel


def load_panel(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> PanelConfig:
    """Read and validate a panel file. ``overrides`` (e.g. from ``--policy``) replace top-level keys."""
    path = Path(path)
    doc = read_toml(path, what="panel")
    if overrides:
        doc = {**doc, **{k: v for k, v in overrides.items() if v is not None}}
    return panel_from_dict(doc, source=str(path), base_dir=path.resolve().parent)
