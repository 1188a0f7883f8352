"""Live progress for long runs: a rich display on a terminal, a plain line per interval otherwise.

It is an event subscriber like any other; it never touches the run itself.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from .events import (
    CandidateDecided,
    CandidateInvalid,
    Event,
    RunFinished,
    RunStarted,
    RunStopped,
    VerdictReceived,
)


def count_lines(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


class Progress:
    """Counts events and shows them. Use as a context manager around the run."""

    def __init__(self, total: int | None = None, *, stream: TextIO | None = None,
                 interval_s: float = 5.0, live: bool | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval_s = interval_s
        self.done = self.accepted = self.rejected = self.failed = self.invalid = 0
        self.errors = self.cache_hits = 0
        self.cost = 0.0
        self.already = 0
        self._t0 = time.monotonic()
        self._last = 0.0
        self._rich: Any = None
        self._task: Any = None

    # --- subscriber ------------------------------------------------------------------------------
    def __call__(self, ev: Event) -> None:
        if isinstance(ev, CandidateDecided):
            self.done += 1
            a = ev.decision.accepted
            if a is None:
                self.failed += 1
            elif a:
                self.accepted += 1
            else:
                self.rejected += 1
        elif isinstance(ev, VerdictReceived):
            v = ev.verdict
            self.errors += v.error is not None
            self.cache_hits += v.cached
            self.cost += v.usage.cost_usd
            return
        elif isinstance(ev, CandidateInvalid):
            self.done += 1
            self.invalid += 1
        elif isinstance(ev, RunStarted):
            self.already = ev.already_done
            if self._rich is not None and self.total is not None:
                self._rich.update(self._task, total=max(self.total - self.already, 0))
        self._refresh(final=isinstance(ev, RunFinished | RunStopped))

    def line(self) -> str:
        el = max(time.monotonic() - self._t0, 1e-9)
        judged = self.accepted + self.rejected
        pct = f"{100 * self.accepted / judged:.1f}%" if judged else "-"
        total = f"/{self.total - self.already}" if self.total else ""
        return (f"{self.done}{total} done, {self.done / el:,.0f}/s, accepted {pct}, "
                f"rejected {self.rejected}, invalid {self.invalid}, failed {self.failed}, "
                f"teacher errors {self.errors}, cache hits {self.cache_hits}, cost ${self.cost:.4f}")

    def _refresh(self, final: bool = False) -> None:
        now = time.monotonic()
        if self._rich is not None:
            if final or now - self._last > 0.1:
                self._rich.update(self._task, completed=self.done, status=self.line())
                self._last = now
        elif not self.live and (final or now - self._last >= self.interval_s):
            print(f"[tgrs] {self.line()}", file=self.stream, flush=True)
            self._last = now

    # --- context manager -------------------------------------------------------------------------
    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(
                TextColumn("[bold]curate"), BarColumn(), MofNCompleteColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                console=Console(file=self.stream), refresh_per_second=8,
            )
            self._rich.start()
            self._task = self._rich.add_task("curate", total=self.total, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.update(self._task, completed=self.done, status=self.line())
            self._rich.stop()
