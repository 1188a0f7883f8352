"""``tgrs curate --dry-run``: what a run would call and cost, before it spends anything.

Free teachers (verifiers, local checks) really run; paid teachers are not called. A paid teacher
whose verdict is in the ledger costs nothing; otherwise it counts as a call with its estimated
tokens and price, and its verdict is *unknown*. The cascade then goes on exactly as the real run
would, so a candidate the cheaper teachers already decide costs nothing, and one whose outcome
still depends on unknown verdicts counts every paid teacher it could reach: an upper bound, exact
for the free stages and the cache. Candidates already done in ``--out`` are not counted.

Each paid teacher's bound is priced twice, side by side: online and through the provider's batch API
(:func:`~tgrs_agents.paid.cost.batch_price_for`, about half); ``cost_usd`` is the price of the mode the
teacher is configured in (``mode = "batch"`` or online).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TeacherError
from ..formats import resolve
from ..paid.cost import batch_price_for
from ..paid.services import Services
from ..types import Candidate, Verdict
from .ingest import IdIndex, Invalid, check_format, read_chunks
from .panel import Panel
from .panel_file import PanelConfig
from .store import DoneLines, RunStore, input_fingerprint


@dataclass
class DryStats:
    calls: int = 0
    cache_hits: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0  # in the teacher's own mode
    cost_usd_online: float = 0.0
    cost_usd_batch: float | None = 0.0  # None: no batch price known (a model with no list price)
    mode: str = "online"


@dataclass
class DryReport:
    candidates: int = 0
    invalid: int = 0
    already_done: int = 0
    decided_free: int = 0
    teachers: dict[str, DryStats] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "candidates": self.candidates,
            "invalid": self.invalid,
            "already_done": self.already_done,
            "decided_without_paid_calls": self.decided_free,
            "paid_calls_at_most": sum(t.calls for t in self.teachers.values()),
            "cost_usd_at_most": round(sum(t.cost_usd for t in self.teachers.values()), 6),
            "cost_usd_online_at_most": round(sum(t.cost_usd_online for t in self.teachers.values()), 6),
            "cost_usd_batch_at_most": round(sum(t.cost_usd_batch or t.cost_usd_online
                                                for t in self.teachers.values()), 6),
            "teachers": {n: vars(t) for n, t in self.teachers.items()},
        }


class _Predict:
    """Stands in for a wrapped paid teacher: cached verdicts are real, the rest are unknown."""

    def __init__(self, wrapped: Any, stats: DryStats) -> None:
        self.w = wrapped
        self.stats = stats
        self.name, self.cost_rank, self.inline = wrapped.name, wrapped.cost_rank, False
        self.config = wrapped.config
        c = wrapped.config
        self.batch_price = batch_price_for(c.model, c.price_input_per_mtok, c.price_output_per_mtok) \
            if hasattr(c, "model") else None
        stats.mode = "batch" if getattr(c, "mode", "") == "batch" else "online"

    async def judge(self, cand: Candidate) -> Verdict:
        hit = self.w.lookup(cand) if hasattr(self.w, "lookup") else None
        if hit is not None:
            self.stats.cache_hits += 1
            return hit.model_copy(update={"teacher": self.name, "cached": True})
        est_in, est_out = self.w.estimate(cand)  # a repeated seat's: its k calls' tokens
        self.stats.calls += getattr(self.w, "k", 1)  # ... and its k calls
        self.stats.input_tokens += est_in
        self.stats.output_tokens += est_out
        online = self.w.price.cost(est_in, est_out)
        batch = self.batch_price.cost(est_in, est_out) if self.batch_price is not None else None
        self.stats.cost_usd_online += online
        if batch is None or self.stats.cost_usd_batch is None:
            self.stats.cost_usd_batch = None
        else:
            self.stats.cost_usd_batch += batch
        self.stats.cost_usd += batch if self.stats.mode == "batch" and batch is not None else online
        raise TeacherError("unknown until called", teacher=self.name)

    async def aclose(self) -> None:
        await self.w.aclose()


async def dry_run(input_path: Path, cfg: PanelConfig, out: Path | None, services: Services, *,
                  input_format: str = "auto") -> DryReport:
    """What ``tgrs curate`` would call and spend; ``input_format`` is the run's ``--input-format``
    (the input is read through the same reader, so it counts the same candidates)."""
    fmt, _ = resolve(input_path, input_format)
    panel = Panel.from_config(cfg, services)
    report = DryReport()
    teachers = []
    for t in panel.teachers:
        if getattr(t, "paid", False):
            report.teachers[t.name] = DryStats()
            teachers.append(_Predict(t, report.teachers[t.name]))
        else:
            teachers.append(t)
    # an unknown verdict must stay open, not be dropped as min_successful drops a failed judge
    predict = Panel(teachers, dataclasses.replace(panel.policy, quorum=None))
    done = DoneLines()
    if out is not None and (out / "run.json").exists():
        store = RunStore(out)
        problems = store.mismatch(panel_fp=cfg.fingerprint(), input_fp=input_fingerprint(input_path))
        if problems:  # the real run would refuse this directory: so does its prediction
            raise store.refusal(problems)
        check_format(out, fmt, force=False)  # ... and one read with another reader
        done = store.scan_done()
        report.already_done = done.count
    with tempfile.TemporaryDirectory() as tmp:
        index = IdIndex(Path(tmp) / "ids.sqlite")
        try:
            for _, chunk in read_chunks(input_path, done, index, fmt=fmt):
                for _, item in chunk:
                    if isinstance(item, Invalid):
                        report.invalid += 1
                        continue
                    report.candidates += 1
                    before = sum(s.calls for s in report.teachers.values())
                    await predict.judge(item)
                    report.decided_free += before == sum(s.calls for s in report.teachers.values())
        finally:
            index.close()
            await predict.aclose()
    return report
