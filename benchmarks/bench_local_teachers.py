"""Local teachers: micro-batching speed-up, how well IFD spots mismatched pairs, paid calls saved.

Everything is built here, on CPU, from nothing: the tiny student is warm-started on the built-in
calculator task (300 demonstrations, 30% corrupted, 200 SFT steps, as in the demo), and a tiny
reward model is trained on verifier-labelled trajectories (:mod:`tgrs_agents.student.train_reward`).
Then, in one run:

1. **Reward-model throughput**: the same candidates scored by the ``reward_model`` teacher with the
   micro-batching queue (``max_batch_size`` 64, every ``judge`` call in flight at once) and with one
   forward pass per candidate (``max_batch_size`` 1); candidates/s of each and their ratio.
2. **IFD as a mismatch detector**: held-out tasks' demonstrations (matched) and the same responses
   under another task's question (mismatched); AUROC of IFD (pooled), the fraction of responses
   whose IFD rises under the wrong question (paired), and the same for r-IFD. Then the cut-offs:
   the student_compat default calibrated the way ``tgrs run`` does it (the 0.95 quantile of IFD on
   demonstrations of 128 fresh tasks, apart from both splits) and the bare ceiling ``ifd_max = 1``:
   the share of matched and of mismatched pairs each drops. Also the reward model's held-out
   accuracy and AUROC.
3. **Paid calls saved**: ``tgrs curate`` of the demo's candidates (``tgrs demo-curate``'s input:
   synthetic trajectories, one broken line in 97) with a panel-local-style panel whose paid judge
   is the loopback stand-in (``tgrs_agents.testing.standin``), against the same panel without the
   local stages; with and without the exact verifier in front. Reports the judge's calls and
   ``calls_saved``, and how many candidates the judge would have accepted that a local stage
   rejected (the price of the savings).

    python benchmarks/bench_local_teachers.py            # about 3-5 minutes on 2 idle cores
    python benchmarks/bench_local_teachers.py --quick    # smaller, for a smoke run
    python benchmarks/bench_local_teachers.py --json     # the figures as JSON on stdout
    python benchmarks/bench_local_teachers.py --threads 1  # on a machine others are using too
    python benchmarks/bench_local_teachers.py --only-ifd   # the student and part 2 alone (about a minute)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "TGRS_BENCH_LOCAL_KEY"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- setup

def warm_student(out: Path, steps: int) -> Path:
    from tgrs_agents.loop.distill import SFTSettings, distill
    from tgrs_agents.student.tiny import build_model, save, train_tokenizer
    from tgrs_agents.tasks.arithmetic import seed_demonstrations, splits

    model = out / "student"
    if (model / "distill.json").exists():
        return model
    train, held = splits(400, 128, seed=0)
    demos = seed_demonstrations(random.Random(0).sample(train, 300), noise=0.3, seed=0)
    corpus = [m.get("content") or "" for d in demos for m in d["messages"]]
    tok = train_tokenizer(corpus + [t.messages[0].text for t in [*train, *held]])
    init = save(build_model(tok, seed=0), tok, out / "student-init")
    t0 = time.perf_counter()
    res = distill(init, demos, model, SFTSettings(steps=steps, batch_size=32, lr=1e-3))
    log(f"  student: {steps} SFT steps in {time.perf_counter() - t0:.1f}s, final loss {res.losses[-1]:.3f}")
    return model


def reward_model(out: Path, student: Path, steps: int, n_rows: int) -> tuple[Path, dict[str, Any]]:
    from tgrs_agents.student.train_reward import RewardSettings, default_rows, train_reward_model

    d = out / "reward-model"
    if not (d / "reward.json").exists():
        t0 = time.perf_counter()
        train_reward_model(default_rows(n_rows, seed=1), d,
                           settings=RewardSettings(steps=steps, batch_size=32, lr=1e-3))
        log(f"  reward model: {steps} steps in {time.perf_counter() - t0:.1f}s")
    info = json.loads((d / "reward.json").read_text())
    return d, {"heldout_accuracy": round(info["heldout_accuracy"], 4), "heldout_auroc": round(info["heldout_auroc"], 4),
               "train_rows": info["train_rows"], "heldout_rows": info["heldout_rows"], "steps": steps,
               "init": "random (LlamaForSequenceClassification sized like the tiny student)"}


# ------------------------------------------------------------------------------------ 1. speed

def rm_throughput(rm_dir: Path, n: int, repeats: int) -> dict[str, Any]:
    from tgrs_agents.tasks.arithmetic_data import synthetic_lines
    from tgrs_agents.teachers.reward_model import RewardModelConfig, RewardModelTeacher
    from tgrs_agents.types import Candidate

    cands = [Candidate.model_validate(json.loads(line)) for line in synthetic_lines(n, seed=7)]

    def timed(batch: int) -> float:
        t = RewardModelTeacher(RewardModelConfig(name="rm", model=str(rm_dir), device="cpu",
                                                 max_batch_size=batch, max_wait_ms=2))

        async def go() -> float:
            t0 = time.perf_counter()
            await asyncio.gather(*(t.judge(c) for c in cands))
            dt = time.perf_counter() - t0
            await t.aclose()
            return dt

        return asyncio.run(go())

    timed(64)  # warm-up: first-call allocations
    batched = [timed(64) for _ in range(repeats)]
    single = [timed(1) for _ in range(repeats)]
    b, s = min(batched), min(single)
    return {"candidates": n, "batched_per_s": round(n / b, 1), "one_call_each_per_s": round(n / s, 1),
            "speedup": round(s / b, 2), "max_batch_size": 64, "best_of": repeats}


# ---------------------------------------------------------------------------------- 2. IFD AUROC

def ifd_auroc(student: Path, n: int) -> dict[str, Any]:
    from tgrs_agents.student.train_reward import auroc
    from tgrs_agents.tasks.arithmetic import demonstration, make_tasks, splits
    from tgrs_agents.teachers.student_compat import RIFD_PROMPT, StudentScorer, quantile
    from tgrs_agents.types import Candidate

    train, held = splits(400, 128, seed=0)
    fresh = make_tasks(128, seed=20_000, prefix="calib-",  # as tgrs run calibrates: apart from both splits
                       exclude={str(t.metadata["expression"]) for t in [*train, *held]})
    held = held[:n]
    matched = [Candidate.model_validate(demonstration(t)) for t in held]
    mismatched = []
    for i, t in enumerate(held):
        rec = demonstration(held[(i + 1) % len(held)])
        rec["id"], rec["messages"][0] = f"mm-{i}", t.messages[0].model_dump(exclude_none=True)
        mismatched.append(Candidate.model_validate(rec))
    out: dict[str, Any] = {"pairs": len(held)}
    plain = StudentScorer.load(str(student), device="cpu", rifd=False)
    calib = plain.score_batch([Candidate.model_validate(demonstration(t)) for t in fresh])
    cut = quantile([s.ifd for s in calib if s.ifd is not None], 0.95)
    assert cut is not None
    out["calibration_ifd_q95"] = cut  # held-out good demonstrations of fresh tasks
    m_ifd = [s.ifd for s in plain.score_batch(matched)]
    x_ifd = [s.ifd for s in plain.score_batch(mismatched)]
    out["cutoffs"] = {name: {"ifd_max": round(c, 4),
                             "matched_dropped": round(sum(v >= c for v in m_ifd) / len(m_ifd), 4),
                             "mismatched_dropped": round(sum(v >= c for v in x_ifd) / len(x_ifd), 4)}
                      for name, c in (("calibrated_q95", cut), ("ceiling_1", 1.0))}
    prompts = (("short_rifd_prompt", "Guess the question: {response}"), ("default_rifd_prompt", RIFD_PROMPT))
    for label, prompt in prompts:
        scorer = StudentScorer.load(str(student), device="cpu", rifd_prompt=prompt)
        t0 = time.perf_counter()
        sm, sx = scorer.score_batch(matched), scorer.score_batch(mismatched)
        dt = time.perf_counter() - t0
        res: dict[str, Any] = {"candidates_per_s": round(2 * len(held) / dt, 1)}
        for metric in ("ifd", "rifd"):
            m = [getattr(s, metric) for s in sm]
            x = [getattr(s, metric) for s in sx]
            paired = sum(x[i] > m[(i + 1) % len(m)] for i in range(len(x))) / len(x)
            res[metric] = {"auroc": round(auroc([0] * len(m) + [1] * len(x), m + x) or 0.0, 4),
                           "paired_rank": round(paired, 4),
                           "median_matched": round(statistics.median(m), 4),
                           "median_mismatched": round(statistics.median(x), 4),
                           "mismatched_at_or_above_1": sum(v >= 1 for v in x)}
        out[label] = res
    return out


# ------------------------------------------------------------------------------ 3. calls saved

def panel_text(rm_dir: Path, student: Path, url: str, *, verifier: bool, ifd_max: float | None) -> str:
    """The bench panel: [verifier] [+ rm + student_fit] + the paid judge on the stand-in (None: no local stages)."""
    lines = ['policy = "unanimous"']
    if verifier:
        lines += ["", "[[teacher]]", 'name = "answer"', 'kind = "final_answer"', "cost_rank = 0"]
    if ifd_max is not None:
        lines += ["", "[[teacher]]", f"include = {json.dumps(str(ROOT / 'teachers' / 'reward-model.toml'))}",
                  f"model = {json.dumps(str(rm_dir))}", 'device = "cpu"', "max_batch_size = 64",
                  "", "[[teacher]]", 'name = "student_fit"', 'kind = "student_compat"',
                  f"model = {json.dumps(str(student))}", 'device = "cpu"', f"ifd_max = {ifd_max!r}",
                  'rifd_prompt = "Guess the question: {response}"', "max_batch_size = 32", "cost_rank = 2"]
    lines += ["", "[[teacher]]", f"include = {json.dumps(str(ROOT / 'teachers' / 'openai-judge.toml'))}",
              f'base_url = "{url}"', f'api_key_env = "{KEY_ENV}"', "rpm = 1000000", "tpm = 1000000000",
              "max_concurrency = 64", "timeout_s = 10"]
    return "\n".join(lines) + "\n"


def calls_saved(out: Path, rm_dir: Path, student: Path, n: int, calibrated_ifd_max: float) -> dict[str, Any]:
    """Curate the demo's candidates with: the judge alone (plain), + local stages with the documented
    IFD bound (ifd_max = 1), + local stages with ifd_max calibrated on the student's own held-out
    demonstrations (their 95th percentile IFD; no curate candidate is looked at)."""
    from tgrs_agents.curation.panel_file import load_panel
    from tgrs_agents.curation.run import CurateOptions, curate
    from tgrs_agents.tasks.arithmetic_data import write_synthetic
    from tgrs_agents.testing.standin import StandIn

    data = write_synthetic(out / "demo-candidates.jsonl", n, seed=0, bad_every=97)  # tgrs demo-curate's input
    os.environ[KEY_ENV] = "sk-bench-local-0000"
    results: dict[str, Any] = {"candidates": n, "calibrated_ifd_max": round(calibrated_ifd_max, 4)}
    variants = (("plain", None), ("local", 1.0), ("local_calibrated", round(calibrated_ifd_max, 4)))
    with StandIn() as srv:
        for verifier in (True, False):
            runs: dict[str, Any] = {}
            accepted: dict[str, set[str]] = {}
            for label, ifd_max in variants:
                name = f"{'verifier' if verifier else 'no-verifier'}-{label}"
                pfile = out / f"panel-{name}.toml"
                pfile.write_text(panel_text(rm_dir, student, srv.url_openai, verifier=verifier, ifd_max=ifd_max))
                before = srv.stats["requests"]
                t0 = time.perf_counter()
                summary = asyncio.run(curate(data, load_panel(pfile), out / f"run-{name}",
                                             options=CurateOptions(cache=False, force=True)))
                judge = summary["teachers"]["gpt_judge"]
                lines = (out / f"run-{name}" / "accepted.jsonl").read_text().splitlines()
                accepted[label] = {json.loads(x)["id"] for x in lines}
                run = {"paid_calls": judge["calls"], "paid_calls_saved": judge["calls_saved"],
                       "http_requests": srv.stats["requests"] - before, "accepted": summary["accepted"],
                       "valid": summary["valid"], "cost_usd": summary["cost_usd"],
                       "wall_s": round(time.perf_counter() - t0, 2)}
                for t in ("rm", "student_fit"):
                    if t in summary["teachers"]:
                        st = summary["teachers"][t]
                        run[f"{t}_rejected"] = st["calls"] - st["passed"]
                if label != "plain":
                    run["paid_calls_avoided"] = runs["plain"]["paid_calls"] - run["paid_calls"]
                    run["judge_accepts_lost"] = len(accepted["plain"] - accepted[label])
                runs[label] = run
            results["with_verifier" if verifier else "without_verifier"] = runs
    return results


def ifd_lines(ifd: dict[str, Any]) -> list[str]:
    out = []
    for label in ("short_rifd_prompt", "default_rifd_prompt"):
        r = ifd[label]
        out.append(f"mismatch detection ({ifd['pairs']} pairs, {label}): IFD AUROC {r['ifd']['auroc']:.3f} "
                   f"(paired {r['ifd']['paired_rank']:.3f}, medians {r['ifd']['median_matched']} vs "
                   f"{r['ifd']['median_mismatched']}), r-IFD AUROC {r['rifd']['auroc']:.3f}")
    for name, c in ifd["cutoffs"].items():
        out.append(f"IFD cut-off {name} (ifd_max {c['ifd_max']}): drops {c['mismatched_dropped']:.1%} of mismatched "
                   f"and {c['matched_dropped']:.1%} of matched pairs")
    return out


# ------------------------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=None, help="work directory (default: a temporary one); models are reused")
    p.add_argument("--quick", action="store_true", help="smaller everything (a smoke run)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--only-ifd", action="store_true", help="the student and the IFD figures only")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: torch's choice); 1 avoids oversubscription on a busy machine")
    args = p.parse_args(argv)

    import torch

    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # distill() then keeps the count
    q = args.quick
    sizes = {"student_steps": 200, "rm_steps": 60 if q else 600, "rm_rows": 400 if q else 2000,
             "throughput_n": 128 if q else 512, "repeats": 1 if q else 3, "ifd_pairs": 32 if q else 128,
             "curate_n": 200 if q else 1000}
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        log(f"bench_local_teachers: work dir {out}, torch threads {torch.get_num_threads()}, load "
            f"{os.getloadavg()[0]:.1f}")
        student = warm_student(out, sizes["student_steps"])
        if args.only_ifd:
            ifd = ifd_auroc(student, sizes["ifd_pairs"])
            print(json.dumps(ifd, indent=1) if args.json else "\n".join(ifd_lines(ifd)))
            return 0
        rm_dir, rm_info = reward_model(out, student, sizes["rm_steps"], sizes["rm_rows"])
        log("  1/3 reward-model throughput ...")
        speed = rm_throughput(rm_dir, sizes["throughput_n"], sizes["repeats"])
        log("  2/3 IFD / r-IFD on matched vs mismatched pairs ...")
        ifd = ifd_auroc(student, sizes["ifd_pairs"])
        log("  3/3 curate with and without local stages ...")
        saved = calls_saved(out, rm_dir, student, sizes["curate_n"], ifd["calibration_ifd_q95"])
        figures = {"reward_model": rm_info, "rm_throughput": speed, "ifd": ifd, "calls_saved": saved,
                   "sizes": sizes, "wall_s": round(time.perf_counter() - t0, 1),
                   "load_avg_1min_end": round(os.getloadavg()[0], 2)}
    if args.json:
        print(json.dumps(figures, indent=1))
        return 0
    s = speed
    print(f"reward model (tiny, {rm_info['steps']} steps): held-out accuracy {rm_info['heldout_accuracy']:.3f}, "
          f"AUROC {rm_info['heldout_auroc']:.3f} ({rm_info['heldout_rows']} rows)")
    print(f"RM scoring, {s['candidates']} candidates: micro-batched {s['batched_per_s']}/s vs one call each "
          f"{s['one_call_each_per_s']}/s -> {s['speedup']}x")
    print("\n".join(ifd_lines(ifd)))
    for key in ("with_verifier", "without_verifier"):
        r = saved[key]
        for label in ("local", "local_calibrated"):
            loc = r[label]
            bound = 1.0 if label == "local" else saved["calibrated_ifd_max"]
            print(f"curate {saved['candidates']} demo candidates {key.replace('_', ' ')}, rm + student_fit "
                  f"(ifd_max {bound}): paid judge calls {r['plain']['paid_calls']} -> {loc['paid_calls']} "
                  f"(rejected by rm {loc['rm_rejected']}, by student_fit {loc['student_fit_rejected']}); "
                  f"judge accepts lost {loc['judge_accepts_lost']} of {r['plain']['accepted']}")
    print(f"wall {figures['wall_s']}s, load average at end {figures['load_avg_1min_end']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
