"""``tgrs run CONFIG --dry-run``: the paid calls a loop would make and an upper bound on their cost, per
round and stage and in all, before it spends anything (nothing is called, nothing is written).

Per stage (0 for a stage already done, which is read back and never paid again):

* ``judge``: nothing for a panel without priced teachers or ``--accept-all``. For a round whose
  candidates exist it is ``tgrs curate --dry-run`` on them (:mod:`tgrs_agents.curation.dryrun`: free
  teachers run, verdicts in the ledger are free, candidates the round's curate run already decided are
  not counted). For a round not sampled yet, every priced teacher (times its ``repeats``) on every
  candidate (``n_train x generate.n``), each candidate as long as generation allows (:func:`worst_case`).
* ``refine``: one request per target (two for ``both``) for every candidate that may be accepted (the
  accepted file once judged; else every candidate), at most ``max_tokens`` out.
* ``generate`` with a served ``[generator]``, ``generate`` / ``eval`` with a served student
  (``backend = "openai"``): ``max_turns`` requests per rollout, each turn's cap out; ``eval`` with an
  ``[eval] panel`` of priced judges: each of them on every eval sample.

Tokens are estimated as the paid layer estimates them before a call (about 4 characters a token in, the
request's output cap out), so the bound is the one the budget reserves; retries of failed attempts are
not counted. The loop uses the same bounds (:func:`stage_bound`) to refuse to start a stage that cannot
resume inside itself and does not fit in what is left of the budget (:mod:`tgrs_agents.loop.budget`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..types import Candidate, Message, Task

if TYPE_CHECKING:
    from .rounds import ExpertIteration

CHARS_PER_TOKEN = 4
REFINE_MAX_TOKENS = 512  # OpenAIRefiner's output cap per rewrite


@dataclass
class Bound:
    """At most ``calls`` paid calls costing at most ``usd``; ``by``: name -> [calls, usd]."""

    calls: int = 0
    usd: float = 0.0
    by: dict[str, list[float]] = field(default_factory=dict)
    done: bool = False

    def add(self, name: str, calls: int, usd: float) -> None:
        self.calls += calls
        self.usd += usd
        row = self.by.setdefault(name, [0, 0.0])
        row[0] += calls
        row[1] += usd

    def to_json(self) -> dict[str, Any]:
        return {"done": self.done, "calls": self.calls, "cost_usd": round(self.usd, 6),
                "by": {k: {"calls": int(v[0]), "cost_usd": round(v[1], 6)} for k, v in self.by.items()}}


def worst_case(task: Task, max_tokens: int) -> Candidate:
    """The task's prompt and the longest answer generation allows (``max_tokens`` at 4 characters a token)."""
    answer = Message(role="assistant", content="x" * (max_tokens * CHARS_PER_TOKEN))
    return Candidate(id=f"bound-{task.id}", task_id=task.id, messages=[*task.messages, answer],
                     tools=task.tools, reference=task.reference)


def priced(panel_cfg: Any) -> list[Any]:
    """The panel's teachers that are paid per call (they carry a price)."""
    return [t for t in panel_cfg.teachers if "price_input_per_mtok" in type(t).model_fields]


def _paid_judges(panel_cfg: Any) -> list[tuple[Any, int, Any]]:
    """(judge, repeats, price) for each priced teacher, built without the paid layer (nothing is called)."""
    from ..paid.cost import batch_price_for
    from ..teachers.base import BuildContext, teacher_class

    ctx = BuildContext(base_dir=Path(panel_cfg.base_dir), source=panel_cfg.source)
    out = []
    for tc in priced(panel_cfg):
        judge: Any = teacher_class(tc.kind)(tc, ctx)  # a priced judge: price, estimate
        price = judge.price
        if getattr(tc, "mode", "") == "batch":
            price = batch_price_for(tc.model, tc.price_input_per_mtok, tc.price_output_per_mtok) or price
        out.append((judge, panel_cfg.role(tc.name).repeats, price))
    return out


def panel_bound(panel_cfg: Any, cands: list[Candidate], bound: Bound | None = None) -> Bound:
    """Every priced teacher (times its repeats) on every candidate: no short-circuit, no cache."""
    bound = bound or Bound()
    for judge, repeats, price in _paid_judges(panel_cfg):
        for c in cands:
            bound.add(judge.name, repeats, repeats * price.cost(*judge.estimate(c)))
    return bound


def _read(path: Path) -> list[Candidate]:
    from ..curation.store import iter_jsonl

    return [Candidate.model_validate(r) for r in iter_jsonl(path)]


def judge_bound(loop: ExpertIteration, rnd: int) -> Bound:
    from ..curation.panel_file import load_panel

    if loop.accept_all:
        return Bound()
    panel = load_panel(loop.panel_file())
    if not priced(panel):
        return Bound()
    rd = loop.layout.round(rnd)
    if not rd.candidates.exists():
        train, _ = loop.tasks()
        return panel_bound(panel, [worst_case(t, loop.cfg.generate.max_tokens) for t in train
                                   for _ in range(loop.cfg.generate.n)])
    from ..curation.dryrun import dry_run
    from ..paid.ledger import Ledger
    from ..paid.services import Services

    calibration = rd.calibration if rd.calibration.exists() else None  # as the judge stage resolved it
    panel = loop.student_panel(panel, loop.model_dir(rnd - 1), calibration)
    services = Services(ledger=Ledger(loop.cache_path) if loop.cache else None)
    try:
        report = asyncio.run(dry_run(rd.candidates, panel, rd.curate.dir, services)).to_json()
    finally:
        services.close()
    bound = Bound()
    for name, t in report["teachers"].items():
        bound.add(name, t["calls"], t["cost_usd"])
    return bound


def refine_bound(loop: ExpertIteration, rnd: int) -> Bound:
    from ..paid.cost import price_for
    from .refine import PromptRefiner

    r = loop.cfg.refine
    if r.model is None:
        return Bound()
    price = price_for(r.model, r.price_input_per_mtok, r.price_output_per_mtok)
    if price is None:
        raise ConfigError(f"no price known for model {r.model!r}: set price_input_per_mtok and "
                          "price_output_per_mtok (0 for a self-hosted model)", file=loop.cfg.source,
                          field="refine.price_input_per_mtok")
    rd = loop.layout.round(rnd)
    judged = rd.done("judge")
    if judged.exists():
        cands = _read(rd.file(json.loads(judged.read_text())["accepted_file"]))
    elif rd.candidates.exists():
        cands = _read(rd.candidates)
    else:
        train, _ = loop.tasks()
        cands = [worst_case(t, loop.cfg.generate.max_tokens) for t in train for _ in range(loop.cfg.generate.n)]

    class _Prompts(PromptRefiner):
        async def ask(self, prompt: str) -> str:
            return ""

    prompts = _Prompts(target=r.target)
    whats = ["instruction", "response"] if r.target == "both" else [r.target]
    bound = Bound()
    for c in cands:
        for what in whats:
            bound.add(f"refiner:{r.model}", 1, price.cost(len(prompts.prompt(c, what)) // 4 + 16,  # type: ignore[arg-type]
                                                          REFINE_MAX_TOKENS))
    return bound


def served_bound(loop: ExpertIteration, tasks: list[Task], n: int, bound: Bound | None = None, *,
                 served: Any = None) -> Bound:
    """A served model's rollouts (``served``: a ``[generator]``; else the student if ``backend = "openai"``):
    ``max_turns`` requests each, the whole conversation so far in, the per-turn cap out."""
    from ..paid.cost import price_for

    g = loop.cfg.generate
    bound = bound or Bound()
    s = served if served is not None else loop.cfg.student
    if getattr(s, "backend", None) != "openai":
        return bound
    field_ = "generator" if served is not None else "student"
    price = price_for(s.model, s.price_input_per_mtok, s.price_output_per_mtok)
    if price is None:
        raise ConfigError(f"no price known for model {s.model!r}: set price_input_per_mtok and "
                          "price_output_per_mtok (0 for a self-hosted model)", file=loop.cfg.source,
                          field=f"{field_}.price_input_per_mtok")
    system = len(getattr(s, "system", None) or "") // 4
    for t in tasks:
        tools = len(json.dumps(t.tools or [])) // 4
        start = len(json.dumps([m.model_dump(mode="json", exclude_none=True) for m in t.messages])) // 4
        for turn in range(g.max_turns):  # each turn sends what came before: the prompt and earlier turns
            est_in = start + system + tools + 16 + turn * g.max_new_tokens
            bound.add(f"{field_}:{s.model}", n, n * price.cost(est_in, g.max_new_tokens))
    return bound


def eval_bound(loop: ExpertIteration, rnd: int) -> Bound:
    from .evaluate import load_eval_panel

    panel = load_eval_panel(loop.cfg)
    paid_panel = panel is not None and bool(priced(panel))
    if loop.cfg.student.backend != "openai" and not paid_panel:
        return Bound()  # nothing to load: the stage cannot pay
    _, held = loop.tasks()
    k = loop.cfg.eval_k
    bound = served_bound(loop, held, k)
    if paid_panel:
        panel_bound(panel, [worst_case(t, loop.cfg.generate.max_tokens) for t in held for _ in range(k)], bound)
    return bound


def stage_bound(loop: ExpertIteration, rnd: int, stage: str) -> Bound:
    """The upper bound of one stage of round ``rnd`` not done yet (0 for stages that never pay)."""
    if stage == "judge":
        return judge_bound(loop, rnd)
    if stage == "refine":
        return refine_bound(loop, rnd)
    if stage == "eval":
        return eval_bound(loop, rnd)
    generator = getattr(loop.cfg, "generator", None)  # [generator]: a served model samples in the student's place
    if stage == "generate" and (generator is not None or loop.cfg.student.backend == "openai"):
        train, _ = loop.tasks()
        return served_bound(loop, train, loop.cfg.generate.n, served=generator)
    return Bound()


def plan(loop: ExpertIteration) -> dict[str, Any]:
    """The dry run: per round, the stages that may pay and their bounds; the totals; the budget."""
    from .budget import spend_by_round, total_spent

    spent = spend_by_round(loop.dir)
    rounds = []
    for rnd in range(loop.cfg.rounds + 1):
        stages = ["eval"] if rnd == 0 else ["generate", "judge", *(["refine"] if loop.cfg.refine.model else []),
                                            "eval"]
        entry: dict[str, Any] = {"round": rnd, "stages": {}}
        for name in stages:
            if loop.layout.round(rnd).done(name).exists():
                b = Bound(done=True)
            else:
                b = stage_bound(loop, rnd, name)
            if b.done or b.calls:
                entry["stages"][name] = b.to_json()
        entry["calls_at_most"] = sum(s["calls"] for s in entry["stages"].values())
        entry["cost_usd_at_most"] = round(sum(s["cost_usd"] for s in entry["stages"].values()), 6)
        entry["spent_usd"] = round(sum(spent.get(rnd, {}).values()), 6)
        rounds.append(entry)
    total = round(sum(r["cost_usd_at_most"] for r in rounds), 6)
    before = total_spent(loop.dir)
    limit = loop.cfg.budget.usd
    return {"rounds": rounds, "calls_at_most": sum(r["calls_at_most"] for r in rounds), "cost_usd_at_most": total,
            "spent_usd": round(before, 6), "budget_usd": limit,
            "fits": None if limit is None else before + total <= limit + 1e-9}


def print_plan(p: dict[str, Any], out: str) -> None:
    from .budget import usd

    print(f"dry run of {out}: budget {usd(p['budget_usd'])}, spent so far ${p['spent_usd']:.4f}")
    for r in p["rounds"]:
        parts = []
        for name, s in r["stages"].items():
            if s["done"]:
                parts.append(f"{name} done")
                continue
            who = ", ".join(f"{k} {v['calls']}" for k, v in s["by"].items())
            parts.append(f"{name} at most {s['calls']} calls ({who}), ${s['cost_usd']:.4f}")
        what = "; ".join(parts) if parts else "no paid calls"
        print(f"  round {r['round']}: {what}; round at most ${r['cost_usd_at_most']:.4f}"
              + (f" (spent ${r['spent_usd']:.4f})" if r["spent_usd"] else ""))
    fit = "" if p["fits"] is None else ("; fits in the budget" if p["fits"] else "; may pass the budget: the run "
                                         "stops at a stage boundary when it is reached")
    print(f"  total: at most {p['calls_at_most']} paid calls, at most ${p['cost_usd_at_most']:.4f} more{fit}")


def dry_run_loop(loop: ExpertIteration) -> dict[str, Any]:
    """:func:`plan`, after the checks the real run makes first: the student, the task splits, and that
    the directory is this config's (a run the real one would refuse is refused here, writing nothing)."""
    from ..curation.panel_file import load_panel
    from ..errors import RunStoreError
    from .fingerprint import identity, mismatch
    from .sampling import check_student

    check_student(loop.cfg)
    loop.tasks()
    panel = None if loop.accept_all or loop.cfg.rounds == 0 else load_panel(loop.panel_file())
    problems = mismatch(loop.layout, identity(loop.cfg, loop.arm, panel))
    if problems:
        raise RunStoreError(f"refusing to plan the run in {loop.dir}: " + "; ".join(problems))
    return plan(loop)
