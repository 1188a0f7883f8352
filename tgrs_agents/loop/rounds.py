"""Expert iteration (STaR / ReST-EM): generate -> judge -> (refine) -> pool -> SFT -> evaluate, for R rounds.

Round 0 is the starting student: the tiny default, warm-started on seed data, or the model named in
``[student]`` (a local path, a hub name, or a served model), evaluated on the held-out split. Each
round K samples from round K-1's student, lets the panel judge the samples
(:func:`tgrs_agents.curation.run.curate`), optionally has a teacher refine what it accepted, pools it
with earlier rounds (:mod:`tgrs_agents.loop.pool`), fine-tunes (:mod:`tgrs_agents.loop.distill`) and
evaluates (:mod:`tgrs_agents.loop.evaluate`).

:class:`ExpertIteration` holds the run's state and the order of the stages; the stages themselves are
in parts beside it: :mod:`.judging` (judge, refine), :mod:`.training` (pool, sft, pairs, dpo) and
:mod:`.summary` (``summary.json``, the report, a line per round). Each stage returns a typed record
(:mod:`tgrs_agents.loop.stages`) and stages meet only through
files in the run directory (:mod:`tgrs_agents.curation.layout` writes its layout down), so a killed
run resumes at the last finished stage (and the curate stage resumes inside itself). Resuming is
only right for the same config: before any stage runs, :meth:`ExpertIteration.run` checks that the
student can be loaded, that no held-out task is a training task, and that the directory belongs to
this config and arm (:mod:`tgrs_agents.loop.fingerprint`; ``force`` archives another one).

A round whose pool is empty (the panel has accepted nothing yet) trains nothing: the student
carries over to the next round, and the round's entry says ``sft_carried_over``. With ``[train] method``
``dpo`` or ``sft+dpo`` (:mod:`tgrs_agents.loop.preference`) the round also makes preference pairs
(stage ``pairs``, ``round-K/pairs.jsonl``) and runs DPO on them (stage ``dpo``); with ``dpo`` alone there
is no pool and no SFT, and a round without pairs says ``dpo_carried_over``.

Money (:mod:`tgrs_agents.loop.budget`): ``[budget] usd`` caps everything the run pays for, every round
and invocation; the verdict ledger is on (``cache``), so a verdict is never paid for twice. Stages that
may pay start only within the budget; when it is reached the run stops at a stage boundary, says so in
one line, and the same command with a larger budget resumes. ``summary.json`` has each round's cost
(``cost_usd``, ``stage_cost_usd``, ``cost_per_accepted_usd``) and the run's (``cost_usd``, ``budget_usd``).
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..assets import asset_path
from ..curation.layout import LoopDir
from ..curation.store import atomic_write
from ..errors import ConfigError, InputError
from ..types import Task
from .budget import SPEND_FILE, BudgetStop, RunBudget, RunBudgetGuard
from .config import GeneratorConfig, LoopConfig
from .evaluate import eval_counts, summarize, task_results
from .fingerprint import claim, identity
from .judging import JudgeStages, _jsonl
from .sampling import check_student, load_tasks, rollouts
from .stages import (
    BaseCheckpoint,
    Evaluated,
    Generated,
    Judged,
    Paired,
    Pooled,
    Preferred,
    R,
    Refined,
    Round,
    Trained,
    WarmStart,
    run_stage,
)
from .summary import RunSummary
from .training import TrainStages

if TYPE_CHECKING:
    from ..paid.services import Services

Log = Callable[[str], None]


class ExpertIteration(JudgeStages, TrainStages, RunSummary):
    """The loop over one run directory; :meth:`run` does every stage not finished yet.

    ``services`` are the run's paid-call services (limiters, budget, ledger): a served student
    (``backend = "openai"``), the refiner and an API eval panel call through them (default: a
    :class:`~tgrs_agents.loop.budget.RunBudget` that journals each cost to ``spend.jsonl``, and the
    verdict ledger unless ``cache=False``; ``cache_path``: its file, default the user's cache).
    """

    def __init__(self, cfg: LoopConfig, out: str | Path, *, accept_all: bool = False,
                 log: Log | None = None, live: bool | None = None, services: Services | None = None,
                 force: bool = False, cache: bool = True, cache_path: str | None = None) -> None:
        from ..paid.ledger import Ledger
        from ..paid.services import Services

        self.cfg = cfg
        self.dir = Path(out)
        self.layout = LoopDir(self.dir)
        self.accept_all = accept_all
        self.force = force
        self.log = log or (lambda s: print(s, flush=True))
        self._live = sys.stdout.isatty() if live is None else live
        self.cache, self.cache_path = cache, cache_path
        self.services = services or Services(budget=RunBudget(journal=self.dir / SPEND_FILE),
                                             ledger=Ledger(cache_path) if cache else None)
        limit = self.cfg.budget.usd if self.cfg.budget.usd is not None else self.services.budget.limit_usd
        self.guard: RunBudgetGuard | None = None  # made once the directory is claimed (run)
        self._limit = limit
        try:  # our own progress lines replace transformers' per-load progress bars
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass

    def _stage(self, rnd: int, name: str, kind: type[R], fn: Callable[[], R]) -> R:
        return run_stage(self.layout.round(rnd).done(name), kind, partial(self._paying, rnd, name, fn),
                         label=f"round {rnd}: {name}", live=self._live, log=self.log)

    def _paying(self, rnd: int, name: str, fn: Callable[[], R]) -> R:
        """A stage within the budget (see tgrs_agents.loop.budget.RunBudgetGuard.run)."""
        from .dryrun import stage_bound

        if self.guard is None:
            return fn()
        return self.guard.run(rnd, name, fn, lambda: stage_bound(self, rnd, name).usd)

    def model_dir(self, rnd: int) -> Path:
        """The student after round ``rnd`` (round 0 of a real model is the base model itself; a round
        that trained nothing carries the previous one over)."""
        if rnd == 0 and self.cfg.student.model != "tiny":
            return Path(self.cfg.student.model)
        rd = self.layout.round(rnd)
        last = "sft" if self.cfg.train.method == "sft" else "dpo"  # the round's last training stage
        if rnd > 0 and not rd.model.exists() and rd.done(last).exists():
            if json.loads(rd.done(last).read_text()).get("carried_over"):
                return self.model_dir(rnd - 1) if last == "sft" else self.dpo_start(rnd)
        return rd.model

    def tasks(self) -> tuple[list[Task], list[Task]]:
        """(training tasks, held-out tasks) as configured."""
        return load_tasks(self.cfg, log=self.log)

    @property
    def arm(self) -> str:
        return "accept_all" if self.accept_all else "filtered"

    def panel_file(self) -> Path:
        """The panel file: relative to the run config, else one shipped with the package."""
        pfile = self.cfg.resolve(self.cfg.panel.file)
        if not pfile.exists():
            try:
                pfile = asset_path(self.cfg.panel.file)
            except FileNotFoundError:
                raise ConfigError(f"panel file not found: {pfile}", file=self.cfg.source, field="panel.file") from None
        return pfile

    def claim(self) -> None:
        """Make the run directory this config's and arm's, or refuse (see tgrs_agents.loop.fingerprint)."""
        from ..curation.panel_file import load_panel

        panel = None
        if not self.accept_all:
            try:
                panel = load_panel(self.panel_file())
            except ConfigError:
                if self.cfg.rounds > 0:
                    raise  # an evaluation-only run never reads its panel
        archived = claim(self.layout, identity(self.cfg, self.arm, panel), force=self.force)
        if archived is not None:
            self.log(f"[tgrs] --force: the earlier run in {self.dir} moved to {archived}")

    # --- stages --------------------------------------------------------------------------------
    def warm_start(self, train: list[Task], held: list[Task]) -> WarmStart:
        """Round 0: build the tiny student and SFT it on a small, partly noisy seed set."""
        from ..student.tiny import build_model, save, train_tokenizer
        from ..tasks.families import FAMILIES, family
        from .distill import SFTSettings, distill

        ws, r0 = self.cfg.warm_start, self.layout.round(0)
        rng = random.Random(self.cfg.seed)
        seed_tasks = rng.sample(train, min(ws.n_seed, len(train)))
        if ws.file is not None:  # the user's demonstrations (an environment of their own: its tool calls)
            demos = self.seed_file(ws.file, rng, ws.n_seed)
        elif family(self.cfg.tasks.source) is None and any("expression" not in t.metadata for t in seed_tasks):
            raise ConfigError("the tiny student's warm start has built-in demonstrations for arithmetic tasks only: "
                              "name a JSONL of right trajectories of these tasks", file=self.cfg.source,
                              field="warm_start.file")
        else:
            fam = family(self.cfg.tasks.source) or FAMILIES["arithmetic"]  # a task file: arithmetic questions
            demos = fam.seed_demonstrations(seed_tasks, noise=ws.noise, seed=self.cfg.seed)
        corpus = [m.get("content") or "" for d in demos for m in d["messages"]]
        corpus += [t.messages[0].text for t in [*train, *held]]
        tok = train_tokenizer(corpus)
        init = save(build_model(tok, seed=self.cfg.seed), tok, r0.init)
        r0.seed.write_text(_jsonl(demos))
        res = distill(init, r0.seed, self.model_dir(0), SFTSettings(
            steps=ws.steps, batch_size=ws.batch_size, lr=ws.lr, seed=self.cfg.seed, backend=self.cfg.sft.backend))
        return WarmStart(seed_examples=len(demos), sft_tokens_per_s=round(res.tokens_per_s, 1),
                         sft_backend=res.backend, sft_train_s=round(res.train_seconds, 2),
                         final_loss=res.losses[-1] if res.losses else None)

    def seed_file(self, name: str, rng: random.Random, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` demonstrations drawn from ``[warm_start] file`` (trajectories with ``messages``)."""
        import orjson

        path = self.cfg.resolve(name)
        if not path.is_file():
            raise ConfigError(f"warm-start file not found: {path}", file=self.cfg.source, field="warm_start.file")
        rows = []
        for line, raw in enumerate(path.read_bytes().splitlines(), 1):
            try:
                row = orjson.loads(raw) if raw.strip() else None
            except orjson.JSONDecodeError as e:
                raise InputError(f"not valid JSON ({e})", file=path, line=line) from None
            if row is not None and not (isinstance(row, dict) and isinstance(row.get("messages"), list)):
                raise InputError("a demonstration needs a list of 'messages'", file=path, line=line)
            rows += [row] if row is not None else []
        if not rows:
            raise ConfigError(f"no demonstrations in {path}", file=self.cfg.source, field="warm_start.file")
        return rng.sample(rows, min(n, len(rows)))

    def _rollouts(self, model_path: Path | GeneratorConfig, tasks: list[Task], n: int, temperature: float,
                  id_prefix: str) -> tuple[list[dict[str, Any]], Any]:
        return rollouts(self.cfg, model_path, tasks, n, temperature, id_prefix, self.services)

    _rollouts.own_sampler = True  # type: ignore[attr-defined]  # (see chunked: one put in its place samples whole rounds)

    def evaluate(self, rnd: int, held: list[Task]) -> Evaluated:
        """pass@1 and pass@k with standard errors; the per-task counts go to ``round-K/eval.jsonl``."""
        k = self.cfg.eval_k
        recs, stats = self._rollouts(self.model_dir(rnd), held, k, self.cfg.eval_temperature, f"r{rnd}-eval-")
        correct = eval_counts(self.cfg, recs, held, services=self.services)  # the [eval] panel decides
        rd = self.layout.round(rnd)
        rd.dir.mkdir(parents=True, exist_ok=True)
        atomic_write(rd.eval_results, _jsonl(task_results(correct, k)))
        return summarize(correct, k, tokens_per_s=stats.tokens_per_s)

    def generate(self, rnd: int, train: list[Task]) -> Generated:
        g = self.cfg.generate
        if self.journaled:  # chunk by chunk; a local student's chunks are judged as they are written with
            # [generate] stream (the default), a served one's after the round (see journaled)
            res, stats = self._streamed(rnd, train, judge=self.chunked and g.stream and not self.accept_all)
            timing = res.timing() if res.streamed else {"streamed": False}
            return Generated(samples=res.samples, gen_tokens=stats.generated_tokens,
                             gen_tokens_per_s=round(stats.tokens_per_s, 1), streamed=timing["streamed"],
                             generate_s=timing.get("generate_s"), judge_s=timing.get("judge_s"),
                             overlap_s=timing.get("overlap_s"), gen_judge_s=timing.get("round_s"))
        recs, stats = self._rollouts(self.sampler(rnd), train, g.n, g.temperature, f"r{rnd}-")
        atomic_write(self.layout.round(rnd).candidates, _jsonl(recs))
        return Generated(samples=len(recs), gen_tokens=stats.generated_tokens,
                         gen_tokens_per_s=round(stats.tokens_per_s, 1))

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        check_student(self.cfg)
        if self.accept_all and self.cfg.train.method != "sft":
            raise ConfigError("--accept-all judges nothing, so there are no preference pairs: use method = \"sft\"",
                              file=self.cfg.source, field="train.method")
        train, held = self.tasks()
        self.claim()
        self.guard = RunBudgetGuard(self.dir, self._limit, self.services.budget)
        rounds: list[Round] = []
        try:
            return self._rounds(train, held, rounds, t0)
        except BudgetStop as e:  # at a stage boundary: the directory resumes with a larger budget
            from ..report.html import maybe_write_report

            self.log(f"[tgrs] {e}")
            summary = self.summary(rounds, t0, stopped=str(e))
            maybe_write_report(self.dir, log=self.log)
            return summary
        finally:
            if isinstance(self.services.budget, RunBudget):
                self.services.budget.close()
            self.services.close()

    def _rounds(self, train: list[Task], held: list[Task], rounds: list[Round], t0: float) -> dict[str, Any]:
        start: WarmStart | BaseCheckpoint
        if self.cfg.student.model == "tiny":
            start = self._stage(0, "warm_start", WarmStart, lambda: self.warm_start(train, held))
        else:  # a real model: round 0 is the base model itself
            start = self._stage(0, "base_model", BaseCheckpoint,
                                lambda: BaseCheckpoint(base_model=self.cfg.student.model))
        rounds.append(Round(0, self._stage(0, "eval", Evaluated, partial(self.evaluate, 0, held)), start=start,
                            cost=self._cost(0)))
        self._report(rounds, t0)
        for rnd in range(1, self.cfg.rounds + 1):
            gen = self._stage(rnd, "generate", Generated, partial(self.generate, rnd, train))
            judged = self._stage(rnd, "judge", Judged, partial(self.judge, rnd, train))
            refined = None
            if self.cfg.refine.model is not None:
                refined = self._stage(rnd, "refine", Refined, partial(self.refine, rnd, judged.accepted_file))
            accepted_file = (refined or judged).accepted_file
            pooled = trained = paired = preferred = None
            if self.cfg.train.method != "dpo":
                pooled = self._stage(rnd, "pool", Pooled, partial(self.pool, rnd, accepted_file))
                trained = self._stage(rnd, "sft", Trained, partial(self.sft, rnd))
            if self.cfg.train.method != "sft":
                paired = self._stage(rnd, "pairs", Paired, partial(self.pairs, rnd))
                preferred = self._stage(rnd, "dpo", Preferred, partial(self.dpo, rnd, paired))
            ev = self._stage(rnd, "eval", Evaluated, partial(self.evaluate, rnd, held))
            rounds.append(Round(rnd, ev, generated=gen, judged=judged, refined=refined, pooled=pooled,
                                trained=trained, paired=paired, preferred=preferred, cost=self._cost(rnd)))
            self._report(rounds, t0)
        return self.summary(rounds, t0)

