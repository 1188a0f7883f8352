"""Panel files: TOML in, a small frozen config out, and errors that name the file and the field.

A panel file holds the acceptance policy and a list of ``[[teacher]]`` tables. A teacher table may
``include = "other.toml"`` (relative to the panel file) to start from a shipped teacher file and
override some of its fields.
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


def pydantic_problem(err: ValidationError) -> tuple[str, str]:
    """The first problem of a validation error as (field path, what was expected)."""
    e = err.errors()[0]
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown field (not one this kind takes)"
    elif e["type"] == "missing":
        msg = "required field is missing"
    elif "input" in e and e["type"] not in ("value_error",):
        msg = f"{msg}; got {e['input']!r}"[:300]
    return format_loc(tuple(e["loc"])), msg


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


def _read_toml(path: Path, *, what: str) -> dict[str, Any]:
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
        data = {**_read_toml(inc, what="included teacher"), **data}
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
        loc, msg = pydantic_problem(e)
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
        loc, msg = pydantic_problem(e)
        raise ConfigError(msg, file=source, field=loc) from None
    try:
        panel.build_policy()
    except ConfigError as e:
        raise ConfigError(e.detail, file=source, field=e.field) from None
    return panel


def load_panel(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> PanelConfig:
    """Read and validate a panel file. ``overrides`` (e.g. from ``--policy``) replace top-level keys."""
    path = Path(path)
    doc = _read_toml(path, what="panel")
    if overrides:
        doc = {**doc, **{k: v for k, v in overrides.items() if v is not None}}
    return panel_from_dict(doc, source=str(path), base_dir=path.resolve().parent)
