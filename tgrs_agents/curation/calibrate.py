"""``tgrs calibrate PANEL LABELLED.jsonl``: how good is each teacher, measured against known labels.

Every teacher of the panel (reserves too) judges every labelled candidate: no short-circuit, since
a teacher's sensitivity needs its verdicts on good candidates and its specificity on bad ones.
Calls cross the paid layer like a run's (limits, retries, budget, the verdict ledger), so a second
calibration of the same file costs nothing.

The input is a JSONL file of candidates (the same records ``tgrs curate`` reads) with a ``label``
field: true (a good candidate: the judges should pass it) or false (1 and 0 are read as such).

The result (``--out calibration.json``) holds per teacher its sensitivity and specificity with 95%
Wilson intervals (exact counts here), its log diagnostic-odds weight, its errors; the prevalence of
good candidates in the file; the panel's own rule scored on the file (precision, recall); and the
unsupervised Dawid-Skene estimates from the same verdicts, to show how far the labels-free
estimate (what ``weights = "auto"`` uses) is from the truth. ``weights = "calibration.json"`` in a
panel file then freezes the weights of a ``weighted_mean`` policy to these rates. The prevalence
is the labelled file's: a run whose candidates are better or worse on the whole than the file's
decides with a prior that is off by as much.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import InputError
from ..types import Candidate, Verdict
from .panel import Panel
from .panel_file import PanelConfig, pydantic_problem
from .reliability import dawid_skene, from_labels


def read_labelled(path: Path) -> list[tuple[Candidate, bool]]:
    """The labelled candidates; an InputError names the file, the line and the field."""
    out = []
    with path.open() as f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except ValueError as e:
                raise InputError(f"not valid JSON ({e})", file=path, line=n) from None
            if not isinstance(rec, dict):
                raise InputError("expected a JSON object", file=path, line=n)
            label = rec.get("label")
            if label not in (True, False, 0, 1):
                raise InputError(f"expected true or false (1 or 0); got {label!r}", file=path, line=n, field="label")
            try:
                out.append((Candidate.model_validate(rec), bool(label)))
            except ValidationError as e:
                field, msg = pydantic_problem(e)
                raise InputError(msg, file=path, line=n, field=field) from None
    if not out:
        raise InputError("no labelled candidates", file=path)
    return out


def _scores(pred: list[bool | None], truth: list[bool]) -> dict[str, Any]:
    tp = sum(bool(p) and t for p, t in zip(pred, truth, strict=True))
    fp = sum(bool(p) and not t for p, t in zip(pred, truth, strict=True))
    fn = sum(p is not True and t for p, t in zip(pred, truth, strict=True))
    undecided = sum(p is None for p in pred)
    right = sum(p is not None and p == t for p, t in zip(pred, truth, strict=True))
    return {"kept": tp + fp, "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "accuracy": round(right / len(truth), 4) if truth else None, "undecided": undecided}


async def calibrate(cfg: PanelConfig, labelled: Path, services: Any, *, max_in_flight: int = 32) -> dict[str, Any]:
    """Judge ``labelled`` with every teacher of ``cfg``; the calibration report (see the module)."""
    items = read_labelled(labelled)
    panel = Panel.from_config(cfg, services)
    teachers = [*panel.teachers, *panel.reserves]
    names = [t.name for t in teachers]
    sem = asyncio.Semaphore(max(1, max_in_flight))

    async def one(c: Candidate) -> dict[str, Verdict]:
        async with sem, asyncio.TaskGroup() as tg:
            tasks = {t.name: tg.create_task(panel._call(t, c)) for t in teachers}
        return {n: task.result() for n, task in tasks.items()}

    try:
        async with asyncio.TaskGroup() as tg:
            jobs = [tg.create_task(one(c)) for c, _ in items]
        heard = [j.result() for j in jobs]
    finally:
        await panel.aclose()
    truth = [label for _, label in items]
    rows = [{n: v.passed for n, v in h.items() if v.error is None} for h in heard]
    rel = from_labels(zip(rows, truth, strict=True), names)
    unsupervised = dawid_skene(rows, names, gold=cfg.gold_names())
    out_teachers = {}
    for n in names:
        pred = [None if h[n].error is not None else h[n].passed for h in heard]
        out_teachers[n] = {**rel.teachers[n].to_json(), "errors": sum(p is None for p in pred),
                           **_scores(pred, truth)}
    seat_pred = [panel.policy.decide({t: h[t] for t in panel.policy.teachers}) for h in heard]
    return {
        "kind": "tgrs-calibration",
        "version": 1,
        "labelled": str(labelled),
        "panel": cfg.source,
        "panel_fingerprint": cfg.fingerprint(),
        "items": len(items),
        "prevalence": round(rel.prevalence, 4),
        "teachers": out_teachers,
        "panel_rule": {"policy": panel.policy.describe(), **_scores(seat_pred, truth)},
        "dawid_skene": unsupervised.to_json(),
        "cost_usd": round(sum(st.cost_usd for st in panel.stats.values()), 6),
        "calls": sum(st.calls for st in panel.stats.values()),
    }
