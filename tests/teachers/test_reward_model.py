"""The reward-model teacher: micro-batched scores equal one-by-one scores; score maps; threshold; training."""

from __future__ import annotations

import asyncio
import json
import math
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tgrs_agents.curation.panel import Panel  # noqa: E402
from tgrs_agents.curation.panel_file import load_panel, panel_from_dict  # noqa: E402
from tgrs_agents.errors import ConfigError  # noqa: E402
from tgrs_agents.student.tiny import train_tokenizer  # noqa: E402
from tgrs_agents.student.train_reward import (  # noqa: E402
    RewardSettings,
    auroc,
    build_reward_model,
    default_rows,
    rows_from_run,
    train_reward_model,
)
from tgrs_agents.tasks.arithmetic_data import trajectory  # noqa: E402
from tgrs_agents.teachers.base import BuildContext, teacher_class  # noqa: E402
from tgrs_agents.teachers.reward_model import RewardModelConfig, RewardModelTeacher, map_score  # noqa: E402
from tgrs_agents.types import Candidate  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: intra-op threads cost more than they give, and oversubscribe a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def candidates(n: int, seed: int = 0) -> list[Candidate]:
    import random

    rng = random.Random(seed)
    flavours = ("good", "wrong_tool", "wrong_copy", "no_marker")
    out = []
    for i in range(n):
        rec = trajectory(i, rng, flavour=flavours[i % 4])
        if i % 3 == 0:  # vary the length, so batches really pad
            rec["messages"][-1]["content"] += " Checked twice." * (i % 4)
        out.append(Candidate.model_validate(rec))
    return out


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny reward model (one label) saved like a real checkpoint."""
    d = tmp_path_factory.mktemp("rm") / "model"
    tok = train_tokenizer(["What is 59 - 7 + 13? Checked twice."])
    model = build_reward_model(tok, RewardSettings(seed=3))
    model.config.pad_token_id = None  # the teacher must set it from the tokenizer
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


def teacher(rm_dir: Path, **kw) -> RewardModelTeacher:
    cfg = RewardModelConfig(name="rm", model=rm_dir.name, device="cpu", **kw)
    return RewardModelTeacher(cfg, BuildContext(base_dir=rm_dir.parent))  # model path relative to the panel


def test_registered_kind_and_pad_token_set(rm_dir):
    assert teacher_class("reward_model") is RewardModelTeacher
    t = teacher(rm_dir)
    assert t.model.config.pad_token_id == t.tokenizer.pad_token_id is not None
    assert t.cost_rank == 1 and not getattr(t, "paid", False)


def test_micro_batched_scores_equal_one_by_one(rm_dir):
    cands = candidates(24)
    t = teacher(rm_dir, max_batch_size=8, max_wait_ms=20)
    single = [t.raw_scores([c])[0] for c in cands]
    lengths = {len(t.encode(c)) for c in cands}
    assert len(lengths) > 3  # the batches hold rows of different lengths

    async def go():
        try:
            return await asyncio.gather(*(t.judge(c) for c in cands))
        finally:
            await t.aclose()

    verdicts = asyncio.run(go())
    assert t.batcher.stats.calls == 3 and t.batcher.stats.largest == 8  # 24 concurrent judges, 3 passes
    for v, raw in zip(verdicts, single, strict=True):
        assert v.score == pytest.approx(map_score(raw, "sigmoid"), abs=1e-5)
        assert f"raw={raw:.4g}"[:8] in v.rationale
    assert len({round(v.score, 6) for v in verdicts}) > 1


def test_score_maps_and_threshold(rm_dir):
    assert map_score(0.0, "sigmoid") == 0.5
    assert map_score(2.0, "sigmoid") == pytest.approx(1 / (1 + math.exp(-2)))
    assert map_score(-800.0, "sigmoid") == 0.0 and map_score(800.0, "sigmoid") == 1.0  # no overflow
    assert map_score(1.0, "minmax", -1.0, 3.0) == 0.5
    assert map_score(-5.0, "minmax", -1.0, 3.0) == 0.0 and map_score(9.0, "minmax", -1.0, 3.0) == 1.0

    c = candidates(1)[0]
    raw = teacher(rm_dir).raw_scores([c])[0]
    mm = teacher(rm_dir, score_map="minmax", min=raw - 1.0, max=raw + 3.0)
    assert asyncio.run(mm.judge(c)).score == pytest.approx(0.25, abs=1e-5)

    score = map_score(raw, "sigmoid")
    at = teacher(rm_dir, threshold=round(score, 6) - 1e-7)
    above = teacher(rm_dir, threshold=min(1.0, score + 1e-4))
    assert at.to_verdict(raw).passed  # score >= threshold passes (inclusive)
    assert not above.to_verdict(raw).passed
    assert "< threshold" in above.to_verdict(raw).rationale


def test_two_label_classifier_uses_softmax_of_the_positive_class(tmp_path):
    tok = train_tokenizer(["What is 1 + 2?"])
    model = build_reward_model(tok, RewardSettings(seed=1))
    from transformers import LlamaForSequenceClassification

    cfg = model.config
    cfg.num_labels = 2
    two = LlamaForSequenceClassification(cfg)
    t = RewardModelTeacher(RewardModelConfig(name="rm2", model="unused", device="cpu"), model=two, tokenizer=tok)
    c = candidates(1)[0]
    ids = torch.tensor([t.encode(c)])
    with torch.inference_mode():
        probs = torch.softmax(two(input_ids=ids).logits[0], -1)
    v = asyncio.run(t.judge(c))
    assert v.score == pytest.approx(float(probs[1]), abs=1e-5)


def test_config_errors():
    with pytest.raises(ConfigError, match="min and max"):
        panel_from_dict({"teacher": [{"name": "rm", "kind": "reward_model", "model": "x", "score_map": "minmax"}]},
                        base_dir=Path("."))
    with pytest.raises(ConfigError, match="min < max"):
        panel_from_dict({"teacher": [{"name": "rm", "kind": "reward_model", "model": "x", "score_map": "minmax",
                                      "min": 1, "max": 1}]}, base_dir=Path("."))
    cfg = RewardModelConfig(name="rm", model="m", max_batch_size=4, device="cpu")
    assert "max_batch_size" not in cfg.identity() and "device" not in cfg.identity()  # operational knobs
    assert "threshold" in cfg.identity()


def test_shipped_panel_files_validate():
    panel = load_panel(ROOT / "teachers" / "panel-local.toml")
    kinds = [t.kind for t in panel.teachers]
    assert kinds == ["final_answer", "reward_model", "student_compat", "openai"]  # cost order: local first
    ranks = [t.cost_rank for t in panel.teachers]
    assert ranks == sorted(ranks) and ranks[-1] > ranks[-2]


def test_auroc():
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5  # ties count one half
    assert auroc([0, 1, 0, 1], [0.1, 0.4, 0.5, 0.8]) == 0.75
    assert auroc([1, 1], [0.1, 0.2]) is None


def test_train_a_tiny_reward_model_and_judge_with_it(tmp_path):
    rows = default_rows(320, seed=5)
    assert {r["label"] for r in rows} == {0, 1}
    res = train_reward_model(rows, tmp_path / "rm", settings=RewardSettings(steps=40, batch_size=16, lr=2e-3))
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-5:]) / 5
    assert last < first  # it learns something
    assert res.heldout_rows > 0 and res.train_rows + res.heldout_rows == len(rows)
    assert res.heldout_auroc is not None and 0.0 <= res.heldout_accuracy <= 1.0
    saved = json.loads((tmp_path / "rm" / "reward.json").read_text())
    assert saved["heldout_auroc"] == res.heldout_auroc

    # the saved model is a reward_model teacher in a panel, after the verifier
    (tmp_path / "panel.toml").write_text(
        'policy = "unanimous"\n\n[[teacher]]\nname = "answer"\nkind = "final_answer"\n\n'
        '[[teacher]]\nname = "rm"\nkind = "reward_model"\nmodel = "rm"\ndevice = "cpu"\nthreshold = 0.0\n')
    panel = Panel.from_config(load_panel(tmp_path / "panel.toml"))

    async def go():
        try:
            return [await panel.judge(Candidate.model_validate(r)) for r in rows[:8]]
        finally:
            await panel.aclose()

    for (decision, _), row in zip(asyncio.run(go()), rows[:8], strict=True):
        assert decision.accepted == bool(row["label"])  # threshold 0: the rm passes whatever reaches it
        if not row["label"]:
            assert decision.saved == ("rm",)  # the verifier's rejection saved the model call


def test_rows_from_run(tmp_path):
    rows = default_rows(8, seed=2)
    (tmp_path / "accepted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    (tmp_path / "rejected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[3:5]))
    got = rows_from_run(tmp_path)
    assert [r["label"] for r in got] == [1, 1, 1, 0, 0]
    with pytest.raises(FileNotFoundError):
        rows_from_run(tmp_path / "nothing")


def test_without_a_chat_template_the_model_reads_the_judges_transcript():
    from tgrs_agents.chat import JUDGE, render
    from tgrs_agents.teachers.reward_model import render_conversation

    class NoTemplate:
        chat_template = None

    cand = Candidate.model_validate(trajectory(0, random.Random(0)))
    text = render_conversation(NoTemplate(), cand)
    assert text == render(cand.messages, JUDGE)
    assert "[assistant calls calculator]" in text and "[tool result" in text  # tool calls are read too
