"""Expert iteration (STaR / ReST-EM): generate -> judge -> (refine) -> pool -> SFT -> evaluate, for R rounds.

Round 0 is the starting student: the tiny default, warm-started on seed data, or the model named in
``[student]`` (a local path, a hub name, or a served model), evaluated on the held-out split. Each
round K samples from round K-1's student, lets the panel judge the samples
(:func:`tgrs_agents.curation.run.curate`), optionally has a teacher refine what it accepted, pools it
with earlier rounds (:mod:`tgrs_agents.loop.pool`), fine-tunes (:mod:`tgrs_agents.loop.distill`) and
evaluates (:mod:`tgrs_agents.loop.evaluate`).

Each stage returns a typed record (:mod:`tgrs_agents.loop.stages`) and stages meet only through
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

import asyncio
import json
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..assets import asset_path
from ..curation.layout import LoopDir, RoundDir
from ..curation.store import atomic_write, iter_jsonl
from ..errors import ConfigError, InputError
from ..types import Task
from .budget import SPEND_FILE, BudgetStop, RunBudget, RunBudgetGuard, curate_cost, spend_by_round, total_spent
from .config import GeneratorConfig, LoopConfig
from .evaluate import eval_counts, summarize, task_results
from .fingerprint import claim, identity
from .pool import pool_round
from .sampling import calibration_demonstrations, check_student, load_tasks, rollouts
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

if TYPE_CHECKING:
    from ..paid.services import Services

Log = Callable[[str], None]


def _jsonl(recs: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in recs)


def _pm(value: float, se: float | None) -> str:
    """``0.941 ± 0.012`` (the value alone when its standard error is unknown)."""
    return f"{value:.3f}" if se is None else f"{value:.3f} ± {se:.3f}"


def _paid(r: Round) -> str:
    """``, paid $0.0123 ($0.0004 per accepted)`` for a round that paid for something."""
    total = sum((r.cost or {}).values())
    if total <= 0:
        return ""
    per = f" (${total / r.judged.accepted:.4f} per accepted)" if r.judged and r.judged.accepted else ""
    return f", paid ${total:.4f}{per}"


class ExpertIteration:
    """The loop over one run directory; :meth:`run` does every stage not finished yet.

    ``services`` are the run's paid-call services (limiters, budget, ledger): a served student
    (``backend = "openai"``), the refiner and an API eval panel call through them (default: a
    :class:`~tgrs_agents.loop.budget.RunBudget` that journals each cost to ``spend.jsonl``, and the
    verdict ledger unless ``cache=False``; ``cache_path``: its file, default the user's cache).
    """

    CALIBRATION_TASKS = 128  # held-out demonstrations a student_compat teacher calibrates on

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

    def sft_dir(self, rnd: int) -> Path:
        """Where round ``rnd``'s SFT result is: the round's student, or with ``sft+dpo`` DPO's start
        (``round-K/sft-model``; the previous student when SFT had nothing to train on)."""
        if self.cfg.train.method == "sft":
            return self.model_dir(rnd)
        rd = self.layout.round(rnd)
        out = rd.dir / "sft-model"
        if not out.exists() and rd.done("sft").exists():
            if json.loads(rd.done("sft").read_text()).get("carried_over"):
                return self.model_dir(rnd - 1)
        return out

    def dpo_start(self, rnd: int) -> Path:
        """The model round ``rnd``'s DPO starts from, which is also its reference (tgrs_agents.loop.preference)."""
        return self.sft_dir(rnd) if self.cfg.train.method == "sft+dpo" else self.model_dir(rnd - 1)

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
        if self.chunked:  # with [generate] stream (the default) the panel judges each chunk as it is written
            res, stats = self._streamed(rnd, train, judge=g.stream and not self.accept_all)
            timing = res.timing() if res.streamed else {"streamed": False}
            return Generated(samples=res.samples, gen_tokens=stats.generated_tokens,
                             gen_tokens_per_s=round(stats.tokens_per_s, 1), streamed=timing["streamed"],
                             generate_s=timing.get("generate_s"), judge_s=timing.get("judge_s"),
                             overlap_s=timing.get("overlap_s"), gen_judge_s=timing.get("round_s"))
        recs, stats = self._rollouts(self.cfg.generator or self.model_dir(rnd - 1), train, g.n, g.temperature,
                                     f"r{rnd}-")  # a [generator] samples in the student's place
        atomic_write(self.layout.round(rnd).candidates, _jsonl(recs))
        return Generated(samples=len(recs), gen_tokens=stats.generated_tokens,
                         gen_tokens_per_s=round(stats.tokens_per_s, 1))

    @property
    def chunked(self) -> bool:
        """Whether rounds are sampled in chunks (tgrs_agents.loop.stream) and judged through its feed: a
        local student on the local engine. A served generator or student samples the whole round at once
        (its calls are paid, and a budget sees them per stage), the ray engine splits it over workers, and
        so does a :meth:`_rollouts` of one's own (an override on a subclass or instance: scripted rollouts)."""
        own = "_rollouts" not in vars(self) and getattr(type(self)._rollouts, "own_sampler", False)
        return (own and self.cfg.generate.engine == "local" and self.cfg.generator is None
                and self.cfg.student.backend != "openai")

    def _streamed(self, rnd: int, train: list[Task], *, judge: bool) -> tuple[Any, Any]:
        """Round ``rnd``'s candidates made chunk by chunk into ``candidates.jsonl`` (what a killed run
        kept is kept) and, with ``judge``, judged by the panel: as they are written with ``[generate]
        stream``, else after the round. Returns (StreamResult, RolloutStats)."""
        from ..generate.rollouts import RolloutStats
        from .stream import generate_and_judge, stream_fingerprint, student_chunks

        g, rd, prefix = self.cfg.generate, self.layout.round(rnd), f"r{rnd}-"
        curate = None
        if judge:
            from ..curation.run import CurateRun

            panel = self.round_panel(rnd)
            options = self.judge_options(rnd, panel)

            def curate(feed: Any) -> Any:
                return CurateRun(rd.candidates, panel, rd.curate.dir, options=options, source=feed).run()

        stats = RolloutStats()

        async def go() -> Any:
            async with student_chunks(self.cfg, self.model_dir(rnd - 1), g.n, g.temperature, prefix, self.services,
                                      stats) as chunk:
                return await generate_and_judge(chunk, train, g.n, rd.candidates, judge=curate, stream=g.stream,
                                                chunk_tasks=g.chunk_tasks,
                                                fingerprint=stream_fingerprint(train, g.n, prefix))

        res = asyncio.run(go())
        if res.summary is not None:
            self.budget_stopped(rnd, res.summary)
        return res, stats

    def judge(self, rnd: int, train: list[Task] | None = None) -> Judged:
        rd = self.layout.round(rnd)
        if self.accept_all:
            recs = list(iter_jsonl(rd.candidates))
            atomic_write(rd.file(RoundDir.ALL_ACCEPTED), _jsonl(recs))
            return Judged(accepted=len(recs), acceptance_rate=1.0, accepted_file=RoundDir.ALL_ACCEPTED)
        if self.chunked:  # through the stream's feed (a streamed round was judged as it was generated)
            self.panel_file()  # a missing panel file fails before the tasks are read
            res, _ = self._streamed(rnd, train if train is not None else self.tasks()[0], judge=True)
            return self._judged(res.summary)
        from ..curation.run import curate

        panel = self.round_panel(rnd)
        summary = asyncio.run(curate(rd.candidates, panel, rd.curate.dir, options=self.judge_options(rnd, panel)))
        self.budget_stopped(rnd, summary)
        return self._judged(summary)

    @staticmethod
    def _judged(summary: dict[str, Any]) -> Judged:
        return Judged(accepted=summary["accepted"],
                      acceptance_rate=round(summary["accepted"] / max(summary["valid"], 1), 4),
                      calls_saved=summary["calls_saved"], accepted_file=RoundDir.CURATE_ACCEPTED)

    def round_panel(self, rnd: int) -> Any:
        """The panel that judges round ``rnd``: the panel file, with teachers that follow the student
        pointed at round ``rnd - 1``'s (and its calibration demonstrations)."""
        from ..curation.panel_file import load_panel

        panel = load_panel(self.panel_file())
        return self.student_panel(panel, self.model_dir(rnd - 1), self.calibration(rnd, panel))

    def judge_options(self, rnd: int, panel: Any) -> Any:
        """The round's curate options: the verdict ledger when the panel has priced judges, and the budget
        left once everything else the run paid is counted (curate caps its directory's total)."""
        from ..curation.run import CurateOptions
        from .dryrun import priced

        budget = None
        if self._limit is not None:
            budget = max(self._limit - (total_spent(self.dir) - curate_cost(self.layout.round(rnd).curate.dir)), 0.0)
        return CurateOptions(cache=self.cache and bool(priced(panel)), cache_path=self.cache_path, budget_usd=budget)

    def budget_stopped(self, rnd: int, summary: dict[str, Any]) -> None:
        """Raise :class:`~tgrs_agents.loop.budget.BudgetStop` if the budget stopped the round's curate run
        (its pending candidates are judged when the run resumes with a larger one)."""
        if str(summary.get("stopped") or "").startswith("budget") and self.guard is not None:
            raise BudgetStop(self.guard.line(rnd, "judge", total_spent(self.dir), f"{summary['pending']} "
                                             "candidates not judged yet", during=True), round=rnd, stage="judge")

    def refine(self, rnd: int, accepted_file: str, refiner: Any = None) -> Refined:
        """Teacher rewrites of the accepted data; the round's student keeps, per candidate, the version
        Selective Reflection-Tuning's rule picks (tgrs_agents.loop.refine). Writes round-K/refine/."""
        from ..teachers.student_compat import StudentCompatConfig, StudentCompatTeacher
        from .refine import OpenAIRefiner, refine_file

        r = self.cfg.refine
        out_dir = self.layout.round(rnd).refine
        out_dir.mkdir(parents=True, exist_ok=True)
        if refiner is None:
            assert r.model is not None
            refiner = OpenAIRefiner(r.model, base_url=r.base_url, api_key_env=r.api_key_env, target=r.target,
                                    services=self.services, price_input_per_mtok=r.price_input_per_mtok,
                                    price_output_per_mtok=r.price_output_per_mtok)
        scorer = StudentCompatTeacher(StudentCompatConfig(name="refine_student", kind="student_compat",
                                                          model=str(self.model_dir(rnd - 1))))

        async def go() -> Any:
            try:
                return await refine_file(self.layout.round(rnd).file(accepted_file), out_dir, refiner, scorer)
            finally:
                await scorer.aclose()
                if hasattr(refiner, "aclose"):
                    await refiner.aclose()

        out = asyncio.run(go())
        return Refined(counts=dict(out.counts), accepted_file=RoundDir.REFINED)

    @staticmethod
    def student_panel(panel: Any, student: Path, calibration: Path | None = None) -> Any:
        """Point teachers whose ``model = "{student}"`` (e.g. student_compat) at this round's student;
        those with a ``calibration`` field left unset get ``calibration`` (held-out demonstrations)."""
        def follow(t: Any) -> Any:
            if getattr(t, "model", None) != "{student}":
                return t
            update: dict[str, Any] = {"model": str(student)}
            if calibration is not None and "calibration" in type(t).model_fields and t.calibration is None:
                update["calibration"] = str(calibration)
            return t.model_copy(update=update)

        return panel.model_copy(update={"teachers": tuple(follow(t) for t in panel.teachers)})

    def calibration(self, rnd: int, panel: Any) -> Path | None:
        """Held-out demonstrations for the panel's student_compat teachers that follow the student
        (``round-K/calibration.jsonl``): clean demonstrations of fresh built-in tasks, apart from both
        splits. None for task files (no demonstrations to draw) or when no teacher needs them."""
        wants = any(getattr(t, "kind", "") == "student_compat" and getattr(t, "model", None) == "{student}"
                    and getattr(t, "calibration", "") is None for t in panel.teachers)
        if not wants or self.cfg.tasks.source != "arithmetic":
            return None
        path = self.layout.round(rnd).calibration
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, _jsonl(calibration_demonstrations(self.cfg, self.CALIBRATION_TASKS)))
        return path

    def pool(self, rnd: int, accepted_file: str) -> Pooled:
        """This round's accepted data through the filters, pooled with the previous rounds' pool (the
        accept-all control pools every row, blind to content: see tgrs_agents.loop.pool)."""
        def tokenizer() -> Any:  # length bounds count the student's own tokens
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(self.model_dir(rnd - 1))

        return pool_round(self.layout, rnd, accepted_file, self.cfg.filters, self.cfg.pool_cap_per_task,
                          tokenizer=tokenizer, mode="all" if self.accept_all else self.cfg.pool_mode)

    def sft(self, rnd: int) -> Trained:
        """Fine-tune round ``rnd - 1``'s student on the pool; an empty pool carries the student over."""
        from .distill import distill

        if not any(True for _ in iter_jsonl(self.layout.round(rnd).pool)):
            return Trained(sft_tokens_per_s=0.0, sft_backend="none", sft_rows=0, sft_train_s=0.0,
                           final_loss=None, carried_over=True)
        res = distill(self.model_dir(rnd - 1), self.layout.round(rnd).pool, self.sft_dir(rnd),
                      self.cfg.sft.settings(seed=self.cfg.seed + rnd))
        return Trained(sft_tokens_per_s=round(res.tokens_per_s, 1), sft_backend=res.backend, sft_rows=res.rows,
                       sft_train_s=round(res.train_seconds, 2), final_loss=res.losses[-1] if res.losses else None)

    def pairs(self, rnd: int) -> Paired:
        """Preference pairs from the round's judged candidates to ``round-K/pairs.jsonl``."""
        from .preference import make_pairs

        rd = self.layout.round(rnd)
        return Paired(counts=make_pairs(rd.curate.dir, rd.file("pairs.jsonl"), self.cfg.train.pair_settings()))

    def dpo(self, rnd: int, paired: Paired) -> Preferred:
        """DPO on the round's pairs from :meth:`dpo_start`; no pairs carries that model over."""
        from .preference import prefer

        if paired.pairs == 0:
            return Preferred(pairs=0, train_s=0.0, final_loss=None, carried_over=True)
        res = prefer(self.dpo_start(rnd), self.layout.round(rnd).file(paired.pairs_file), self.model_dir(rnd),
                     self.cfg.train.settings(seed=self.cfg.seed + rnd, lora_r=self.cfg.sft.lora_r))
        return Preferred(pairs=res.pairs, train_s=round(res.train_seconds, 2),
                         final_loss=res.losses[-1] if res.losses else None, reward_accuracy=res.reward_accuracy,
                         reward_margin=res.reward_margin)

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

    def _cost(self, rnd: int) -> dict[str, float]:
        return spend_by_round(self.dir).get(rnd, {})

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

    def summary(self, rounds: list[Round], t0: float, stopped: str | None = None) -> dict[str, Any]:
        """``summary.json``: the arm, k, one entry per round, the cost and the wall time so far;
        ``stopped``: why the run stopped before its last round (the budget), else None."""
        spent = total_spent(self.dir)
        before = self.guard.spent_before if self.guard is not None else 0.0
        accepted = sum(r.judged.accepted for r in rounds if r.judged is not None)
        s = {"arm": self.arm, "method": self.cfg.train.method, "eval_k": self.cfg.eval_k,
             "rounds": [r.to_json() for r in rounds], "cost_usd": round(spent, 6),
             "cost_usd_invocation": round(max(spent - before, 0.0), 6), "budget_usd": self._limit,
             "cost_per_accepted_usd": round(spent / accepted, 6) if accepted else None, "stopped": stopped,
             **self._walls(t0).to_json()}
        atomic_write(self.layout.summary, json.dumps(s, indent=2))
        return s

    def _walls(self, t0: float) -> Any:
        """Wall time over every invocation on this directory (a re-run adds to it, never resets it):
        the earlier invocations' come from the summary.json they left, read once per invocation."""
        from ..events import WallTime

        if getattr(self, "_wall", None) is None:
            try:
                prev = json.loads(self.layout.summary.read_text())
            except (OSError, ValueError):
                prev = None
            self._wall = WallTime.resume(prev if isinstance(prev, dict) else None)
            self._wall.t0 -= time.perf_counter() - t0  # this invocation began at t0
        return self._wall

    def _report(self, rounds: list[Round], t0: float) -> None:
        from ..report.html import maybe_write_report

        self.summary(rounds, t0)
        maybe_write_report(self.dir, log=self.log)
        r, k = rounds[-1], self.cfg.eval_k
        extra = ""
        if r.generated and r.judged and r.pooled:
            extra = (f", accepted {r.judged.accepted}/{r.generated.samples} ({r.judged.acceptance_rate:.0%})"
                     f", pool {r.pooled.pooled}")
        if r.trained and r.trained.carried_over:
            extra += ", nothing to train on: the student carries over"
        if r.paired is not None and r.preferred is not None:
            extra += (f", {r.paired.pairs} pairs" + (": no pairs, DPO carries the model over"
                                                    if r.preferred.carried_over else ""))
        self.log(f"[tgrs] round {r.round}: pass@1 {_pm(r.eval.pass1, r.eval.pass1_se)}, "
                 f"pass@{k} {_pm(r.eval.passk, r.eval.passk_se)}{extra}{_paid(r)} ({time.perf_counter() - t0:.0f}s)")
