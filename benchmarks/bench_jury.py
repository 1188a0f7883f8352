"""A jury you can trust, measured: precision and recall of the kept set, and paid calls and dollars per
candidate, for one judge, a plain majority, ``weights = "auto"``, escalation to a stronger judge, and
group ranking, on candidates whose truth is known.

Data: (1) generated calculator-agent trajectories (``tgrs_agents.tasks.arithmetic_data``, 4 per task; a
candidate is good iff its ``Answer:`` equals the reference); (2) where present, the GSM8K example model
solutions in ``../shared/data/tasks`` (50 questions x 4 real model solutions, good iff ``is_correct``;
read in place, never copied).

Judges: every judge is a real OpenAI SDK client talking to the loopback stand-in, whose ``brain`` knows the
truth and answers wrong at the judge's own rates (``RATES``: sensitivity, specificity), seeded by judge and
candidate, so a judge's mistakes are the same on every call and independent between judges. A right
verdict is confident (score 9 or 1); a wrong one is hesitant (6 or 4) two times in three. Group prompts get
per-candidate verdicts at the same rates, so group mode is measured for cost, not credited with accuracy
it was never shown to have. Prices per million tokens are in ``PRICES``; tokens are the stand-in's
(characters / 4). The auto-weighted panels learn their weights during the run (the first 32 candidates
are a majority vote; ``audit = 0.1`` of the candidates are judged by every seat). The calibrated panels
use ``tgrs calibrate`` on a separate labelled set (generated with another seed; its one-time cost is
printed apart). Within a panel judges are asked in the order listed (cost_rank).

    .venv/bin/python benchmarks/bench_jury.py                 # both data sets
    .venv/bin/python benchmarks/bench_jury.py --n 800 --no-gsm8k
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tgrs_agents.curation.panel_file import load_panel  # noqa: E402
from tgrs_agents.curation.run import CurateOptions, curate  # noqa: E402
from tgrs_agents.tasks.arithmetic_data import write_synthetic  # noqa: E402
from tgrs_agents.testing.standin import StandIn  # noqa: E402

GSM8K = ROOT.parent / "shared" / "data" / "tasks" / "gsm8k_example_model_solutions.first50.jsonl"
KEY_ENV = "TGRS_BENCH_JURY_KEY"
RATES = {  # sensitivity (passes a good candidate), specificity (fails a bad one)
    "careful": (0.95, 0.95),
    "lenient": (0.92, 0.65),
    "noisy": (0.75, 0.70),
    "strong": (0.98, 0.98),
}
PRICES = {"careful": (0.15, 0.60), "lenient": (0.15, 0.60), "noisy": (0.15, 0.60), "strong": (2.50, 10.0)}
ANSWER = re.compile(r"(?:Answer|A):\s*\$?(-?[\d,]*\.?\d+)")


def truth_of(final: str, reference: str) -> bool:
    found = ANSWER.findall(final)
    if not found:
        return False
    try:
        return math.isclose(float(found[-1].replace(",", "")), float(reference.replace(",", "")))
    except ValueError:
        return False


def verdict(judge: str, final: str, reference: str) -> dict[str, Any]:
    """The judge's verdict on one candidate: right or wrong at its rates, seeded by judge and candidate."""
    good = truth_of(final, reference)
    rng = random.Random(int(hashlib.sha256(f"{judge}\x00{final}".encode()).hexdigest()[:12], 16))
    sens, spec = RATES[judge]
    right = rng.random() < (sens if good else spec)
    passed = good if right else not good
    hesitant = not right and rng.random() < 2 / 3
    score = (6 if passed else 4) if hesitant else (9 if passed else 1)
    return {"score": score, "passed": passed, "rationale": "right" if right else "wrong"}


def brain(prompt: str) -> dict[str, Any]:
    judge = re.findall(r"<rubric>\s*judge (\w+)", prompt)[0]
    ref = re.findall(r"<reference>\s*(.*?)\s*</reference>", prompt, re.S)[0]
    blocks = re.findall(r'<candidate id="(\d+)">.*?<final>(.*?)</final>', prompt, re.S)
    if blocks:
        return {"scores": [{"id": i, **verdict(judge, final.strip(), ref)} for i, final in blocks]}
    final = re.findall(r"<final>(.*?)</final>", prompt, re.S)[-1].strip()
    return verdict(judge, final, ref)


# --- data ---------------------------------------------------------------------------------------
def synthetic(path: Path, n: int, seed: int = 3) -> dict[str, bool]:
    write_synthetic(path, n, seed=seed, mix=(0.5, 0.2, 0.2, 0.1))
    truth = {}
    for raw in path.read_text().splitlines():
        rec = json.loads(raw)
        truth[rec["id"]] = truth_of(rec["messages"][-1]["content"] or "", str(rec["reference"]))
    return truth


def gsm8k(path: Path) -> dict[str, bool]:
    """The labelled GSM8K solutions as candidates (written to a temporary file, never into the project)."""
    truth = {}
    with path.open("w") as out:
        for q, raw in enumerate(GSM8K.read_text().splitlines()):
            rec = json.loads(raw)
            reference = ANSWER.findall(rec["ground_truth"])[-1].replace(",", "")
            for model in ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"):
                cid = f"gsm8k-{q}-{model}"
                sol = rec[model]
                truth[cid] = bool(sol["is_correct"])
                out.write(json.dumps({"id": cid, "task_id": f"gsm8k-{q}", "reference": reference, "messages": [
                    {"role": "user", "content": rec["question"]},
                    {"role": "assistant", "content": sol["solution"]}]}) + "\n")
    return truth


# --- panels -------------------------------------------------------------------------------------
def judge(name: str, url: str, rank: int, **extra: Any) -> dict[str, Any]:
    p_in, p_out = PRICES[name]
    return {"name": name, "kind": "openai", "model": f"bench-{name}", "base_url": url, "api_key_env": KEY_ENV,
            "rubric": f"judge {name}", "price_input_per_mtok": p_in, "price_output_per_mtok": p_out,
            "max_tokens": 64, "cost_rank": rank, "max_concurrency": 64, "timeout_s": 10, **extra}


def configs(url: str, calibration: Path) -> list[tuple[str, dict[str, Any]]]:
    three = [judge("careful", url, 0), judge("lenient", url, 1), judge("noisy", url, 2)]
    auto = {"policy": "weighted_mean", "threshold": 0.5, "weights": "auto"}
    cal = {"policy": "weighted_mean", "threshold": 0.5, "weights": str(calibration)}
    cheap_strong = [judge("lenient", url, 0), judge("noisy", url, 1), judge("strong", url, 5)]
    escalating = [*cheap_strong[:2], judge("strong", url, 5, escalate_only=True)]
    return [
        ("one judge (careful)", {"policy": "unanimous", "teacher": [three[0]]}),
        ("one judge (strong)", {"policy": "unanimous", "teacher": [judge("strong", url, 5)]}),
        ("majority of 3", {"policy": "majority", "teacher": three}),
        ('weights = "auto" (3)', {**auto, "teacher": three}),
        ("calibrated weights (3)", {**cal, "teacher": three}),
        ("majority lenient+noisy+strong", {"policy": "majority", "teacher": cheap_strong}),
        ("escalation to strong, auto", {**auto, "margin": 0.15, "teacher": escalating}),
        ("escalation to strong, calibrated", {**cal, "margin": 0.15, "teacher": escalating}),
        ("group (careful)", {"policy": "unanimous", "teacher": [
            judge("careful", url, 0, mode="group", group_wait_ms=40)]}),
        ("group (careful, swap)", {"policy": "unanimous", "teacher": [
            judge("careful", url, 0, mode="group", group_wait_ms=40, debias="swap")]}),
    ]


def toml_value(v: Any) -> str:
    return "true" if v is True else "false" if v is False else json.dumps(v)


def write_panel(path: Path, cfg: dict[str, Any]) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in cfg.items() if k != "teacher"]
    for t in cfg["teacher"]:
        lines += ["", "[[teacher]]", *(f"{k} = {toml_value(v)}" for k, v in t.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- one measurement ----------------------------------------------------------------------------
def calibrate_judges(root: Path, url: str, n: int) -> tuple[Path, dict[str, Any]]:
    """``tgrs calibrate`` of all four judges on a separate labelled set (generated with another seed)."""
    from tgrs_agents.curation.calibrate import calibrate
    from tgrs_agents.paid.services import Services

    src = root / "calibration-candidates.jsonl"
    truth = synthetic(src, n, seed=99)
    labelled = root / "labelled.jsonl"
    with labelled.open("w") as f:
        for raw in src.read_text().splitlines():
            rec = json.loads(raw)
            f.write(json.dumps({**rec, "label": truth[rec["id"]]}) + "\n")
    panel = write_panel(root / "calibrate.toml", {"policy": "majority", "ties": "reject", "teacher": [
        judge(name, url, i) for i, name in enumerate(RATES)]})
    report = asyncio.run(calibrate(load_panel(panel), labelled, Services()))
    out = root / "calibration.json"
    out.write_text(json.dumps(report))
    return out, report


def measure(data: Path, truth: dict[str, bool], panel: Path, out: Path) -> dict[str, Any]:
    summary = asyncio.run(curate(data, load_panel(panel), out,
                                 options=CurateOptions(cache=False, max_in_flight=64, summary_interval_s=60)))
    kept = {json.loads(x)["id"] for x in (out / "accepted.jsonl").read_text().splitlines()}
    tp = sum(truth[i] for i in kept)
    pos = sum(truth.values())
    n = len(truth)
    prec = tp / len(kept) if kept else float("nan")
    rec = tp / pos if pos else float("nan")
    requests = sum(t["requests"] for t in summary["teachers"].values())
    return {"kept": len(kept), "precision": prec, "precision_se": math.sqrt(prec * (1 - prec) / len(kept)) if kept
            else float("nan"), "recall": rec, "recall_se": math.sqrt(rec * (1 - rec) / pos) if pos else float("nan"),
            "calls_per_candidate": requests / n, "usd_per_1k": 1000 * summary["cost_usd"] / n,
            "failed": summary["failed"], "jury": summary.get("jury", {})}


def table(title: str, rows: list[tuple[str, dict[str, Any]]], n: int, good: int) -> None:
    print(f"\n{title}: {n} candidates, {good} good ({good / n:.0%})")
    print(f"| {'panel':<33} | {'kept':>4} | {'precision':>13} | {'recall':>13} | {'calls/cand':>10} | "
          f"{'$ / 1k cand':>11} |")
    print(f"|{'-' * 35}|{'-' * 6}|{'-' * 15}|{'-' * 15}|{'-' * 12}|{'-' * 13}|")
    for name, r in rows:
        print(f"| {name:<33} | {r['kept']:>4} | {r['precision']:.3f} ± {r['precision_se']:.3f} | "
              f"{r['recall']:.3f} ± {r['recall_se']:.3f} | {r['calls_per_candidate']:>10.2f} | "
              f"{r['usd_per_1k']:>11.4f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="generated candidates (default 3000)")
    ap.add_argument("--no-gsm8k", action="store_true", help="skip the GSM8K labelled solutions")
    ap.add_argument("--n-calibration", type=int, default=300, help="labelled candidates for tgrs calibrate")
    args = ap.parse_args(argv)
    os.environ[KEY_ENV] = "sk-bench-jury-not-a-real-key"
    sets = [("generated calculator-agent trajectories", "synthetic")]
    if not args.no_gsm8k:
        if GSM8K.is_file():
            sets.append(("GSM8K example model solutions (labelled)", "gsm8k"))
        else:
            print(f"(GSM8K labelled file not found at {GSM8K}: skipped)")
    with tempfile.TemporaryDirectory() as tmp, StandIn(brain=brain) as srv:
        root = Path(tmp)
        cal, report = calibrate_judges(root, srv.url_openai, args.n_calibration)
        print(f"calibration: {report['items']} labelled candidates (another seed), {report['calls']} calls, "
              f"${report['cost_usd']:.4f} once")
        for name, t in report["teachers"].items():
            s_, c_ = t["sensitivity"], t["specificity"]
            print(f"  {name:<8} sensitivity {s_['value']:.3f} [{s_['low']:.3f}, {s_['high']:.3f}]  specificity "
                  f"{c_['value']:.3f} [{c_['low']:.3f}, {c_['high']:.3f}]  weight {t['weight']:.2f}  "
                  f"(true {RATES[name][0]:.2f} / {RATES[name][1]:.2f})")
        for title, kind in sets:
            data = root / f"{kind}.jsonl"
            truth = synthetic(data, args.n) if kind == "synthetic" else gsm8k(data)
            rows = []
            for i, (name, cfg) in enumerate(configs(srv.url_openai, cal)):
                panel = write_panel(root / f"{kind}-{i}.toml", cfg)
                rows.append((name, measure(data, truth, panel, root / f"{kind}-run-{i}")))
            table(title, rows, len(truth), sum(truth.values()))
            for name, r in rows:
                jury = r["jury"]
                if jury.get("weights_source", "") and "auto" in jury["weights_source"]:
                    w = ", ".join(f"{t} {x:.2f}" for t, x in jury["weights"].items())
                    print(f"  {name}: learned log-odds weights {w}")
                if "group" in jury:
                    for g in jury["group"].values():
                        if g.get("position_consistency") is not None:
                            print(f"  {name}: position consistency {g['position_consistency']:.3f} of candidates, "
                                  f"{g['top_position_consistency']:.3f} of groups' best")
    print("\nprecision and recall ± one standard error (binomial); calls = paid requests, retries included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
