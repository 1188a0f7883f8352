"""The refine stage: a teacher rewrites, the student chooses by IFD / r-IFD; both versions and the choice
are recorded."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from tgrs_agents.errors import BudgetExhausted, ConfigError, InputError
from tgrs_agents.generate.base import Turn
from tgrs_agents.loop.refine import (
    GeneratorRefiner,
    OpenAIRefiner,
    PromptRefiner,
    changed,
    choose,
    refine_and_select,
    refine_file,
)
from tgrs_agents.tasks.arithmetic_data import trajectory
from tgrs_agents.teachers.student_compat import Bounds, CompatScores
from tgrs_agents.testing.standin import StandIn
from tgrs_agents.types import Candidate


def cand(i: int = 0) -> Candidate:
    return Candidate.model_validate(trajectory(i, random.Random(i)))


S = CompatScores


# ----- the rule -----------------------------------------------------------------------------------

def test_nothing_changed_keeps_the_original():
    assert choose(S(ifd=0.5, rifd=0.5), S(ifd=0.1, rifd=0.1), "none").choice == "original"
    assert choose(S(ifd=1.5), S(ifd=0.1), "none").choice == "dropped"  # and it must be inside the bounds


def test_response_change_lower_rifd_wins_ties_keep_the_original():
    assert choose(S(ifd=0.5, rifd=0.9), S(ifd=0.6, rifd=0.8), "response").choice == "refined"
    sel = choose(S(ifd=0.5, rifd=0.8), S(ifd=0.1, rifd=0.8), "response")
    assert sel.choice == "original" and "rifd 0.8 >= 0.8" in sel.reason
    assert choose(S(ifd=0.5, rifd=0.7), S(ifd=0.6, rifd=0.8), "response").choice == "original"
    # by IFD (or when r-IFD is missing): lower IFD wins
    assert choose(S(ifd=0.5, rifd=0.7), S(ifd=0.4, rifd=0.8), "response", response_metric="ifd").choice == "refined"
    assert choose(S(ifd=0.5), S(ifd=0.4), "response").choice == "refined"


def test_instruction_change_higher_ifd_wins():
    sel = choose(S(ifd=0.3, rifd=0.5), S(ifd=0.6, rifd=0.9), "instruction")
    assert sel.choice == "refined" and "ifd 0.6 > 0.3" in sel.reason
    assert choose(S(ifd=0.3), S(ifd=0.3), "both").choice == "original"
    assert choose(S(ifd=0.3), S(ifd=0.2), "both").choice == "original"


def test_out_of_bounds_preference_falls_back_or_drops():
    sel = choose(S(ifd=0.3), S(ifd=1.2), "instruction")  # refined is "harder" but misaligned (IFD >= 1)
    assert sel.choice == "original" and "out of bounds" in sel.reason
    assert choose(S(ifd=1.1, rifd=0.9), S(ifd=1.3, rifd=0.5), "response").choice == "dropped"
    b = Bounds(ifd_max=1.0, rifd_max=1.0)
    assert choose(S(ifd=0.5, rifd=0.9), S(ifd=0.5, rifd=1.0), "response", b).choice == "original"
    assert choose(S(ifd=0.5, rifd=0.9), S(error="no assistant turn to score"), "response").choice == "original"


def test_changed_detects_the_side():
    c = cand()
    r = c.model_copy(deep=True)
    assert changed(c, r) == "none"
    r.messages[-1] = r.messages[-1].model_copy(update={"content": "Answer: 1"})
    assert changed(c, r) == "response"
    r.messages[0] = r.messages[0].model_copy(update={"content": "Compute it"})
    assert changed(c, r) == "both"


# ----- the stage, with a scripted refiner and scorer ----------------------------------------------

class Scripted(PromptRefiner):
    """Rewrites by a fixed rule, so the test knows what the student will see."""

    def __init__(self, **kw):
        super().__init__(name="scripted", **kw)
        self.prompts_seen: list[str] = []

    async def ask(self, prompt: str) -> str:
        self.prompts_seen.append(prompt)
        if "REQUEST so that" in prompt:
            return "Please compute this with the calculator."
        final = prompt.split("<final>\n", 1)[1].split("\n</final>", 1)[0]
        return final + (" (checked)" if "4" in final else " (unsure)")


class TextScorer:
    """r-IFD low for "(checked)", high for "(unsure)"; IFD from the text length; counts calls."""

    def __init__(self):
        self.calls = 0

    async def scores(self, c: Candidate) -> CompatScores:
        self.calls += 1
        await asyncio.sleep(0)
        final = c.final_text
        rifd = 0.5 if "(checked)" in final else 0.95 if "(unsure)" in final else 0.8
        return CompatScores(ifd=min(0.99, len(c.task_text) / 100), rifd=rifd)


def test_stage_records_both_versions_scores_and_choice(tmp_path):
    cands = [cand(i) for i in range(12)]
    refiner, scorer = Scripted(target="response"), TextScorer()
    out = asyncio.run(refine_and_select(cands, refiner, scorer, log=tmp_path / "refine.jsonl"))
    rows = [json.loads(line) for line in (tmp_path / "refine.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [c.id for c in cands]  # input order
    assert scorer.calls == 2 * len(cands)
    for c, row, in zip(cands, rows, strict=True):
        assert row["original"]["messages"][-1]["content"] == c.final_text
        new = row["refined"]["messages"][-1]["content"]
        assert new.startswith(c.final_text) and new != c.final_text
        assert row["changed"] == "response"
        assert set(row["scores"]) == {"original", "refined"}
        want = "refined" if "(checked)" in new else "original"
        assert row["choice"] == want, row
        assert row["reason"] and row["refiner"] == "scripted"
    assert out.counts["refined"] + out.counts["original"] == len(cands)
    assert 0 < out.counts["refined"] < len(cands)
    by_id = {c.id: c for c in out.chosen}
    for row in rows:
        assert by_id[row["id"]].final_text == row[row["choice"]]["messages"][-1]["content"]
        assert by_id[row["id"]].messages[1].tool_calls == cands[0].__class__.model_validate(
            row["original"]).messages[1].tool_calls  # tool calls are never rewritten


def test_a_killed_refine_stage_pays_for_no_rewrite_twice(tmp_path):
    cands = [cand(i) for i in range(10)]
    inp = tmp_path / "accepted.jsonl"
    inp.write_text("".join(json.dumps(c.model_dump(mode="json")) + "\n" for c in cands))

    class Stalls(Scripted):  # answers 4 rewrites, then the process is killed while the rest wait
        async def ask(self, prompt: str) -> str:
            if len(self.prompts_seen) >= 4:
                await asyncio.Event().wait()
            return await super().ask(prompt)

    async def killed() -> int:
        (tmp_path / "a").mkdir()
        task = asyncio.create_task(refine_file(inp, tmp_path / "a", Stalls(target="response"), TextScorer()))
        journal = tmp_path / "a" / "rewrites.jsonl"
        for _ in range(500):  # at most 5 s
            if journal.exists() and journal.read_text().count("\n") >= 4:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return journal.read_text().count("\n") if journal.exists() else 0

    assert asyncio.run(killed()) == 4 and not (tmp_path / "a" / "refine.jsonl").exists()
    again = Scripted(target="response")
    asyncio.run(refine_file(inp, tmp_path / "a", again, TextScorer()))
    assert len(again.prompts_seen) == 6  # only the rewrites the killed stage had not been paid for
    whole = Scripted(target="response")
    (tmp_path / "b").mkdir()
    asyncio.run(refine_file(inp, tmp_path / "b", whole, TextScorer()))  # one uninterrupted stage
    assert len(whole.prompts_seen) == 10
    assert (tmp_path / "a" / "refine.jsonl").read_text() == (tmp_path / "b" / "refine.jsonl").read_text()
    assert (tmp_path / "a" / "refined.jsonl").read_text() == (tmp_path / "b" / "refined.jsonl").read_text()
    # a journal that is not one: one line naming the file, line and field
    (tmp_path / "a" / "rewrites.jsonl").write_text('{"key": "x"}\n')
    with pytest.raises(InputError, match=r"rewrites\.jsonl:1: field 'rewrite': expected a rewrite record"):
        asyncio.run(refine_file(inp, tmp_path / "a", again, TextScorer()))


def test_instruction_target_and_failing_refiner(tmp_path):
    class Broken(PromptRefiner):
        async def ask(self, prompt):
            raise RuntimeError("teacher down")

    c = cand(3)
    out = asyncio.run(refine_and_select([c], Scripted(target="both"), TextScorer()))
    row = out.records[0]
    assert row["changed"] == "both"
    assert row["refined"]["messages"][0]["content"] == "Please compute this with the calculator."
    # a longer request: higher IFD under TextScorer, and the instruction rule wants higher
    assert row["choice"] == "refined" and "instruction: higher wins" in row["reason"]

    out = asyncio.run(refine_and_select([c], Broken(), TextScorer()))
    assert out.records[0]["choice"] == "original" and "teacher down" in out.records[0]["reason"]
    assert out.records[0]["refined"] is None and out.chosen == [c]

    src = tmp_path / "accepted.jsonl"
    src.write_text(json.dumps(c.sft_record() | {"reference": c.reference}) + "\n")
    res = asyncio.run(refine_file(src, tmp_path / "out", Scripted(), TextScorer()))
    assert (tmp_path / "out" / "refine.jsonl").exists()
    kept = [json.loads(x) for x in (tmp_path / "out" / "refined.jsonl").read_text().splitlines()]
    assert len(kept) == len(res.chosen) == 1


# ----- the OpenAI-compatible refiner through the real SDK and the loopback stand-in -------------------

def test_openai_refiner_through_the_sdk():
    openai = pytest.importorskip("openai")

    def brain(prompt: str) -> dict:
        if "REQUEST so that" in prompt:
            return {"text": "Use the calculator to work out the value."}
        return {"text": "The calculator returned the value. Answer: 42"}

    c = cand(1)

    async def go(srv):
        client = openai.AsyncOpenAI(api_key="k", base_url=srv.url_openai, max_retries=0)
        r = OpenAIRefiner("stand-in-model", client=client, target="both", criteria="Be brief.",
                          price_input_per_mtok=0, price_output_per_mtok=0)
        try:
            return await r.refine(c), r.calls
        finally:
            await r.aclose()

    with StandIn(brain=brain) as srv:
        refined, calls = asyncio.run(go(srv))
        bodies = [q["body"] for q in srv.requests]
    assert calls == 2 and len(bodies) == 2
    assert all(b["response_format"]["json_schema"]["name"] == "rewrite" for b in bodies)
    assert any("Be brief." in b["messages"][0]["content"] for b in bodies)
    assert refined.messages[0].content == "Use the calculator to work out the value."
    assert refined.final_text == "The calculator returned the value. Answer: 42"
    assert refined.messages[1:-1] == c.messages[1:-1] and refined.id == c.id
    assert refined.metadata["refined_by"] == "openai:stand-in-model"
    assert c.final_text != refined.final_text  # the input was not changed


def rewrite_brain(prompt: str) -> dict:
    return {"text": "The calculator returned the value. Answer: 42"}


def test_openai_refiner_crosses_the_paid_call_layer(monkeypatch):
    """Rate limited, retried by the services' policy, costed and budgeted like a judge call."""
    pytest.importorskip("openai")
    from tgrs_agents.paid.cost import Budget
    from tgrs_agents.paid.limits import FakeClock
    from tgrs_agents.paid.retry import RetryPolicy
    from tgrs_agents.paid.services import Services
    from tgrs_agents.testing.standin import FaultPlan

    monkeypatch.setenv("TGRS_TEST_REFINE_KEY", "sk-test-refine-0123456789")
    clock = FakeClock()
    services = Services(clock=clock, retry=RetryPolicy(initial_s=0.25, max_wait_s=10, jitter_s=0))
    with StandIn(FaultPlan(rpm=6000), brain=rewrite_brain) as srv:
        r = OpenAIRefiner("stand-in-model", base_url=srv.url_openai, api_key_env="TGRS_TEST_REFINE_KEY",
                          services=services, rpm=600, price_input_per_mtok=1.0, price_output_per_mtok=2.0)
        srv.script.extend(["429", "500"])

        async def go():
            try:
                return await r.refine(cand(1))
            finally:
                await r.aclose()

        refined = asyncio.run(go())
        outcomes = [q["outcome"] for q in srv.requests]
    assert refined.final_text == "The calculator returned the value. Answer: 42"
    assert outcomes == ["429", "500", "ok"] and r.client.max_retries == 0  # one retry layer: ours
    lim = r._paid.limiter
    assert lim.stats.acquired == 3 and lim.stats.rate_limited == 1
    assert lim.stats.learned["requests"] == 6000  # the headers reached the limiter through the layer
    assert clock.slept == [1.0, 0.5]  # the 429's retry-after, then the policy's back-off (2 x 0.25)
    assert r.usage.requests == 3 and r.usage.cost_usd > 0
    assert services.budget.spent_usd == pytest.approx(r.usage.cost_usd)

    capped = OpenAIRefiner("gpt-4o-mini", client=object(), services=Services(budget=Budget(limit_usd=1e-9)))
    assert capped.adapter.price.input_per_mtok == 0.15  # the list price of a known model

    async def refused():
        with pytest.raises(BudgetExhausted):
            await capped.ask("Rewrite this.")

    asyncio.run(refused())


def test_openai_refiner_configuration_errors_name_the_field(monkeypatch):
    pytest.importorskip("openai")
    monkeypatch.delenv("TGRS_TEST_REFINE_KEY", raising=False)
    with pytest.raises(ConfigError) as ei:
        OpenAIRefiner("gpt-4o-mini", api_key_env="TGRS_TEST_REFINE_KEY")
    assert ei.value.field == "api_key_env" and "TGRS_TEST_REFINE_KEY" in str(ei.value)
    monkeypatch.setenv("TGRS_TEST_REFINE_KEY", "sk-test-secret-value-77")
    with pytest.raises(ConfigError) as ei:
        OpenAIRefiner("my-local-model", api_key_env="TGRS_TEST_REFINE_KEY")
    assert ei.value.field == "price_input_per_mtok" and "sk-test-secret-value-77" not in str(ei.value)
    r = OpenAIRefiner("my-local-model", api_key_env="TGRS_TEST_REFINE_KEY", max_retries=1,
                      price_input_per_mtok=0, price_output_per_mtok=0)
    assert r.adapter.max_attempts == 2  # the old SDK-retry knob, now attempts in the one layer


# ----- the local-generator refiner -------------------------------------------------------------------

class FakeBackend:
    def __init__(self):
        self.calls: list[int] = []

    async def complete(self, conversations, tools, params, *, max_new_tokens=None):
        self.calls.append(len(conversations))
        return [Turn(f"Answer: {len(c[0]['content'])}") for c in conversations]

    async def aclose(self):
        return None


def test_generator_refiner_coalesces_rewrites_into_one_backend_call():
    backend = FakeBackend()
    r = GeneratorRefiner(backend, max_wait_ms=20)
    cands = [cand(i) for i in range(10)]

    async def go():
        try:
            return await asyncio.gather(*(r.refine(c) for c in cands))
        finally:
            await r.aclose()

    out = asyncio.run(go())
    assert backend.calls == [10]
    assert all(o.final_text.startswith("Answer: ") and o.final_text != c.final_text
               for o, c in zip(out, cands, strict=True))


def test_generator_refiner_on_a_transformers_backend_and_a_real_student_scorer(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tgrs_agents.generate.base import SamplingParams
    from tgrs_agents.generate.hf import TransformersBackend
    from tgrs_agents.student.tiny import build_model, train_tokenizer
    from tgrs_agents.teachers.student_compat import StudentCompatConfig, StudentCompatTeacher, StudentScorer

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = train_tokenizer(["What is 12 + 30 - 5? Answer: 37"])
        model = build_model(tok, seed=0)
        backend = TransformersBackend(model, tok, device="cpu", batch_size=8)
        refiner = GeneratorRefiner(backend, params=SamplingParams(temperature=1.0, max_new_tokens=6, seed=1))
        scorer = StudentScorer(build_model(tok, seed=1), tok, rifd_prompt="Q? {response}")
        teacher = StudentCompatTeacher(StudentCompatConfig(name="fit", model="unused", device="cpu"), scorer=scorer)
        cands = [cand(i) for i in range(4)]

        async def go():
            try:
                return await refine_and_select(cands, refiner, teacher, log=tmp_path / "refine.jsonl")
            finally:
                await refiner.aclose()
                await teacher.aclose()

        out = asyncio.run(go())
    finally:
        torch.set_num_threads(n)
    rows = [json.loads(x) for x in (tmp_path / "refine.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["choice"] in ("original", "refined", "dropped") for r in rows)
    for row in rows:  # the recorded choice follows the documented rule from the recorded scores
        o, f = (S(**{k: v for k, v in row["scores"][k].items()}) for k in ("original", "refined"))
        assert choose(o, f, row["changed"]).choice == row["choice"]
    assert len(out.chosen) == sum(r["choice"] != "dropped" for r in rows)
    assert teacher.batcher.stats.calls < 8  # 8 scorings, batched
