"""Live progress for long runs: a rich display on a terminal, a plain line per interval otherwise.

The rich display has one bar per stage (read, decided, and each teacher of the cascade: its
calls plus the calls the short-circuit saved), each with its rate and ETA (and, for a paid judge,
its median service time apart from its median wait for the rate limiter: a judge that answers in
50 ms but waits 3 s for a slot is limited by the rate, not the server), and a status line:
accepted %, the run's cost against its budget (every invocation of the directory: what
``--budget-usd`` caps) and, on a resumed run, what this invocation spent; retries and 429s, cache
hits, teacher errors.

It is an event subscriber like any other; it never touches the run itself. The budget and the
count of 429s are not in the events: pass them (``budget_usd=``, ``stats=``), or they are read
from the run's ``summary.json``, which the run rewrites every couple of seconds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ..events import (
    CandidateDecided,
    CandidateInvalid,
    CandidateLoaded,
    Event,
    RunFinished,
    RunStarted,
    RunStopped,
    Sketch,
    VerdictReceived,
)

_SUMMARY_POLL_S = 2.0


def count_lines(path: str) -> int:
    n = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def usd(x: float) -> str:
    """A dollar amount with the digits it needs: 2.00, 0.002."""
    return f"{x:.2f}" if x >= 0.01 or x == 0 else f"{x:.2g}"


def fmt_s(x: float) -> str:
    return f"{x * 1e3:.0f} ms" if x < 1 else f"{x:.1f} s"


class Progress:
    """Counts events and shows them. Use as a context manager around the run.

    ``stats`` (optional) is called at refresh time and may return ``rate_limited`` (429s seen) and
    ``budget_usd``; ``budget_usd`` fixes the budget shown against the cost.
    """

    def __init__(self, total: int | None = None, *, stream: TextIO | None = None,
                 interval_s: float = 5.0, live: bool | None = None, budget_usd: float | None = None,
                 stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.interval_s = interval_s
        self.done = self.accepted = self.rejected = self.failed = self.invalid = self.loaded = 0
        self.errors = self.cache_hits = self.retries = self.rate_limited = 0
        self.cost = 0.0
        self.budget_usd = budget_usd
        self.already = 0
        self.teachers: dict[str, list[int]] = {}  # name -> [calls, saved]
        self.timing: dict[str, tuple[Sketch, Sketch]] = {}  # paid teachers: (service, limiter wait)
        self.cost_before = 0.0  # what earlier invocations of a resumed directory spent
        self._since = 0.0
        self._stats = stats
        self._summary: Path | None = None
        self._polled = 0.0
        self._t0 = time.monotonic()
        self._last = 0.0
        self._rich: Any = None
        self._live: Any = None
        self._tasks: dict[str, Any] = {}

    # --- subscriber ------------------------------------------------------------------------------
    def __call__(self, ev: Event) -> None:
        if isinstance(ev, CandidateLoaded):
            self.loaded += 1
            return self._refresh()
        if isinstance(ev, VerdictReceived):
            v = ev.verdict
            self.errors += v.error is not None
            self.cache_hits += v.cached
            self.cost += v.usage.cost_usd
            self.retries += max(v.usage.requests - 1, 0) if not v.cached else 0
            self.teachers.setdefault(v.teacher, [0, 0])[0] += 1
            if (v.service_s or v.wait_s) and not v.cached:
                service, wait = self.timing.setdefault(v.teacher, (Sketch(), Sketch()))
                service.add(v.service_s)
                wait.add(v.wait_s)
            return None
        if isinstance(ev, CandidateDecided):
            self.done += 1
            a = ev.decision.accepted
            if a is None:
                self.failed += 1
            elif a:
                self.accepted += 1
            else:
                self.rejected += 1
            for name in ev.decision.saved:
                self.teachers.setdefault(name, [0, 0])[1] += 1
        elif isinstance(ev, CandidateInvalid):
            self.done += 1
            self.invalid += 1
        elif isinstance(ev, RunStarted):
            self.already = ev.already_done
            self._summary = Path(ev.run_dir) / "summary.json"
            self._since = time.time() - 1.0  # an older summary.json is an earlier invocation's
            if ev.budget_usd is not None:
                self.budget_usd = ev.budget_usd
            if ev.cost_before_usd:
                self.cost_before = ev.cost_before_usd
        elif isinstance(ev, RunFinished):
            self._take(ev.summary)
        return self._refresh(final=isinstance(ev, RunFinished | RunStopped))

    @property
    def todo(self) -> int | None:
        return None if self.total is None else max(self.total - self.already, 0)

    def _poll(self, force: bool = False) -> None:
        """Figures the events do not carry: the budget and the 429s."""
        now = time.monotonic()
        if not force and now - self._polled < _SUMMARY_POLL_S:
            return
        self._polled = now
        extra: dict[str, Any] = {}
        if self._stats is not None:
            extra = dict(self._stats())
        elif self._summary is not None and self._summary.exists():
            try:
                if self._summary.stat().st_mtime < self._since:
                    return
                extra = json.loads(self._summary.read_text())
            except (OSError, ValueError):
                return
        self._take(extra)

    def _take(self, extra: dict[str, Any]) -> None:
        self.rate_limited = int(extra.get("rate_limited") or self.rate_limited)
        if self.budget_usd is None and extra.get("budget_usd"):
            self.budget_usd = float(extra["budget_usd"])

    def status(self) -> str:
        """The cost is the run's over every invocation, against this invocation's ``--budget-usd``
        (which caps that total); on a resumed run, what this invocation spent follows it."""
        judged = self.accepted + self.rejected
        pct = f"{100 * self.accepted / judged:.1f}%" if judged else "-"
        total = self.cost_before + self.cost
        budget = ""
        if self.budget_usd:
            budget = f" of ${usd(self.budget_usd)} ({100 * total / self.budget_usd:.0f}%)"
        now = f" (this invocation ${self.cost:.4f})" if self.cost_before else ""
        return (f"accepted {pct}, rejected {self.rejected}, invalid {self.invalid}, failed {self.failed}, "
                f"cost ${total:.4f}{budget}{now}, cache hits {self.cache_hits}, retries {self.retries}, "
                f"429s {self.rate_limited}, teacher errors {self.errors}")

    def latency(self, name: str) -> str:
        """A paid teacher's median service time and median wait for its limiter ('' otherwise)."""
        if name not in self.timing:
            return ""
        service, wait = (sk.quantiles((50,))[0] or 0.0 for sk in self.timing[name])
        return f"service p50 {fmt_s(service)}, wait p50 {fmt_s(wait)}"

    def line(self) -> str:
        el = max(time.monotonic() - self._t0, 1e-9)
        total = f"/{self.todo}" if self.total else ""
        eta = ""
        if self.todo and self.done and self.done < self.todo:
            eta = f", ETA {(self.todo - self.done) * el / self.done:,.0f}s"
        lat = "; ".join(f"{n}: {x}" for n in self.timing if (x := self.latency(n)))
        return f"{self.done}{total} done, {self.done / el:,.0f}/s{eta}, {self.status()}" + (f"; {lat}" if lat else "")

    def _refresh(self, final: bool = False) -> None:
        now = time.monotonic()
        if self._rich is not None:
            if final or now - self._last > 0.1:
                self._poll(force=final)
                self._update_bars()
                self._last = now
        elif not self.live and (final or now - self._last >= self.interval_s):
            self._poll(force=final)
            print(f"[tgrs] {self.line()}", file=self.stream, flush=True)
            self._last = now

    # --- the rich display ------------------------------------------------------------------------
    def _bar(self, key: str, label: str) -> Any:
        if key not in self._tasks:
            self._tasks[key] = self._rich.add_task(label, total=self.todo, latency="")
        return self._tasks[key]

    def _update_bars(self) -> None:
        todo = self.todo
        self._rich.update(self._bar("read", "read"), total=todo, completed=self.loaded + self.invalid)
        self._rich.update(self._bar("decided", "decided"), total=todo, completed=self.done)
        for name, (calls, saved) in self.teachers.items():  # invalid lines never reach a teacher
            self._rich.update(self._bar(f"t:{name}", f"  {name}"), total=todo, completed=calls + saved + self.invalid,
                              latency=self.latency(name))

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.text import Text

        return Group(self._rich, Text(self.status(), style="dim"))

    def __enter__(self) -> Progress:
        if self.live:
            from rich.console import Console
            from rich.live import Live
            from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress
            from rich.text import Text

            class Rate(ProgressColumn):
                def render(self, task: Any) -> Text:
                    return Text(f"{task.speed:,.0f}/s" if task.speed else "-/s", style="cyan")

            self._rich = RichProgress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                                      Rate(), TimeRemainingColumn(),
                                      TextColumn("{task.fields[latency]}", style="dim"), expand=False)
            self._live = Live(self, console=Console(file=self.stream), refresh_per_second=8)
            self._live.start()
            self._update_bars()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._poll(force=True)
            self._update_bars()
            self._live.refresh()
            self._live.stop()
