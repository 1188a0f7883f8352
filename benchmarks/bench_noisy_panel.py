"""A panel that errs: what one round of the loop keeps and learns, before and after the agreement pool.

Judges that flip the true verdict for a known share of candidates (``flip``, default 0.25;
:class:`tgrs_agents.tasks.noisy.NoisyJudge`) stand in for an imperfect panel: one judge, three under
``majority``, three under ``unanimous``. For each seed, one warm-started tiny student samples the
demo's round 1 once; each panel judges those same samples; then each pooling rule pools and trains
(``pool_mode = "distinct"``: the rule before, one row per (task, tool calls, answer), first come;
``"agree"``: the agreement pool, :mod:`tgrs_agents.loop.pool`). Printed per panel:

* precision (share of right answers) of what the panel accepted, and of the pool SFT trains on;
* pass@1 on the held-out split at the start and after the round, under each rule.

Each figure is the mean over seeds ± its standard error (SD / sqrt(seeds)); with one seed, pass@1
carries its standard error over held-out tasks instead.

    python benchmarks/bench_noisy_panel.py                # demo sizes, 3 seeds (~20 min on 2 busy cores)
    python benchmarks/bench_noisy_panel.py --quick        # 96 / 48 tasks, 60 SFT steps
    python benchmarks/bench_noisy_panel.py --seeds 5 --flip 0.3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PANELS = (("one judge", 1, "unanimous"), ("majority of 3", 3, "majority"), ("unanimous 3", 3, "unanimous"))
MODES = ("distinct", "agree")  # before, after


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def config(work: Path, seed: int, quick: bool, panel: Path | None = None, mode: str = "agree") -> Any:
    from tgrs_agents.loop.config import LoopConfig

    sizes = {"tasks": {"n_train": 96, "n_eval": 48}, "sft": {"steps": 60}} if quick else {}
    extra = {"panel": {"file": str(panel)}} if panel else {}
    return LoopConfig(rounds=1, seed=seed, base_dir=str(work), pool_mode=mode, **sizes, **extra)


def one_seed(work: Path, seed: int, quick: bool, flip: float) -> dict[str, Any]:
    from tgrs_agents.curation.store import iter_jsonl
    from tgrs_agents.loop.rounds import ExpertIteration
    from tgrs_agents.loop.stages import Evaluated, Generated, Judged, Pooled, Trained, WarmStart
    from tgrs_agents.tasks.noisy import answer_correct, write_noisy_panel
    from tgrs_agents.types import Candidate

    quiet = {"log": lambda s: None, "live": False}
    base = work / f"seed-{seed}" / "base"
    loop = ExpertIteration(config(work, seed, quick), base, **quiet)
    train, held = loop.tasks()
    t0 = time.perf_counter()
    loop._stage(0, "warm_start", WarmStart, lambda: loop.warm_start(train, held))
    start = loop._stage(0, "eval", Evaluated, partial(loop.evaluate, 0, held))
    loop._stage(1, "generate", Generated, partial(loop.generate, 1, train))
    log(f"  seed {seed}: warm start, round-0 eval, round-1 samples in {time.perf_counter() - t0:.0f} s")
    samples = iter_jsonl(base / "round-1" / "candidates.jsonl")
    truth = {c["id"]: answer_correct(Candidate.model_validate(c)) for c in samples}

    def precision(path: Path) -> float:
        ids = [r["id"] for r in iter_jsonl(path)]
        return sum(truth[i] for i in ids) / max(len(ids), 1)

    out: dict[str, Any] = {"start": start.to_json(), "panels": {}}
    for label, judges, policy in PANELS:
        pfile = write_noisy_panel(work / "panels" / label.replace(" ", "-"), judges=judges, flip=flip, policy=policy)
        pdir = work / f"seed-{seed}" / label.replace(" ", "-")
        shutil.copytree(base, pdir, dirs_exist_ok=True)
        judged_loop = ExpertIteration(config(work, seed, quick, pfile), pdir, **quiet)
        judged = judged_loop._stage(1, "judge", Judged, partial(judged_loop.judge, 1))
        res: dict[str, Any] = {"accepted": judged.accepted,
                               "precision_accepted": precision(pdir / "round-1" / judged.accepted_file)}
        for mode in MODES:
            mdir = pdir.with_name(pdir.name + "-" + mode)
            shutil.copytree(pdir, mdir, dirs_exist_ok=True)
            m = ExpertIteration(config(work, seed, quick, pfile, mode), mdir, **quiet)
            pooled = m._stage(1, "pool", Pooled, partial(m.pool, 1, judged.accepted_file))
            m._stage(1, "sft", Trained, partial(m.sft, 1))
            ev = m._stage(1, "eval", Evaluated, partial(m.evaluate, 1, held))
            res[mode] = {"pooled": pooled.pooled, "precision_pool": precision(mdir / "round-1" / "pool.jsonl"),
                         "pass@1": ev.pass1, "pass@1_se": ev.pass1_se}
        out["panels"][label] = res
        log(f"  seed {seed}, {label}: precision accepted {res['precision_accepted']:.3f}, pool "
            + ", ".join(f"{mo} {res[mo]['precision_pool']:.3f}" for mo in MODES) + "; pass@1 "
            + f"{start.pass1:.3f} -> " + ", ".join(f"{mo} {res[mo]['pass@1']:.3f}" for mo in MODES))
    return out


def pm(values: list[float], se_one: float | None = None) -> str:
    """Mean ± standard error over seeds (one seed: ± the run's own standard error, when known)."""
    if len(values) > 1:
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) / len(values) ** 0.5:.3f}"
    return f"{values[0]:.3f}" + (f" ± {se_one:.3f}" if se_one is not None else "")


def table(seeds: list[dict[str, Any]], flip: float) -> list[str]:
    """The printed figures: per panel, precision and pass@1 before / after, and the paired change of
    pass@1 from the start (per seed, then mean ± standard error: the start varies a lot between seeds)."""
    one = len(seeds) == 1
    starts = [s["start"]["pass@1"] for s in seeds]
    out = [f"noisy panel, flip {flip}: {len(seeds)} seed(s), mean ± standard error"
           f"{' (over held-out tasks)' if one else ' over seeds'}; before = pool_mode distinct, after = agree",
           f"pass@1 at the start: {pm(starts, seeds[0]['start'].get('pass@1_se') if one else None)}"]
    head = ("panel", "precision accepted", "pool before", "pool after", "pass@1 before", "pass@1 after",
            "change before", "change after")
    out.append(" | ".join(f"{h:>18}" for h in head))
    for label, _, _ in PANELS:
        r = [s["panels"][label] for s in seeds]
        cells = [label, pm([x["precision_accepted"] for x in r]),
                 pm([x["distinct"]["precision_pool"] for x in r]), pm([x["agree"]["precision_pool"] for x in r]),
                 pm([x["distinct"]["pass@1"] for x in r], r[0]["distinct"]["pass@1_se"] if one else None),
                 pm([x["agree"]["pass@1"] for x in r], r[0]["agree"]["pass@1_se"] if one else None)]
        cells += [pm([x[mode]["pass@1"] - s0 for x, s0 in zip(r, starts, strict=True)]) for mode in MODES]
        out.append(" | ".join(f"{c:>18}" for c in cells))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--flip", type=float, default=0.25)
    p.add_argument("--quick", action="store_true", help="96 / 48 tasks and 60 SFT steps")
    p.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-noisy-") as tmp:
        work = Path(args.out or tmp)
        t0 = time.perf_counter()
        log(f"bench_noisy_panel: flip {args.flip}, {args.seeds} seeds, {'quick' if args.quick else 'demo'} sizes, "
            f"work dir {work}")
        seeds = [one_seed(work, s, args.quick, args.flip) for s in range(args.seeds)]
        wall = time.perf_counter() - t0
    if args.json:
        print(json.dumps({"flip": args.flip, "quick": args.quick, "seeds": seeds, "wall_s": round(wall, 1)}, indent=1))
        return 0
    print("\n".join(table(seeds, args.flip)))
    print(f"wall {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
