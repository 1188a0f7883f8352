"""A loop run directory belongs to one config and one arm; another one is refused, naming what changed.

Finished stages are reused on a re-run (:func:`tgrs_agents.loop.stages.run_stage`), which is only
right while they would come out the same. So ``run.json`` records the *identity* of the resolved
config, and :func:`claim` compares it with the one asked for before any stage runs:

* every field of the run config except the ``OPERATIONAL`` ones of its section
  (:mod:`tgrs_agents.loop.config`: generation batch size, device, key variables, prices, and
  ``rounds``, which only says how far to go);
* what the config points at, by content: a task file by its SHA-256, the built-in family by its
  splits' version, the panel by its identity (policy and every teacher's deciding fields, as
  ``tgrs curate`` fingerprints it; only for the filtered arm: accept-all never asks the panel);
* ``[train]`` (the training method and its DPO knobs) unless the method is ``sft``, where none of
  them acts (so a run made before ``[train]`` existed keeps its fingerprint);
* the tool factory (``[tasks] tools``; a file by its SHA-256), the ``[eval] panel`` file and the
  ``[warm_start] file`` by their SHA-256, each only when set (runs made before them keep their fingerprint);
* the arm: ``filtered`` or ``accept_all`` (one directory holds one arm, so a control run into a
  filtered run's directory cannot relabel its numbers).

A different identity is a :class:`~tgrs_agents.errors.RunStoreError` that lists the differing keys
(``sft.steps: 100 -> 60``); ``--force`` moves the old run to ``archive-STAMP/`` and starts afresh, as
``tgrs curate --force`` does. A directory with rounds but no ``run.json`` (made before fingerprints)
is refused the same way: nothing says what made it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..curation.layout import LoopDir
from ..curation.store import atomic_write
from ..errors import RunStoreError
from .config import LoopConfig

MAX_LISTED = 8  # differing keys named in a refusal


def section_identity(model: BaseModel) -> dict[str, Any]:
    """The fields of a config section that decide results, sub-sections nested."""
    out: dict[str, Any] = {}
    for name in type(model).model_fields:
        if name in getattr(model, "OPERATIONAL", ()):
            continue
        value = getattr(model, name)
        out[name] = section_identity(value) if isinstance(value, BaseModel) else _plain(value)
    return out


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def identity(cfg: LoopConfig, arm: str, panel: Any = None) -> dict[str, Any]:
    """What decides this run's results (see the module docstring); ``panel``: the loaded panel or None."""
    ident = section_identity(cfg)
    tasks = ident["tasks"]
    from ..tasks.families import family

    if (fam := family(cfg.tasks.source)) is not None:
        tasks["builtin_splits_version"] = fam.splits_version
    else:
        for key in ("source", "eval_source"):
            name = getattr(cfg.tasks, key)
            path = cfg.resolve(name) if name else None
            if path is not None and path.is_file():
                tasks[key] = f"{name} (sha256 {file_digest(path)})"
    _environment(cfg, ident)
    if cfg.generator is None:  # no [generator]: runs made before it keep their fingerprint
        ident.pop("generator", None)
    if cfg.sft.max_length == type(cfg.sft).model_fields["max_length"].default:  # likewise [sft] max_length
        ident["sft"].pop("max_length", None)
    if cfg.warm_start.file is None:  # runs made before [warm_start] file keep their fingerprint
        ident["warm_start"].pop("file")
    elif (path := cfg.resolve(cfg.warm_start.file)).is_file():
        ident["warm_start"]["file"] = f"{cfg.warm_start.file} (sha256 {file_digest(path)})"
    if cfg.train.method == "sft":  # the DPO knobs do not act; runs made before [train] keep their fingerprint
        ident.pop("train")
    if arm == "accept_all" or panel is None:
        ident.pop("panel")
    else:
        p = panel.identity()
        teachers = {t.pop("name"): t for t in p.pop("teachers")}
        ident["panel"] = {"file": cfg.panel.file, **p, "teacher": teachers}
    return {"arm": arm, **ident}


def _environment(cfg: LoopConfig, ident: dict[str, Any]) -> None:
    """The tool factory and the eval panel: a file by its content, like a task file; left out
    while unset (and the tool timeout while at its default), so runs made before they existed
    keep their fingerprint."""
    tasks = ident["tasks"]
    default_timeout = type(cfg.tasks).model_fields["tool_timeout_s"].default
    if cfg.tasks.tool_timeout_s == default_timeout:
        tasks.pop("tool_timeout_s", None)
    spec = cfg.tasks.tools
    if spec is None:
        tasks.pop("tools", None)
    elif (path := cfg.resolve(spec.rpartition(":")[0])).is_file():
        tasks["tools"] = f"{spec} (sha256 {file_digest(path)})"
    name = cfg.eval.panel
    if name is None:
        ident.pop("eval", None)
        return
    from .evaluate import eval_panel_path

    panel_path = eval_panel_path(cfg)
    ident["eval"] = {"panel": f"{name} (sha256 {file_digest(panel_path)})" if panel_path is not None else name}


def fingerprint(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key: old -> new`` for every key whose value differs (``(unset)`` where one side lacks it)."""
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(a.keys() | b.keys()):
        if a.get(key, ...) != b.get(key, ...):
            show = [json.dumps(x[key]) if key in x else "(unset)" for x in (a, b)]
            out.append(f"{key}: {show[0]} -> {show[1]}")
    return out


def claim(run: LoopDir, ident: dict[str, Any], *, force: bool = False) -> Path | None:
    """Make ``run`` this config's directory: refuse another one's, or (``force``) archive it first.

    Returns the archive the old run went to, if any."""
    problems = mismatch(run, ident)
    archived = None
    if problems:
        if not force:
            raise RunStoreError(f"refusing to continue the run in {run.dir}: " + "; ".join(problems)
                                + ". Use another --out, or --force to archive that run and start afresh.")
        archived = run.archive()
    run.dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run.meta, json.dumps({"arm": ident["arm"], "fingerprint": fingerprint(ident),
                                       "identity": ident}, indent=2))
    return archived


def mismatch(run: LoopDir, ident: dict[str, Any]) -> list[str]:
    """Why ``run`` is not this config's run (empty: it is, or the directory holds no run yet)."""
    if not run.meta.exists():
        if run.rounds():
            return ["it holds rounds but no run.json, so nothing says which config made them"]
        return []
    meta = json.loads(run.meta.read_text())
    if meta.get("fingerprint") == fingerprint(ident):
        return []
    old = meta.get("identity", {})
    if old.get("arm") != ident["arm"]:
        return [f"it holds the {old.get('arm')} arm and this is the {ident['arm']} arm"]
    diffs = differences(old, ident)
    more = f" and {len(diffs) - MAX_LISTED} more" if len(diffs) > MAX_LISTED else ""
    return ["it was made with another config (" + "; ".join(diffs[:MAX_LISTED]) + more + ")"]
