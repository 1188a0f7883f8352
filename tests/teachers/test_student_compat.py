"""The student-compatibility teacher: IFD ranks mismatched instruction/response pairs above matched ones
on a briefly warm-started tiny student; bounds hold exactly as documented; batching changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tgrs_agents.curation.panel_file import panel_from_dict  # noqa: E402
from tgrs_agents.errors import ConfigError  # noqa: E402
from tgrs_agents.loop.distill import SFTSettings, distill  # noqa: E402
from tgrs_agents.student.tiny import build_model, save, train_tokenizer  # noqa: E402
from tgrs_agents.student.train_reward import auroc  # noqa: E402
from tgrs_agents.tasks.arithmetic import demonstration, seed_demonstrations, splits  # noqa: E402
from tgrs_agents.teachers.base import teacher_class  # noqa: E402
from tgrs_agents.teachers.student_compat import (  # noqa: E402
    Bounds,
    CompatScores,
    StudentCompatConfig,
    StudentCompatTeacher,
    StudentScorer,
    split_instruction,
    transcript,
)
from tgrs_agents.types import Candidate  # noqa: E402

N_PAIRS = 24


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: intra-op threads cost more than they give, and oversubscribe a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")  # distill() keeps the thread count when this is set
        yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """The tiny student after 150 SFT steps on clean calculator demonstrations (it learns to copy operands)."""
    d = tmp_path_factory.mktemp("student")
    train, held = splits(300, N_PAIRS, seed=0)
    demos = seed_demonstrations(train, noise=0.0, seed=0)
    corpus = [m.get("content") or "" for x in demos for m in x["messages"]]
    tok = train_tokenizer(corpus + [t.messages[0].text for t in held])
    init = save(build_model(tok, seed=0), tok, d / "init")
    distill(init, demos, d / "model", SFTSettings(steps=150, batch_size=16, lr=2e-3, backend="torch"))
    return d / "model"


@pytest.fixture(scope="module")
def pairs() -> tuple[list[Candidate], list[Candidate]]:
    """Held-out demonstrations (matched) and the same responses under the next task's question (mismatched)."""
    _, held = splits(300, N_PAIRS, seed=0)
    matched = [Candidate.model_validate(demonstration(t)) for t in held]
    mismatched = []
    for i, t in enumerate(held):
        rec = demonstration(held[(i + 1) % len(held)])
        rec["id"], rec["messages"][0] = f"mm-{i}", t.messages[0].model_dump(exclude_none=True)
        mismatched.append(Candidate.model_validate(rec))
    return matched, mismatched


@pytest.fixture(scope="module")
def scorer(student) -> StudentScorer:
    return StudentScorer.load(str(student), device="cpu", rifd_prompt="Guess the question: {response}")


def judge_all(t: StudentCompatTeacher, cands: list[Candidate]):
    async def go():
        try:
            return await asyncio.gather(*(t.judge(c) for c in cands))
        finally:
            await t.aclose()

    return asyncio.run(go())


def test_ifd_ranks_mismatched_pairs_above_matched_ones(scorer, pairs):
    matched, mismatched = pairs
    s_m, s_x = scorer.score_batch(matched), scorer.score_batch(mismatched)
    ifd_m, ifd_x = [s.ifd for s in s_m], [s.ifd for s in s_x]
    assert all(0 < v for v in ifd_m + ifd_x)
    # paired: the same response under its own question vs under another one
    # (mismatched[i] carries the response of matched[i + 1])
    same_response = [(ifd_x[i], ifd_m[(i + 1) % len(ifd_m)]) for i in range(len(ifd_x))]
    ranked = sum(x > m for x, m in same_response) / len(same_response)
    assert ranked >= 0.9, same_response
    # pooled: every mismatched pair against every matched one
    roc = auroc([0] * len(ifd_m) + [1] * len(ifd_x), ifd_m + ifd_x)
    assert roc >= 0.7, (roc, sorted(ifd_m), sorted(ifd_x))
    assert sorted(ifd_x)[len(ifd_x) // 2] > sorted(ifd_m)[len(ifd_m) // 2]
    assert all(s.rifd is not None and s.rifd > 0 for s in s_m + s_x)


def test_teacher_batches_and_keeps_candidates_inside_bounds(student, scorer, pairs):
    matched, mismatched = pairs
    cands = matched + mismatched
    exact = scorer.score_batch(cands)
    ifds = sorted(s.ifd for s in exact)
    cut = (ifds[len(ifds) // 2 - 1] + ifds[len(ifds) // 2]) / 2  # half the candidates on each side
    cfg = StudentCompatConfig(name="fit", model=str(student), ifd_max=cut, device="cpu", max_batch_size=16,
                              max_wait_ms=50, rifd_prompt="Guess the question: {response}")
    t = StudentCompatTeacher(cfg)
    verdicts = judge_all(t, cands)
    assert t.batcher.stats.calls == 3 and t.batcher.stats.largest == 16  # 48 concurrent judges, 3 batches
    for v, s in zip(verdicts, exact, strict=True):
        assert v.passed == (s.ifd < cut)
        assert v.score == pytest.approx(1 - min(s.ifd, 1.0), abs=1e-4)  # batched == one by one
        assert v.rationale.startswith(f"ifd={s.ifd:.2g}"[:6]) and " rifd=" in v.rationale
        if not v.passed:
            assert f">= ifd_max {cut:g}" in v.rationale
    assert sum(v.passed for v in verdicts) == len(cands) // 2


def test_bounds_lower_inclusive_upper_exclusive():
    b = Bounds(ifd_min=0.2, ifd_max=1.0, rifd_min=0.5, rifd_max=2.0)
    ok = CompatScores(ifd=0.2, rifd=0.5)
    assert b.violation(ok) is None  # both lower bounds are inclusive
    assert b.violation(CompatScores(ifd=0.999, rifd=1.999)) is None
    assert b.violation(CompatScores(ifd=1.0, rifd=1.0)) == "ifd=1 >= ifd_max 1"  # IFD >= 1: misaligned
    assert b.violation(CompatScores(ifd=0.19, rifd=1.0)) == "ifd=0.19 < ifd_min 0.2"
    assert b.violation(CompatScores(ifd=0.5, rifd=2.0)) == "rifd=2 >= rifd_max 2"
    assert b.violation(CompatScores(ifd=0.5, rifd=0.49)) == "rifd=0.49 < rifd_min 0.5"
    assert b.violation(CompatScores(ifd=0.5)) == "rifd not computed"
    assert Bounds().violation(CompatScores(ifd=5.0, rifd=9.0)) == "ifd=5 >= ifd_max 1"
    assert Bounds(ifd_max=None).violation(CompatScores(ifd=5.0)) is None
    assert Bounds().violation(CompatScores(error="no assistant turn to score")) == "no assistant turn to score"


def test_unscorable_candidates_fail_with_a_reason(student, scorer):
    t = StudentCompatTeacher(StudentCompatConfig(name="fit", model=str(student), device="cpu"), scorer=scorer)
    no_instruction = Candidate(id="a", messages=[{"role": "assistant", "content": "Answer: 3"}])
    no_response = Candidate(id="b", messages=[{"role": "user", "content": "What is 1 + 2?"}])
    v1, v2 = judge_all(t, [no_instruction, no_response])
    assert not v1.passed and v1.score == 0 and "no instruction" in v1.rationale
    assert not v2.passed and "no assistant turn" in v2.rationale


def test_split_transcript_and_truncation(student, pairs):
    c = pairs[0][0]
    instruction, response = split_instruction(c)
    assert [m["role"] for m in instruction] == ["user"]
    assert [m["role"] for m in response] == ["assistant", "tool", "assistant"]
    expr = c.messages[1].tool_calls[0].function.arguments
    text = transcript(response)
    assert text.startswith("calculator(") and "-> " in text and text.endswith(c.final_text)
    assert json.loads(expr)["expression"] in text

    short = StudentScorer.load(str(student), device="cpu", max_length=40)
    s = short.score_batch([c])[0]
    assert s.error is None and 0 < s.response_tokens < 40 and s.instruction_tokens > 0
    no_rifd = StudentScorer.load(str(student), device="cpu", rifd=False).score_batch([c])[0]
    assert no_rifd.rifd is None and no_rifd.ifd is not None


def test_registered_kind_and_config_checks():
    assert teacher_class("student_compat") is StudentCompatTeacher
    base = {"name": "fit", "kind": "student_compat", "model": "m"}
    with pytest.raises(ConfigError, match="ifd_min < ifd_max"):
        panel_from_dict({"teacher": [{**base, "ifd_min": 1.0, "ifd_max": 1.0}]}, base_dir=Path("."))
    with pytest.raises(ConfigError, match="compute_rifd"):
        panel_from_dict({"teacher": [{**base, "compute_rifd": False, "rifd_max": 1.0}]}, base_dir=Path("."))
    with pytest.raises(ConfigError, match="response"):
        panel_from_dict({"teacher": [{**base, "rifd_prompt": "no placeholder"}]}, base_dir=Path("."))
    cfg = panel_from_dict({"teacher": [base]}, base_dir=Path(".")).teachers[0]
    assert cfg.cost_rank == 2 and cfg.ifd_max == 1.0
    assert "ifd_max" in cfg.identity() and "max_batch_size" not in cfg.identity()


def test_calibrated_cut_off_drops_the_mismatched_pairs_that_the_ceiling_keeps(student, scorer, pairs, tmp_path):
    matched, mismatched = pairs
    _, more = splits(300, N_PAIRS + 48, seed=0)  # held-out tasks beyond the pairs' own
    assert not {t.id for t in more[N_PAIRS:]} & {c.task_id for c in matched}
    calib = tmp_path / "calibration.jsonl"
    calib.write_text("".join(json.dumps(demonstration(t)) + "\n" for t in more[N_PAIRS:]))
    base = {"name": "fit", "model": str(student), "device": "cpu", "rifd_prompt": "Guess the question: {response}"}
    t = StudentCompatTeacher(StudentCompatConfig(**base, calibration=str(calib)), scorer=scorer)
    assert t.calibrated is not None
    cut, n = t.calibrated
    ifds = sorted(s.ifd for s in scorer.score_batch([Candidate.model_validate(demonstration(x))
                                                     for x in more[N_PAIRS:]]))
    assert n == 48 and cut == pytest.approx(ifds[44] + (ifds[45] - ifds[44]) * 0.65)  # q0.95 of 48: 44.65
    assert t.bounds.ifd_max == cut < 1.0
    calibrated = judge_all(t, matched + mismatched)
    ceiling = judge_all(StudentCompatTeacher(StudentCompatConfig(**base), scorer=scorer), matched + mismatched)
    kept = sum(v.passed for v in calibrated[:N_PAIRS]) / N_PAIRS
    dropped = sum(not v.passed for v in calibrated[N_PAIRS:]) / N_PAIRS
    dropped_by_ceiling = sum(not v.passed for v in ceiling[N_PAIRS:]) / N_PAIRS
    # this briefly trained student tells the pairs apart less well than the demo's (AUROC ~0.8, not 0.999):
    # 95% of good pairs stay inside the cut, and a share of the mismatched ones falls outside
    assert kept >= 0.75 and dropped >= 0.25, (kept, dropped)
    assert dropped_by_ceiling == 0.0  # IFD >= 1 is rare even under the wrong question: the ceiling drops none
    assert any(f">= ifd_max {cut:g}" in v.rationale for v in calibrated)


def test_calibration_file_mistakes_are_config_errors(student, scorer, tmp_path):
    cfg = StudentCompatConfig(name="fit", model=str(student), device="cpu", calibration="nope.jsonl")
    with pytest.raises(ConfigError, match="calibration file not found") as ei:
        StudentCompatTeacher(cfg, scorer=scorer)
    assert ei.value.field == "teacher.fit.calibration"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "messages": []}\n')
    with pytest.raises(ConfigError, match="line 1: not a trajectory"):
        StudentCompatTeacher(cfg.model_copy(update={"calibration": str(bad)}), scorer=scorer)


def test_the_loop_calibrates_a_teacher_that_follows_the_student(tmp_path):
    from tgrs_agents.loop.config import LoopConfig
    from tgrs_agents.loop.rounds import ExpertIteration

    panel = panel_from_dict({"teacher": [{"name": "fit", "kind": "student_compat", "model": "{student}"},
                                         {"name": "own", "kind": "student_compat", "model": "{student}",
                                          "calibration": "mine.jsonl"}]}, base_dir=tmp_path)
    loop = ExpertIteration(LoopConfig(base_dir=str(tmp_path), tasks={"n_train": 32, "n_eval": 16}),
                           tmp_path / "run", log=lambda s: None)
    path = loop.calibration(1, panel)
    assert path == tmp_path / "run" / "round-1" / "calibration.jsonl"
    demos = [json.loads(x) for x in path.read_text().splitlines()]
    train, held = loop.tasks()
    used = {t.messages[0].text for t in [*train, *held]}
    assert len(demos) == 128 and not {d["messages"][0]["content"] for d in demos} & used
    fit, own = ExpertIteration.student_panel(panel, tmp_path / "m", path).teachers
    assert (fit.model, fit.calibration) == (str(tmp_path / "m"), str(path))
    assert own.calibration == "mine.jsonl"  # the user's own is kept
