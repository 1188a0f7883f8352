"""``tgrs export --to dpo``: preference pairs from a hand-made curate run (ties, reversed scores, teacher
errors, errored generations, different prompts, margins, per-task caps, the veto in the metadata), from a
loop round, and from a real curate run; the file loads in ``datasets`` and trains one ``DPOTrainer`` step
on the tiny student."""

from __future__ import annotations

import asyncio
import json
import math
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import pytest
from export_data import ROOT, call, result, user

from tgrs_agents.cli import main as cli_main
from tgrs_agents.curation.panel_file import load_panel
from tgrs_agents.curation.run import CurateOptions, curate
from tgrs_agents.curation.store import verdict_record
from tgrs_agents.errors import ConfigError
from tgrs_agents.export import ExportReport, Hygiene, PairSettings, export_pairs, export_run, pair_candidates
from tgrs_agents.tasks.arithmetic_data import CALCULATOR_TOOL, trajectory
from tgrs_agents.types import Candidate, Verdict

datasets = pytest.importorskip("datasets")

OK = ("ok", True, 1.0, None)


def traj(cid: str, task: str, question: str, answer: str, *, system: str | None = None,
         **extra: Any) -> dict[str, Any]:
    head = [{"role": "system", "content": system}] if system else []
    return {"id": cid, "task_id": task, "tools": [CALCULATOR_TOOL], **extra, "messages": [
        *head, user(f"What is {question}?"), {"role": "assistant", "content": None,
                                               "tool_calls": [call(f"c-{cid}", question)]},
        result(f"c-{cid}", "5"), {"role": "assistant", "content": answer}]}


# (trajectory, accepted, panel score, decided_by, verdicts as (teacher, passed, score, error) in file order)
RUN: list[tuple[dict[str, Any], bool | None, float, str | None, list[tuple[str, bool, float, str | None]]]] = [
    (traj("a1", "sum", "2+3", "Answer: 5"), True, 1.0, None, [OK]),
    (traj("r1", "sum", "2+3", "Answer: 6"), False, 0.5, "answer", [OK, ("answer", False, 0.0, None)]),
    (traj("a2", "sum", "2+3", "Answer: 5."), True, 0.9, None, [OK]),
    (traj("r2", "sum", "2+3", "It is 5"), False, 0.0, "format", [("format", False, 0.0, None)]),
    (traj("ta", "tie", "1+4", "Answer: 5"), True, 0.5, None, [OK]),
    (traj("tr", "tie", "1+4", "Answer: 5!"), False, 0.5, "best_k", [OK]),
    (traj("ra", "rev", "0+5", "Answer: 5"), True, 0.3, None, [OK]),
    (traj("rr", "rev", "0+5", "Answer: 7"), False, 0.6, "answer", [("answer", False, 0.6, None)]),
    (traj("ea", "err", "5+0", "Answer: 5"), True, 1.0, None, [OK]),
    (traj("er1", "err", "5+0", "Answer: 0"), False, 0.0, "answer",
     [("judge", False, 0.0, "timeout"), ("answer", False, 0.0, None)]),
    (traj("er2", "err", "5+0", "Answer: 1", metadata={"stop": "error"}), False, 0.0, "answer",
     [("answer", False, 0.0, None)]),
    (traj("er3", "err", "5+0", "Answer: 2"), False, 0.25, "judge",
     [OK, ("judge", False, 0.0, "rate limited"), ("judge", False, 0.25, None)]),  # retried after the error
    (traj("pa", "prompt", "4+1", "Answer: 5"), True, 1.0, None, [OK]),
    (traj("pr", "prompt", "4+1", "Answer: 9", system="Be brief."), False, 0.0, "answer",
     [("answer", False, 0.0, None)]),
    (traj("la", "lone", "3+2", "Answer: 5"), True, 1.0, None, [OK]),
    (traj("lb", "lone", "3+2", "Answer: 5 (checked)"), True, 0.8, None, [OK]),
    (traj("undecided", "sum", "2+3", "Answer: 5"), None, 0.0, None, [("judge", False, 0.0, "overloaded")]),
]
NEVER = {"er1", "er2", "undecided", "pr", "tr", "rr"}


def write_run(d: Path, run: list[Any] = RUN) -> Path:
    """A curate run directory as ``tgrs curate`` writes it, with a bad line at the end of rejected.jsonl."""
    d.mkdir(parents=True)
    (d / "input.jsonl").write_text("".join(json.dumps(t) + "\n" for t, *_ in run))
    (d / "run.json").write_text(json.dumps({"input": str(d / "input.jsonl")}))
    (d / "summary.json").write_text(json.dumps({"input_format": "openai"}))
    files: dict[str, list[str]] = {"accepted": [], "rejected": [], "verdicts": []}
    for line, (t, accepted, score, decided_by, verdicts) in enumerate(run, start=1):
        for teacher, passed, s, error in verdicts:
            v = Verdict(teacher=teacher, passed=passed, score=s, error=error)
            files["verdicts"].append(json.dumps(verdict_record(line, t["id"], v)))
        if accepted is not None:
            rec = {**Candidate.model_validate(t).sft_record(), "line": line, "score": score, "reason": "hand-made",
                   "decided_by": decided_by, "saved": []}
            files["accepted" if accepted else "rejected"].append(json.dumps(rec))
    files["rejected"].append("{not json")
    for name, lines in files.items():
        (d / f"{name}.jsonl").write_text("".join(x + "\n" for x in lines))
    return d


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run")


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


def test_default_pairs_the_best_accepted_with_the_worst_rejected_once_per_task(run: Path) -> None:
    ps = pair_candidates(run)
    assert ids(ps.rows) == ["a1|r2", "ea|er3"]
    c = ps.counts
    assert (c["read"], c["read_accepted"], c["read_rejected"], c["set_aside"]) == (17, 8, 9, 1)
    assert (c["dropped_teacher_error"], c["dropped_errored"]) == (1, 1)  # er1 (judge timed out), er2
    assert (c["skipped_tie"], c["skipped_reversed"], c["skipped_cap"]) == (1, 1, 1)  # tr, rr; (a2, r1) over the cap
    assert (c["tasks"], c["tasks_paired"], c["tasks_with_several_prompts"], c["written"]) == (6, 2, 1, 2)
    assert {d["id"]: d["rule"] for d in ps.dropped} == {"er1": "teacher_error", "er2": "errored"}
    assert "judge answered with an error" in ps.dropped[0]["detail"]
    row = ps.rows[0]
    assert row["task_id"] == "sum" and row["prompt"] == [{"role": "user", "content": "What is 2+3?"}]
    assert [m["role"] for m in row["chosen"]] == ["assistant", "tool", "assistant"] == [
        m["role"] for m in row["rejected"]]
    assert (row["chosen"][-1]["content"], row["rejected"][-1]["content"]) == ("Answer: 5", "It is 5")
    tc = row["chosen"][0]["tool_calls"][0]
    assert tc["id"] == row["chosen"][1]["tool_call_id"] == "c-a1"
    assert tc["function"]["arguments"] == {"expression": "2+3"}  # an object, as in the hf export and pool.jsonl
    assert json.loads(row["tools"]) == [CALCULATOR_TOOL]
    assert all(v is not None for m in row["prompt"] + row["chosen"] + row["rejected"] for v in m.values())
    assert row["metadata"] == {"chosen_id": "a1", "rejected_id": "r2", "chosen_score": 1.0, "rejected_score": 0.0,
                               "margin": 1.0, "chosen_accepted": True, "rejected_accepted": False,
                               "vetoed_by": "format", "failed_by": ["format"], "selection": "accepted-rejected"}
    # the judge's error on er3 was retried: its latest verdict is a failure, so er3 pairs, vetoed by the judge
    assert ps.rows[1]["metadata"]["vetoed_by"] == "judge" and ps.rows[1]["metadata"]["failed_by"] == ["judge"]
    assert ps.rows[1]["metadata"]["margin"] == 0.75


@pytest.mark.parametrize(("settings", "expected", "skipped"), [
    (PairSettings(pairs_per_task=None), ["a1|r2", "a2|r1", "ea|er3"], {}),
    (PairSettings(pairs_per_task=None, min_margin=0.45), ["a1|r2", "ea|er3"], {"skipped_margin": 1}),
    (PairSettings(mode="all", pairs_per_task=None), ["a1|r2", "a2|r2", "a1|r1", "a2|r1", "ea|er3"], {}),
    (PairSettings(mode="all", pairs_per_task=3), ["a1|r2", "a2|r2", "a1|r1", "ea|er3"], {"skipped_cap": 1}),
    (PairSettings(mode="all", pairs_per_task=None, min_margin=0.75), ["a1|r2", "a2|r2", "ea|er3"],
     {"skipped_margin": 2}),
    (PairSettings(mode="best-worst", pairs_per_task=None), ["a1|r2", "a2|r1", "ea|er3", "la|lb"], {}),
    (PairSettings(mode="best-worst"), ["a1|r2", "ea|er3", "la|lb"], {"skipped_cap": 1}),
    # hard: the best accepted with the rejected closest to acceptance (r1 0.5 before r2 0.0)
    (PairSettings(mode="hard"), ["a1|r1", "ea|er3"], {"skipped_cap": 1}),
    (PairSettings(mode="hard", pairs_per_task=None), ["a1|r1", "a1|r2", "ea|er3"], {}),
    (PairSettings(mode="hard", pairs_per_task=None, min_margin=0.75), ["a1|r2", "ea|er3"], {"skipped_margin": 1}),
])
def test_modes_margins_and_caps(run: Path, settings: PairSettings, expected: list[str],
                                skipped: dict[str, int]) -> None:
    ps = pair_candidates(run, settings)
    assert ids(ps.rows) == expected
    assert not NEVER & {i for r in ps.rows for i in r["id"].split("|")}
    assert ps.counts["skipped_tie"] == 1  # (ta, tr): 0.5 against 0.5 in every mode
    assert ps.counts["skipped_reversed"] == 1  # (ra, rr): the rejected one scored higher; never chosen over it
    for key in ("skipped_margin", "skipped_cap"):
        assert ps.counts[key] == skipped.get(key, 0), key
    assert all(r["metadata"]["selection"] == settings.mode for r in ps.rows)
    if settings.mode == "best-worst":  # ranked by score whether accepted or not: two accepted may pair
        lone = ps.rows[-1]["metadata"]
        assert (lone["rejected_accepted"], lone["vetoed_by"], lone["margin"]) == (True, None, 0.2)


def near(cid: str, answer: str, accepted: bool, score: float, teacher: str = "answer") -> tuple[Any, ...]:
    verdicts = [OK] if accepted else [("format", True, 1.0, None), (teacher, False, 0.0, None)]
    return traj(cid, "near", "2+2", answer), accepted, score, None if accepted else teacher, verdicts


# one task: rejected candidates at 0.5 (twice: the earlier line first), 0.0 and 0.9, one tied with the best
NEAR = [near("garbled", "It is 4", False, 0.0, "format"), near("good", "Answer: 4", True, 0.9),
        near("off-b", "Answer: 5", False, 0.5), near("tied", "Answer: 4!", False, 0.9, "judge"),
        near("off-a", "Answer: 3", False, 0.5), near("ok", "Answer: 4.", True, 0.8),
        near("high", "Answer: 4?", False, 0.95, "judge")]


def test_hard_pairs_the_near_misses_closest_first(tmp_path: Path) -> None:
    """``hard`` skips a rejected candidate tied with the best accepted (tied) and one scored above it (high),
    then takes the rejected by score, an equal score going to the earlier line (off-b before off-a), the
    garbled one last; the chosen side is always the best accepted. The default pairs the garbled one."""
    d = write_run(tmp_path / "near", NEAR)
    ps = pair_candidates(d, PairSettings(mode="hard", pairs_per_task=None))
    assert ids(ps.rows) == ["good|off-b", "good|off-a", "good|garbled"]
    assert (ps.counts["skipped_tie"], ps.counts["skipped_reversed"]) == (1, 1)
    assert [r["metadata"]["margin"] for r in ps.rows] == [0.4, 0.4, 0.9]
    assert [r["metadata"]["vetoed_by"] for r in ps.rows] == ["answer", "answer", "format"]
    assert all(r["metadata"]["selection"] == "hard" for r in ps.rows)
    assert ids(pair_candidates(d, PairSettings(mode="hard", pairs_per_task=2)).rows) == ["good|off-b", "good|off-a"]
    assert ids(pair_candidates(d, PairSettings(mode="hard", min_margin=0.5)).rows) == ["good|garbled"]
    assert ids(pair_candidates(d).rows) == ["good|garbled"]  # accepted-rejected: the easy negative
    # deterministic whatever the file order: reversed, the equal scores swap lines and so their order
    rev = pair_candidates(write_run(tmp_path / "rev", NEAR[::-1]), PairSettings(mode="hard", pairs_per_task=None))
    assert ids(rev.rows) == ["good|off-a", "good|off-b", "good|garbled"]
    from tgrs_agents.loop.config import TrainSection  # the loop's [train] pairs takes the mode too

    assert TrainSection(method="dpo", pairs="hard").pair_settings() == PairSettings(mode="hard")


def test_settings_and_hygiene_are_checked(run: Path) -> None:
    for bad, field in ((dict(mode="top"), "pairs"), (dict(pairs_per_task=0), "pairs_per_task"),
                       (dict(min_margin=1.5), "min_margin")):
        with pytest.raises(ConfigError, match=f"field '{field}'"):
            PairSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="field 'drop_errored'"):
        pair_candidates(run, hygiene=Hygiene(drop_errored=False))
    with pytest.raises(ConfigError, match="not from one file"):
        export_pairs(run / "accepted.jsonl", out=run / "x.jsonl")


def test_the_pair_file_loads_in_datasets_with_a_sidecar(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    report = export_run(run, to="dpo", out=out, pairs=PairSettings(pairs_per_task=None))
    assert isinstance(report, ExportReport) and report.counts["written"] == 3
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert ds.num_rows == 3 and {"prompt", "chosen", "rejected", "tools", "metadata"} <= set(ds.column_names)
    assert [r["metadata"]["rejected_id"] for r in ds] == ["r2", "r1", "er3"]
    assert ds[0]["chosen"][-1]["content"] == "Answer: 5" and json.loads(ds[0]["tools"]) == [CALCULATOR_TOOL]
    side = json.loads(Path(f"{out}.export.json").read_text())
    assert side["format"] == "dpo" and side["pairs"] == {"mode": "accepted-rejected", "pairs_per_task": None,
                                                         "min_margin": 0.0}
    assert side["counts"]["written"] == 3 and {d["rule"] for d in side["dropped"]} == {"teacher_error", "errored"}
    assert side["set_aside"][0]["line"] == 9 and "rejected.jsonl" in side["set_aside"][0]["file"]


def test_the_command_line(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.jsonl"
    assert cli_main(["export", str(run), "--to", "dpo", "--out", str(out), "--pairs", "all",
                     "--pairs-per-task", "0", "--min-margin", "0.45"]) == 0
    text = capsys.readouterr().out
    assert "(dpo: all, no cap on pairs a task, margin >= 0.45)" in text
    assert "read 17 (8 accepted, 9 rejected) in 6 tasks, set aside 1, not paired 2 (errored 1, teacher_error 1)" in text
    assert "pairs written 4 from 2 tasks; skipped: tie 1, reversed 1, margin 1" in text
    assert len(out.read_text().splitlines()) == 4
    assert cli_main(["export", str(run), "--to", "dpo", "--out", str(out), "--pairs", "hard"]) == 0
    assert "(dpo: hard, at most 1 pairs a task, margin >= 0)" in capsys.readouterr().out
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a1|r1", "ea|er3"]
    assert cli_main(["export", str(run), "--to", "dpo", "--out", str(out), "--pairs-per-task", "-1"]) == 2
    assert "field 'pairs_per_task'" in capsys.readouterr().err
    assert cli_main(["export", str(run), "--to", "dpo", "--out", str(out), "--keep-errored"]) == 2
    assert "never include a generation that errored" in capsys.readouterr().err


def test_a_loop_round_is_paired_with_its_own_candidates_errors(run: Path, tmp_path: Path) -> None:
    loop = tmp_path / "loop"
    for k in (1, 2):
        shutil.copytree(run, loop / f"round-{k}" / "curate")
    cands = [{**t, "metadata": {"stop": "error"}} if t["id"] == "a1" else t for t, *_ in RUN]
    (loop / "round-2" / "candidates.jsonl").write_text("".join(json.dumps(t) + "\n" for t in cands))
    last = export_pairs(loop, out=tmp_path / "last.jsonl")
    assert (last.kind, last.round, last.counts["dropped_errored"]) == ("loop", 2, 2)  # a1 failed too this round
    assert [json.loads(x)["id"] for x in (tmp_path / "last.jsonl").read_text().splitlines()] == ["a2|r2", "ea|er3"]
    first = export_pairs(loop, out=tmp_path / "first.jsonl", round=1)  # no candidates.jsonl: the run's input
    assert (first.round, first.counts["dropped_errored"], first.counts["written"]) == (1, 1, 2)
    with pytest.raises(ConfigError, match="round 3 was not judged; judged rounds: 1, 2"):
        export_pairs(loop, out=tmp_path / "x.jsonl", round=3)


# ---------------------------------------------------------------------- a real run, and DPO on it

@pytest.fixture(scope="module")
def real_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four candidates a task (right, no answer marker, copied wrong, right) judged by the shipped verifier
    panel, paired with no cap."""
    d = tmp_path_factory.mktemp("real")
    rng = random.Random(0)
    rows = [trajectory(4 * t + j, rng, task_id=f"task-{t}", flavour=flavour, expr=f"{t + 2} + {3 * t}",
                       value=4 * t + 2)
            for t in range(4) for j, flavour in enumerate(("good", "no_marker", "wrong_copy", "good"))]
    (d / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    panel = load_panel(ROOT / "teachers" / "panel-verifiers.toml")
    asyncio.run(curate(d / "in.jsonl", panel, d / "run", options=CurateOptions(cache=False)))
    export_pairs(d / "run", out=d / "pairs.jsonl", settings=PairSettings(pairs_per_task=None))
    return d / "pairs.jsonl"


def test_a_real_curate_run_records_the_vetoing_teacher(real_pairs: Path) -> None:
    rows = [json.loads(x) for x in real_pairs.read_text().splitlines()]
    assert len(rows) == 8
    meta = [(r["metadata"]["chosen_id"], r["metadata"]["rejected_id"], r["metadata"]["vetoed_by"],
             r["metadata"]["failed_by"], r["metadata"]["margin"]) for r in rows[:2]]
    # format fails the missing marker (score 0); answer fails the wrong copy after format passed (0.5)
    assert meta == [("cand-0", "cand-1", "format", ["format"], 1.0), ("cand-3", "cand-2", "answer", ["answer"], 0.5)]
    assert rows[0]["rejected"][-1]["content"].startswith("The result is")


def test_dpo_trainer_takes_the_pair_file_unchanged_on_the_tiny_student(real_pairs: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from tgrs_agents.student import tiny

    ds = datasets.load_dataset("json", data_files=str(real_pairs), split="train").select(range(4))
    tok = tiny.train_tokenizer([json.dumps(r) for r in ds])
    base = tiny.save(tiny.build_model(tok, seed=0), tok, tmp_path / "base")
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2, per_device_train_batch_size=2, learning_rate=1e-3,
                     max_length=128, use_cpu=True, bf16=False, activation_checkpointing=False, logging_steps=1,
                     save_strategy="no", report_to="none", disable_tqdm=True, dataloader_pin_memory=False, seed=0)
    model = AutoModelForCausalLM.from_pretrained(base)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with warnings.catch_warnings():  # TRL 1.16 reads transformers 5's deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        trainer = DPOTrainer(model=model, args=args, train_dataset=ds,
                             processing_class=AutoTokenizer.from_pretrained(base))
        out = trainer.train()
    assert out.global_step == 2 and math.isfinite(out.training_loss)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the prompt alone is a prefix of prompt + completion (nothing of the prompt is cut), and the completions
    # are the assistant turns with the tool call and its result, in the tiny template
    row, rec = trainer.train_dataset[0], ds[0]
    question = rec["prompt"][0]["content"]
    assert tok.decode(row["prompt_ids"]) == f"<|user|>{question}<|end|><|assistant|>"
    chosen, rejected = tok.decode(row["chosen_ids"]), tok.decode(row["rejected_ids"])
    # arguments are objects: the tiny template's compact call syntax, as the project's SFT renders it
    expr = rec["chosen"][0]["tool_calls"][0]["function"]["arguments"]["expression"]
    assert chosen.startswith(f"<|call|>calculator {expr}<|end|>") and chosen.endswith(
        f"<|assistant|>{rec['chosen'][-1]['content']}<|end|>")
    assert "<|tool|>" in rejected and rejected.endswith(f"<|assistant|>{rec['rejected'][-1]['content']}<|end|>")


@pytest.mark.parametrize("template", ["student", "qwen-style"])
def test_dpo_trainer_renders_a_pair_as_the_projects_sft_renders_the_conversation(real_pairs: Path, tmp_path: Path,
                                                                                  template: str) -> None:
    """One rendering: prompt + chosen, as DPOTrainer tokenises them, are the project's SFT tokens of that
    conversation (arguments are objects, so a ``tojson`` template does not quote them twice)."""
    pytest.importorskip("trl")
    from export_data import loop_rendering
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from tgrs_agents.loop.distill import encode
    from tgrs_agents.student import tiny

    rows = [json.loads(x) for x in real_pairs.read_text().splitlines()]
    ds = datasets.load_dataset("json", data_files=str(real_pairs), split="train", cache_dir=str(tmp_path / "c"))
    assert [dict(r) for r in ds] == rows  # objects load back as written: no key merged in, none filled with null
    rec = rows[0]
    args = rec["chosen"][0]["tool_calls"][0]["function"]["arguments"]
    assert isinstance(args, dict) and set(args) == {"expression"}  # an object, as in pool.jsonl
    tok = tiny.train_tokenizer([json.dumps(r) for r in rows])
    if template == "qwen-style":
        tok.chat_template = loop_rendering().QWEN_STYLE
    ours = encode(tok, {"messages": rec["prompt"] + rec["chosen"], "tools": rec["tools"]}, 4096)
    config = DPOConfig(output_dir=str(tmp_path / "dpo"), max_length=4096, use_cpu=True, bf16=False,
                       activation_checkpointing=False, report_to="none", disable_tqdm=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL's and transformers' advice, deprecations
        base = tiny.save(tiny.build_model(tok, seed=0, max_position_embeddings=4096), tok, tmp_path / "base")
        trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(base), args=config,
                             train_dataset=ds.select([0]), processing_class=tok)
    row = trainer.train_dataset[0]
    assert list(row["prompt_ids"]) + list(row["chosen_ids"]) == ours["input_ids"]
    text = tok.decode(ours["input_ids"])
    assert "<|call|>calculator " in text or '"arguments": {"expression": "' in text  # rendered once, not twice
