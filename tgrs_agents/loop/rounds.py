"""Expert iteration (STaR / ReST-EM): generate -> judge -> pool -> SFT -> evaluate, for R rounds.

Run directory::

    DIR/round-0/model/            the warm-started student (tiny default) or the base model's eval
    DIR/round-K/candidates.jsonl  N rollouts per training task from the round's student
    DIR/round-K/curate/           the panel's run directory (accepted.jsonl, verdicts, summary)
    DIR/round-K/pool.jsonl        accepted data pooled over rounds (deduplicated, capped per task)
    DIR/round-K/model/            the student after this round's SFT
    DIR/round-K/<stage>.done.json each finished stage's figures; a re-run skips finished stages
    DIR/summary.json              per-round pass@1, pass@k, acceptance, samples, tokens/s, wall time

Stages are functions over batches that meet only through files, so a killed run resumes at the
last finished stage (and the curate stage resumes inside itself).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ..assets import asset_path
from ..curate.store import atomic_write, iter_jsonl
from ..types import Candidate, Task
from .config import LoopConfig

Log = Callable[[str], None]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def dedupe_key(rec: dict[str, Any]) -> tuple[str, str, str]:
    """Same task, same tool-call sequence and same final answer count once."""
    calls = []
    final = ""
    for m in rec["messages"]:
        for tc in m.get("tool_calls") or []:
            fn = tc.get("function", {})
            args = fn.get("arguments")
            calls.append(f"{fn.get('name')}:{args if isinstance(args, str) else json.dumps(args, sort_keys=True)}")
        if m.get("role") == "assistant" and not m.get("tool_calls"):
            final = str(m.get("content") or "").strip()
    return rec["task_id"], "|".join(calls), final


def pool_accepted(previous: list[dict[str, Any]], new: list[dict[str, Any]], cap: int) -> list[dict[str, Any]]:
    """Newest first, one per dedupe key, at most ``cap`` per task."""
    seen: set[tuple[str, str, str]] = set()
    per_task: dict[str, int] = {}
    out = []
    for rec in [*new, *previous]:
        key = dedupe_key(rec)
        if key in seen or per_task.get(rec["task_id"], 0) >= cap:
            continue
        seen.add(key)
        per_task[rec["task_id"]] = per_task.get(rec["task_id"], 0) + 1
        out.append({k: rec[k] for k in ("id", "task_id", "messages", "tools") if k in rec})
    return out


class ExpertIteration:
    def __init__(self, cfg: LoopConfig, out: str | Path, *, accept_all: bool = False,
                 log: Log | None = None, live: bool | None = None) -> None:
        self.cfg = cfg
        self.dir = Path(out)
        self.accept_all = accept_all
        self.log = log or (lambda s: print(s, flush=True))
        self._live = sys.stdout.isatty() if live is None else live
        self.dir.mkdir(parents=True, exist_ok=True)
        try:  # our own progress lines replace transformers' per-load progress bars
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass

    # --- stage bookkeeping ---------------------------------------------------------------------
    def _stage(self, rnd: int, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        marker = self.dir / f"round-{rnd}" / f"{name}.done.json"
        if marker.exists():
            return dict(json.loads(marker.read_text()))
        marker.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with self._show(f"round {rnd}: {name}"):
            result = fn()
        result["wall_s"] = round(time.perf_counter() - t0, 3)
        atomic_write(marker, json.dumps(result, indent=2))
        if not self._live:
            rate = next((f", {v:,.0f} {k.removesuffix('_per_s').replace('_', ' ')}/s"
                         for k, v in result.items() if k.endswith("tokens_per_s") and v), "")
            self.log(f"[tgrs] round {rnd}: {name} done in {result['wall_s']:.1f}s{rate}")
        return result

    def _show(self, label: str) -> Any:
        """A rich spinner with elapsed time for a running stage on a terminal; nothing otherwise."""
        import contextlib

        if not self._live:
            return contextlib.nullcontext()
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        bar = Progress(SpinnerColumn(), TextColumn("[bold]{task.description}"), TimeElapsedColumn(),
                       transient=True)
        bar.add_task(label, total=None)
        return bar

    def model_dir(self, rnd: int) -> Path:
        """The student after round ``rnd`` (round 0 of a real model is the base model itself)."""
        if rnd == 0 and self.cfg.student.model != "tiny":
            return Path(self.cfg.student.model)
        return self.dir / f"round-{rnd}" / "model"

    # --- tasks ---------------------------------------------------------------------------------
    def tasks(self) -> tuple[list[Task], list[Task]]:
        t = self.cfg.tasks
        if t.source == "arithmetic":
            from ..tasks.arithmetic import Difficulty, splits

            return splits(t.n_train, t.n_eval, seed=t.seed, d=Difficulty(n_ops=t.n_ops))
        train = [Task.model_validate(r) for r in iter_jsonl(self.cfg.resolve(t.source))]
        if t.eval_source is None:
            raise ValueError("tasks.eval_source is required with a task file")
        held = [Task.model_validate(r) for r in iter_jsonl(self.cfg.resolve(t.eval_source))]
        return train[: t.n_train], held[: t.n_eval]

    # --- stages --------------------------------------------------------------------------------
    def warm_start(self, train: list[Task], held: list[Task]) -> dict[str, Any]:
        """Round 0: build the tiny student and SFT it on a small, partly noisy seed set."""
        from ..student.tiny import build_model, save, train_tokenizer
        from ..tasks.arithmetic import seed_demonstrations
        from .distill import SFTSettings, distill

        ws = self.cfg.warm_start
        rng = random.Random(self.cfg.seed)
        seed_tasks = rng.sample(train, min(ws.n_seed, len(train)))
        demos = seed_demonstrations(seed_tasks, noise=ws.noise, seed=self.cfg.seed)
        corpus = [m.get("content") or "" for d in demos for m in d["messages"]]
        corpus += [t.messages[0].text for t in [*train, *held]]
        tok = train_tokenizer(corpus)
        init = save(build_model(tok, seed=self.cfg.seed), tok, self.dir / "round-0" / "init")
        seed_path = self.dir / "round-0" / "seed.jsonl"
        seed_path.write_text("".join(json.dumps(d) + "\n" for d in demos))
        res = distill(init, seed_path, self.model_dir(0), SFTSettings(
            steps=ws.steps, batch_size=ws.batch_size, lr=ws.lr, seed=self.cfg.seed,
            backend=self.cfg.sft.backend))
        return {"seed_examples": len(demos), "sft_tokens_per_s": round(res.tokens_per_s, 1),
                "sft_backend": res.backend, "sft_train_s": round(res.train_seconds, 2),
                "final_loss": res.losses[-1] if res.losses else None}

    def _backend(self, model_path: Path | str) -> Any:
        s = self.cfg.student
        if s.backend == "vllm":
            from ..generate.vllm_backend import VLLMBackend

            return VLLMBackend(str(model_path))
        from ..generate.hf import TransformersBackend

        return TransformersBackend(str(model_path), device=s.device,
                                   batch_size=self.cfg.generate.batch_size)

    def _rollouts(self, model_path: Path, tasks: list[Task], n: int, temperature: float,
                  id_prefix: str) -> tuple[list[dict[str, Any]], Any]:
        from ..generate.base import SamplingParams
        from ..generate.rollout import RolloutStats, rollout
        from ..generate.tools import ToolBox, calculator_tool

        g = self.cfg.generate
        params = SamplingParams(n=n, temperature=temperature, top_p=g.top_p,
                                max_new_tokens=g.max_new_tokens, seed=self.cfg.seed)

        async def go() -> tuple[list[dict[str, Any]], Any]:
            backend = self._backend(model_path)
            stats = RolloutStats()
            try:
                recs = await rollout(backend, tasks, n=n, toolbox=ToolBox([calculator_tool()]),
                                     params=params, max_turns=g.max_turns, max_tokens=g.max_tokens,
                                     id_prefix=id_prefix, stats=stats)
                return recs, stats
            finally:
                await backend.aclose()

        return asyncio.run(go())

    def evaluate(self, rnd: int, held: list[Task]) -> dict[str, Any]:
        from ..teachers.final_answer import FinalAnswerConfig, FinalAnswerTeacher

        k = self.cfg.eval_k
        recs, stats = self._rollouts(self.model_dir(rnd), held, k, self.cfg.eval_temperature,
                                     f"r{rnd}-eval-")
        checker = FinalAnswerTeacher(FinalAnswerConfig(name="eval", kind="final_answer"))
        cands = [Candidate.model_validate(r) for r in recs]

        async def check_all() -> list[bool]:  # one event loop for the whole split, not one per sample
            return [(await checker.judge(c)).passed for c in cands]

        correct: dict[str, int] = {t.id: 0 for t in held}
        for cand, answer_ok in zip(cands, asyncio.run(check_all()), strict=True):
            correct[cand.task_id] += answer_ok
        p1 = sum(pass_at_k(k, c, 1) for c in correct.values()) / len(held)
        pk = sum(pass_at_k(k, c, k) for c in correct.values()) / len(held)
        return {"pass@1": round(p1, 4), f"pass@{k}": round(pk, 4), "eval_tasks": len(held),
                "eval_tokens_per_s": round(stats.tokens_per_s, 1)}

    def generate(self, rnd: int, train: list[Task]) -> dict[str, Any]:
        recs, stats = self._rollouts(self.model_dir(rnd - 1), train, self.cfg.generate.n,
                                     self.cfg.generate.temperature, f"r{rnd}-")
        path = self.dir / f"round-{rnd}" / "candidates.jsonl"
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in recs))
        return {"samples": len(recs), "gen_tokens": stats.generated_tokens,
                "gen_tokens_per_s": round(stats.tokens_per_s, 1)}

    def judge(self, rnd: int) -> dict[str, Any]:
        rdir = self.dir / f"round-{rnd}"
        cands = rdir / "candidates.jsonl"
        if self.accept_all:
            recs = list(iter_jsonl(cands))
            atomic_write(rdir / "accepted.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
            return {"accepted": len(recs), "acceptance_rate": 1.0, "accepted_file": "accepted.jsonl"}
        from ..curate.panel_file import load_panel
        from ..curate.run import CurateOptions, curate

        pfile = self.cfg.resolve(self.cfg.panel.file)
        if not pfile.exists():
            pfile = asset_path(self.cfg.panel.file)
        panel = self.student_panel(load_panel(pfile), self.model_dir(rnd - 1))
        summary = asyncio.run(curate(cands, panel, rdir / "curate", options=CurateOptions(cache=False)))
        valid = max(summary["valid"], 1)
        return {"accepted": summary["accepted"], "acceptance_rate": round(summary["accepted"] / valid, 4),
                "calls_saved": summary["calls_saved"], "accepted_file": "curate/accepted.jsonl"}

    def refine(self, rnd: int, judged: dict[str, Any], refiner: Any = None) -> dict[str, Any]:
        """Teacher rewrites of the accepted data; the round's student keeps, per candidate, the version
        Selective Reflection-Tuning's rule picks (tgrs_agents.loop.refine). Writes round-K/refine/."""
        from ..teachers.student_compat import StudentCompatConfig, StudentCompatTeacher
        from .refine import OpenAIRefiner, refine_file

        r = self.cfg.refine
        out_dir = self.dir / f"round-{rnd}" / "refine"
        out_dir.mkdir(parents=True, exist_ok=True)
        if refiner is None:
            assert r.model is not None
            refiner = OpenAIRefiner(r.model, base_url=r.base_url, api_key_env=r.api_key_env, target=r.target)
        scorer = StudentCompatTeacher(StudentCompatConfig(name="refine_student", kind="student_compat",
                                                          model=str(self.model_dir(rnd - 1))))

        async def go() -> Any:
            try:
                return await refine_file(self.dir / f"round-{rnd}" / judged["accepted_file"], out_dir,
                                         refiner, scorer)
            finally:
                await scorer.aclose()
                if hasattr(refiner, "aclose"):
                    await refiner.aclose()

        out = asyncio.run(go())
        return {**{f"refine_{k}": v for k, v in out.counts.items()},
                "accepted_file": "refine/refined.jsonl"}

    @staticmethod
    def student_panel(panel: Any, student: Path) -> Any:
        """Point teachers whose ``model = "{student}"`` (e.g. student_compat) at this round's student."""
        teachers = tuple(
            t.model_copy(update={"model": str(student)}) if getattr(t, "model", None) == "{student}" else t
            for t in panel.teachers)
        return panel.model_copy(update={"teachers": teachers})

    def pool(self, rnd: int, judged: dict[str, Any]) -> dict[str, Any]:
        rdir = self.dir / f"round-{rnd}"
        prev = list(iter_jsonl(self.dir / f"round-{rnd - 1}" / "pool.jsonl")) if rnd > 1 else []
        new = list(iter_jsonl(rdir / judged["accepted_file"]))
        kept, aside = self.filter(rnd, new)
        atomic_write(rdir / "set_aside.jsonl", "".join(json.dumps(r) + "\n" for r in aside))
        pooled = pool_accepted(prev, kept, self.cfg.pool_cap_per_task)
        atomic_write(rdir / "pool.jsonl", "".join(json.dumps(r) + "\n" for r in pooled))
        return {"pooled": len(pooled), "new_accepted": len(new), "set_aside_by_filters": len(aside)}

    def filter(self, rnd: int, records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The configured data filters (difficulty band, length bounds, near-duplicates), in that order."""
        from .filters import FilterResult, difficulty_band, length_bounds, near_duplicates, pass_rates_from_run

        f = self.cfg.filters
        res = FilterResult(list(records))
        curate = self.dir / f"round-{rnd}" / "curate"
        if f.difficulty_lo is not None and curate.exists():  # pass rates need the panel's verdicts
            res = res.then(difficulty_band, pass_rates_from_run(curate), lo=f.difficulty_lo,
                           hi=f.difficulty_hi, keep_extremes=f.keep_extremes)
        if f.min_response_tokens is not None or f.max_response_tokens is not None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(self.model_dir(rnd - 1))
            res = res.then(length_bounds, min_tokens=f.min_response_tokens,
                           max_tokens=f.max_response_tokens, tokenizer=tok)
        if f.near_dup_threshold is not None:
            res = res.then(near_duplicates, threshold=f.near_dup_threshold)
        aside = [{"id": a["record"]["id"], "task_id": a["record"]["task_id"], "filter": a["filter"],
                  "reason": a["reason"]} for a in res.set_aside]
        return res.kept, aside

    def sft(self, rnd: int) -> dict[str, Any]:
        from .distill import SFTSettings, distill

        s = self.cfg.sft
        pool = self.dir / f"round-{rnd}" / "pool.jsonl"
        res = distill(self.model_dir(rnd - 1), pool, self.model_dir(rnd), SFTSettings(
            steps=s.steps, batch_size=s.batch_size, lr=s.lr, seed=self.cfg.seed + rnd,
            backend=s.backend))
        return {"sft_tokens_per_s": round(res.tokens_per_s, 1), "sft_backend": res.backend,
                "sft_rows": res.rows, "sft_train_s": round(res.train_seconds, 2),
                "final_loss": res.losses[-1] if res.losses else None}

    # --- the loop ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        train, held = self.tasks()
        rounds: list[dict[str, Any]] = []
        if self.cfg.student.model == "tiny":
            ws = self._stage(0, "warm_start", lambda: self.warm_start(train, held))
        else:
            ws = self._stage(0, "base_model", lambda: self._link_base())
        ev = self._stage(0, "eval", lambda: self.evaluate(0, held))
        rounds.append({"round": 0, **ev, "warm_start": ws})
        self._report(rounds, t0)
        for rnd in range(1, self.cfg.rounds + 1):
            gen = self._stage(rnd, "generate", partial(self.generate, rnd, train))
            judged = self._stage(rnd, "judge", partial(self.judge, rnd))
            if self.cfg.refine.model is not None:
                refined = self._stage(rnd, "refine", partial(self.refine, rnd, judged))
                judged = {**judged, **refined}
            pooled = self._stage(rnd, "pool", partial(self.pool, rnd, judged))
            sft = self._stage(rnd, "sft", partial(self.sft, rnd))
            ev = self._stage(rnd, "eval", partial(self.evaluate, rnd, held))
            rounds.append({"round": rnd, **ev, **gen, **{k: v for k, v in judged.items()
                                                          if k != "accepted_file"},
                           **pooled, **{f"sft_{k}" if not k.startswith("sft") else k: v
                                        for k, v in sft.items()},
                           "stage_wall_s": {"generate": gen["wall_s"], "judge": judged["wall_s"],
                                            "sft": sft["wall_s"], "eval": ev["wall_s"]}})
            self._report(rounds, t0)
        return self.summary(rounds, t0)

    def _link_base(self) -> dict[str, Any]:
        """A real model: round 0 is the base model itself (no warm start)."""
        return {"base_model": self.cfg.student.model}

    def summary(self, rounds: list[dict[str, Any]], t0: float) -> dict[str, Any]:
        k = self.cfg.eval_k
        s = {"arm": "accept_all" if self.accept_all else "filtered", "eval_k": k,
             "rounds": rounds, "wall_s": round(time.perf_counter() - t0, 2)}
        atomic_write(self.dir / "summary.json", json.dumps(s, indent=2))
        return s

    def _report(self, rounds: list[dict[str, Any]], t0: float) -> None:
        from ..report.html import maybe_write_report

        self.summary(rounds, t0)
        maybe_write_report(self.dir, log=self.log)
        r = rounds[-1]
        k = self.cfg.eval_k
        extra = "" if r["round"] == 0 else (
            f", accepted {r.get('accepted')}/{r.get('samples')} ({r.get('acceptance_rate', 0):.0%})"
            f", pool {r.get('pooled')}")
        self.log(f"[tgrs] round {r['round']}: pass@1 {r['pass@1']:.3f}, pass@{k} {r[f'pass@{k}']:.3f}"
                 f"{extra} ({time.perf_counter() - t0:.0f}s)")
