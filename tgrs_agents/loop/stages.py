"""Each stage's result as a typed record, and the bookkeeping that makes a finished stage final.

A stage of a round is a function that returns one of the records below. :func:`run_stage` runs it
once: its record (plus ``wall_s``) goes to ``round-K/<stage>.done.json``, and a later run on the
same directory reads the record back instead of running the stage again. The JSON of each record
is the marker's content; :class:`Round` assembles one entry of ``summary.json`` from them (the
report and ``tgrs run``'s table read those keys).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from ..curation.store import atomic_write


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """A finished stage's figures. ``to_json`` / ``from_json`` are the done marker's content."""

    wall_s: float = 0.0
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()  # fields left out of the JSON while None

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name != "wall_s" and not (f.name in self.OPTIONAL and getattr(self, f.name) is None)}
        out["wall_s"] = self.wall_s
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def rate(self) -> str:
        """The first non-zero tokens/s figure, for the log line (", 1,234 gen tokens/s")."""
        return next((f", {v:,.0f} {k.removesuffix('_per_s').replace('_', ' ')}/s"
                     for k, v in self.to_json().items() if k.endswith("tokens_per_s") and v), "")


@dataclass(frozen=True, kw_only=True)
class WarmStart(StageResult):
    """Round 0 of the tiny student: SFT on a small, partly noisy seed set."""

    seed_examples: int
    sft_tokens_per_s: float
    sft_backend: str
    sft_train_s: float
    final_loss: float | None


@dataclass(frozen=True, kw_only=True)
class BaseCheckpoint(StageResult):
    """Round 0 of a real (or served) model: the model itself, no warm start."""

    base_model: str


@dataclass(frozen=True, kw_only=True)
class Evaluated(StageResult):
    """pass@1 and pass@k on the held-out split; JSON keys ``pass@1`` and ``pass@{k}``, and their
    standard errors ``pass@1_se`` and ``pass@{k}_se`` (left out when unknown: one task, or an older marker)."""

    pass1: float
    passk: float
    k: int
    eval_tasks: int
    eval_tokens_per_s: float
    pass1_se: float | None = None
    passk_se: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pass@1": self.pass1}
        if self.pass1_se is not None:
            out["pass@1_se"] = self.pass1_se
        out[f"pass@{self.k}"] = self.passk
        if self.passk_se is not None:
            out[f"pass@{self.k}_se"] = self.passk_se
        return {**out, "eval_tasks": self.eval_tasks, "eval_tokens_per_s": self.eval_tokens_per_s,
                "wall_s": self.wall_s}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        ks = [int(key[5:]) for key in d if key.startswith("pass@") and key[5:].isdigit() and key != "pass@1"]
        k = ks[0] if ks else 1
        return cls(pass1=d["pass@1"], passk=d[f"pass@{k}"], k=k, eval_tasks=d["eval_tasks"],
                   eval_tokens_per_s=d["eval_tokens_per_s"], wall_s=d.get("wall_s", 0.0),
                   pass1_se=d.get("pass@1_se"), passk_se=d.get(f"pass@{k}_se"))


@dataclass(frozen=True, kw_only=True)
class Generated(StageResult):
    """The round's candidates. A streamed round (tgrs_agents.loop.stream) judges them in this stage too:
    ``streamed``, and the wall seconds of generating, of judging (the panel's run, start to end), of
    both at once (``overlap_s``) and of the two together (``gen_judge_s``), left out when not streamed."""

    samples: int
    gen_tokens: int
    gen_tokens_per_s: float
    streamed: bool | None = None
    generate_s: float | None = None
    judge_s: float | None = None
    overlap_s: float | None = None
    gen_judge_s: float | None = None
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"streamed", "generate_s", "judge_s", "overlap_s",
                                                    "gen_judge_s"})


@dataclass(frozen=True, kw_only=True)
class Judged(StageResult):
    """The panel's (or --accept-all's) outcome; ``accepted_file`` is relative to the round directory."""

    accepted: int
    acceptance_rate: float
    calls_saved: int | None = None  # None with --accept-all: no panel ran
    accepted_file: str
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"calls_saved"})


@dataclass(frozen=True, kw_only=True)
class Refined(StageResult):
    """How many candidates kept the original, took the rewrite or were dropped; JSON keys ``refine_*``."""

    counts: dict[str, int] = field(default_factory=dict)
    accepted_file: str

    def to_json(self) -> dict[str, Any]:
        return {**{f"refine_{k}": v for k, v in self.counts.items()}, "accepted_file": self.accepted_file,
                "wall_s": self.wall_s}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(counts={k.removeprefix("refine_"): v for k, v in d.items() if k.startswith("refine_")},
                   accepted_file=d["accepted_file"], wall_s=d.get("wall_s", 0.0))


@dataclass(frozen=True, kw_only=True)
class Pooled(StageResult):
    pooled: int
    new_accepted: int
    set_aside_by_filters: int


@dataclass(frozen=True, kw_only=True)
class Trained(StageResult):
    """The round's SFT step (:func:`tgrs_agents.loop.distill.distill`). ``carried_over``: the pool was
    empty (the panel accepted nothing yet), so nothing was trained and the round keeps the last student."""

    sft_tokens_per_s: float
    sft_backend: str
    sft_rows: int
    sft_train_s: float
    final_loss: float | None
    carried_over: bool | None = None
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"carried_over"})


@dataclass(frozen=True, kw_only=True)
class Paired(StageResult):
    """The round's preference pairs (:func:`tgrs_agents.loop.preference.make_pairs`), written to
    ``pairs_file`` (relative to the round directory); ``counts``: ``pairs``, ``pair_tasks`` and what
    was left out by reason (``pairs_skipped_tie``, ...), the JSON keys as they are."""

    counts: dict[str, int] = field(default_factory=dict)
    pairs_file: str = "pairs.jsonl"

    @property
    def pairs(self) -> int:
        return self.counts.get("pairs", 0)

    def to_json(self) -> dict[str, Any]:
        return {**self.counts, "pairs_file": self.pairs_file, "wall_s": self.wall_s}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Self:
        return cls(counts={k: v for k, v in d.items() if k.startswith("pair") and k != "pairs_file"},
                   pairs_file=d.get("pairs_file", "pairs.jsonl"), wall_s=d.get("wall_s", 0.0))


@dataclass(frozen=True, kw_only=True)
class Preferred(StageResult):
    """The round's DPO step (:func:`tgrs_agents.loop.preference.prefer`); JSON keys ``dpo_*`` in the summary.
    ``carried_over``: no pairs, so nothing was trained and the round keeps the model DPO would start from."""

    pairs: int
    train_s: float
    final_loss: float | None
    reward_accuracy: float | None = None
    reward_margin: float | None = None
    carried_over: bool | None = None
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"reward_accuracy", "reward_margin", "carried_over"})


@dataclass(frozen=True)
class Round:
    """One entry of ``summary.json``: round 0 holds its start, round K the figures of every stage."""

    round: int
    eval: Evaluated
    start: WarmStart | BaseCheckpoint | None = None
    generated: Generated | None = None
    judged: Judged | None = None
    refined: Refined | None = None
    pooled: Pooled | None = None
    trained: Trained | None = None
    paired: Paired | None = None  # train.method "dpo" / "sft+dpo"
    preferred: Preferred | None = None
    cost: dict[str, float] | None = None  # USD paid per stage (tgrs_agents.loop.budget); None: not counted

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"round": self.round, **self.eval.to_json()}
        if self.start is not None:
            out["warm_start"] = self.start.to_json()
        stages: list[StageResult] = [s for s in (self.generated, self.judged, self.refined, self.pooled) if s]
        for s in stages:
            out.update({k: v for k, v in s.to_json().items() if k not in ("wall_s", "accepted_file")})
        if self.trained is not None:  # prefixed, so its final_loss and wall_s stay apart
            out.update({k if k.startswith("sft") else f"sft_{k}": v for k, v in self.trained.to_json().items()})
            stages.append(self.trained)
        if self.paired is not None:
            out.update({k: v for k, v in self.paired.to_json().items() if k not in ("wall_s", "pairs_file")})
            stages.append(self.paired)
        if self.preferred is not None:  # prefixed: dpo_pairs, dpo_train_s, dpo_final_loss, dpo_wall_s, ...
            out.update({f"dpo_{k}": v for k, v in self.preferred.to_json().items()})
            stages.append(self.preferred)
        if self.generated and self.judged and (self.trained or self.preferred):
            out["wall_s"] = round(sum(s.wall_s for s in [*stages, self.eval]), 3)  # the whole round
            walls = {"generate": self.generated.wall_s, "judge": self.judged.wall_s}
            if self.refined is not None:
                walls["refine"] = self.refined.wall_s
            if self.trained is not None:
                walls["sft"] = self.trained.wall_s
            if self.paired is not None and self.preferred is not None:
                walls.update(pairs=self.paired.wall_s, dpo=self.preferred.wall_s)
            out["stage_wall_s"] = {**walls, "eval": self.eval.wall_s}
        if self.cost is not None:  # cost_usd: the round's, every stage; per accepted sample of the round
            total = sum(self.cost.values())
            out["cost_usd"] = round(total, 6)
            out["stage_cost_usd"] = {k: round(v, 6) for k, v in self.cost.items()}
            accepted = self.judged.accepted if self.judged is not None else 0
            out["cost_per_accepted_usd"] = round(total / accepted, 6) if accepted else None
        return out


R = TypeVar("R", bound=StageResult)


def run_stage(marker: Path, kind: type[R], fn: Callable[[], R], *, label: str, live: bool,
              log: Callable[[str], None]) -> R:
    """``fn()`` once: its record is written to ``marker``; if ``marker`` exists it is read back instead."""
    if marker.exists():
        return kind.from_json(json.loads(marker.read_text()))
    marker.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with _spinner(label) if live else contextlib.nullcontext():
        result = fn()
    result = replace(result, wall_s=round(time.perf_counter() - t0, 3))
    atomic_write(marker, json.dumps(result.to_json(), indent=2))
    if not live:
        log(f"[tgrs] {label} done in {result.wall_s:.1f}s{result.rate()}")
    return result


def _spinner(label: str) -> Any:
    """A rich spinner with elapsed time for a running stage on a terminal."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(), transient=True)
    bar.add_task(label, total=None)
    return bar
