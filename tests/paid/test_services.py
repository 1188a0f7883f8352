"""Run-wide services (``tgrs_agents.paid.services``): one limiter per endpoint, one retry policy, one
budget and one ledger for every paid call, whichever kind makes it.

The last test is the one the layer exists for: an API judge, the OpenAI-compatible generator and the
refiner share one endpoint of the loopback stand-in (real SDKs) at a low request limit with 5xx
injected, through one ``Services``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from api_judge_kit import FAST, KEYS, OA_ENV, OA_KEY, OTHER_ENV, build, cand, limiter, run, set_keys, table

from tgrs_agents.curation.panel import Panel
from tgrs_agents.curation.policy import make_policy
from tgrs_agents.errors import BudgetExhausted, TeacherError
from tgrs_agents.generate.base import SamplingParams
from tgrs_agents.generate.openai_backend import OpenAIChatBackend
from tgrs_agents.loop.refine import OpenAIRefiner
from tgrs_agents.paid.call import CacheIdentity, Paid
from tgrs_agents.paid.cost import Budget, Price
from tgrs_agents.paid.limits import EndpointLimits, FakeClock
from tgrs_agents.paid.retry import RetryPolicy
from tgrs_agents.paid.services import Services
from tgrs_agents.paid.wrappers import PaidTeacher
from tgrs_agents.teachers.base import BuildContext
from tgrs_agents.teachers.final_answer import FinalAnswerConfig, FinalAnswerTeacher
from tgrs_agents.teachers.openai_judge import OpenAIJudge, OpenAIJudgeConfig
from tgrs_agents.testing.standin import FaultPlan, StandIn, default_brain
from tgrs_agents.types import Usage, Verdict

pytest.importorskip("openai")
pytest.importorskip("anthropic")


@pytest.fixture(autouse=True)
def env(monkeypatch):
    set_keys(monkeypatch)


@pytest.fixture
def srv():
    with StandIn() as s:
        yield s


class Flaky:
    """A paid judge adapter that fails ``failures`` times (billed when ``billed``), then passes."""

    name, endpoint_key, limits, price, cost_rank, config = "flaky", "x#0", EndpointLimits(), Price(1, 1), 5, None

    def __init__(self, failures: int, *, max_attempts: int | None = None, billed: bool = False,
                 name: str = "flaky") -> None:
        self.failures, self.max_attempts, self.billed, self.name = failures, max_attempts, billed, name
        self.calls = 0

    def estimate(self, request: Any) -> tuple[int, int]:
        return 1000, 0

    def cache_identity(self) -> CacheIdentity | None:
        return None

    async def call(self, request: Any) -> Paid[Verdict]:
        self.calls += 1
        await asyncio.sleep(0)
        used = Usage(requests=1, input_tokens=1000)
        if self.calls <= self.failures:
            raise TeacherError("503", retryable=True, kind="server", usage=used if self.billed else None)
        return Paid(Verdict(teacher=self.name, passed=True, score=1.0), used)

    async def aclose(self) -> None:
        return None


# --- the retry policy is injected, an adapter's max_attempts still bounds it ---------------------------
def test_the_retry_policy_comes_from_the_services():
    clock = FakeClock()
    svc = Services(clock=clock, retry=RetryPolicy(max_attempts=9, initial_s=0.5, max_wait_s=10, jitter_s=0))
    assert run(svc.stack(Flaky(3)).call("x")).usage.requests == 4
    assert clock.slept == [0.5, 1.0, 2.0]  # the injected back-off, in virtual time
    assert svc.policy_for(Flaky(0)) is svc.retry

    bounded = Flaky(5, max_attempts=2)
    with pytest.raises(TeacherError) as ei:
        run(svc.stack(bounded).call("x"))
    assert bounded.calls == 2 and ei.value.attempt == 2 and ei.value.teacher == "flaky"
    assert svc.policy_for(bounded).max_attempts == 2 and svc.policy_for(bounded).initial_s == 0.5


def test_wrap_leaves_free_teachers_alone_and_wraps_paid_judges(tmp_path):
    svc = Services(clock=FakeClock())
    free = FinalAnswerTeacher(FinalAnswerConfig(name="answer", kind="final_answer"))
    assert svc.wrap(free) is free
    paid = svc.wrap(Flaky(0))
    assert isinstance(paid, PaidTeacher) and paid.name == "flaky" and paid.cost_rank == 5 and not paid.inline
    assert paid.lookup(cand(1)) is None and paid.estimate(cand(1)) == (1000, 0)  # what the dry run reads


# --- one budget-stop signal ---------------------------------------------------------------------------
def test_a_budget_stop_keeps_what_was_paid_and_leaves_the_unpaid_pending():
    # two paid judges at one rank: "paid" fails once (billed) and is refused its retry; "late" is refused
    # its first attempt. The panel records the paid attempt, raises the one signal, and nothing else.
    svc = Services(clock=FakeClock(), retry=FAST, budget=Budget(limit_usd=1.5e-3))
    paid, late = Flaky(1, billed=True, name="paid"), Flaky(0, name="late")
    teachers = [svc.wrap(paid), svc.wrap(late)]
    panel = Panel(teachers, make_policy("unanimous", ["paid", "late"]))
    heard: list[Verdict] = []

    with pytest.raises(BudgetExhausted):
        run(panel.judge(cand(1), on_verdict=lambda cid, v: heard.append(v)))
    (v,) = heard
    assert v.teacher == "paid" and v.error and "budget" in v.error
    assert v.usage.requests == 1 and v.usage.cost_usd == pytest.approx(1e-3) == svc.budget.spent_usd
    assert panel.stats["paid"].cost_usd == pytest.approx(1e-3) and panel.stats["late"].calls == 0
    assert (paid.calls, late.calls) == (1, 0)


# --- teachers on one account -------------------------------------------------------------------------
def test_teachers_on_one_account_share_one_limiter(srv, tmp_path, monkeypatch):
    monkeypatch.setenv("TGRS_TEST_SAME_KEY", OA_KEY)  # another variable, the same account
    panel, svc = build(
        tmp_path,
        table("openai", srv, name="a", rpm=600),
        table("openai", srv, name="b", rpm=120, cost_rank=1),
        table("openai", srv, name="c", api_key_env="TGRS_TEST_SAME_KEY", cost_rank=2),
        table("openai", srv, name="d", api_key_env=OTHER_ENV, cost_rank=3),
        table("anthropic", srv, name="e", api_key_env=OA_ENV, cost_rank=4),
    )
    lims = {t.name: t.limiter for t in panel.teachers}
    assert lims["a"] is lims["b"] is lims["c"]
    assert lims["d"] is not lims["a"]  # another key: another account
    assert lims["e"] is not lims["a"]  # another endpoint
    assert len(svc.limiters.all()) == 3
    assert lims["a"].requests.rate == pytest.approx(2.0)  # the lower of 600 and 120 per minute
    assert not any(k in key for key in svc.limiters.all() for k in KEYS)
    run(panel.aclose())


def test_shared_limiter_paces_two_teachers_together(tmp_path):
    with StandIn() as s:
        async def main():
            panel, svc = build(tmp_path, table("openai", s, name="a", rpm=600),
                               table("openai", s, name="b", rpm=600, cost_rank=1))
            a, b = panel.teachers
            t0 = time.perf_counter()
            try:  # 10/s with a bucket of 10 (1 s of burst): 30 calls take >= 2 s
                await asyncio.gather(*(t.judge(cand(i)) for i in range(15) for t in (a, b)))
            finally:
                await panel.aclose()
            return time.perf_counter() - t0, svc

        wall, svc = run(main())
        assert s.stats["ok"] == 30 and wall >= 1.9
        assert limiter(svc).stats.acquired == 30



# --- the judge, the generator and the refiner on one endpoint ------------------------------------------
SERVER_RPM, CLIENT_RPM = 2400, 2000  # the quota, and what the three are told (a margin under it)
N = 40  # calls of each kind
PRICES = {"judge": (2.0, 8.0), "gen": (1.0, 2.0), "ref": (3.0, 6.0)}


def brain(prompt: str) -> dict[str, Any]:
    if "Rewrite the agent's FINAL message" in prompt:
        return {"text": "The calculator gave the value. Answer: 42"}
    if "<reference>" in prompt:
        return default_brain(prompt)
    return {"echo": prompt.strip()[:40]}


def three(s: StandIn, svc: Services, tmp_path: Path) -> tuple[Any, OpenAIChatBackend, OpenAIRefiner]:
    """One of each kind of paid call, all on ``s``'s OpenAI route with one key, all told CLIENT_RPM."""
    cfg = OpenAIJudgeConfig(name="judge", model="judge-m", base_url=s.url_openai, api_key_env=OA_ENV,
                            rpm=CLIENT_RPM, max_tokens=64, price_input_per_mtok=PRICES["judge"][0],
                            price_output_per_mtok=PRICES["judge"][1])
    judge = svc.wrap(OpenAIJudge(cfg, BuildContext(base_dir=tmp_path)))
    gen = OpenAIChatBackend("gen-m", s.url_openai, OA_ENV, services=svc, rpm=CLIENT_RPM,
                            price_input_per_mtok=PRICES["gen"][0], price_output_per_mtok=PRICES["gen"][1])
    ref = OpenAIRefiner("ref-m", base_url=s.url_openai, api_key_env=OA_ENV, services=svc, rpm=CLIENT_RPM,
                        max_tokens=64, price_input_per_mtok=PRICES["ref"][0],
                        price_output_per_mtok=PRICES["ref"][1])
    return judge, gen, ref


def calls(judge: Any, gen: OpenAIChatBackend, ref: OpenAIRefiner, n: int) -> list[Any]:
    """``n`` calls of each kind, interleaved so that all three compete for the limiter and the budget."""
    params = SamplingParams(temperature=0.7, max_new_tokens=32)
    out = []
    for i in range(n):
        out += [judge.judge(cand(i)),
                gen.complete([[{"role": "user", "content": f"What is {i} + {i}?"}]], [None], params),
                ref.refine(cand(100 + i))]
    return out


def test_a_judge_the_generator_and_the_refiner_share_one_limiter_retry_policy_and_budget(tmp_path):
    with StandIn(FaultPlan(rpm=SERVER_RPM, p_5xx=0.05, seed=7), brain=brain) as s:
        svc = Services(retry=FAST)
        judge, gen, ref = three(s, svc, tmp_path)

        async def main() -> list[Any]:
            try:
                return await asyncio.gather(*calls(judge, gen, ref, N))
            finally:
                for x in (judge, gen, ref):
                    await x.aclose()

        t0 = time.perf_counter()
        results = run(main())
        wall = time.perf_counter() - t0
        stats = s.stats.copy()

    verdicts, turns, refined = results[0::3], [t for (t,) in results[1::3]], results[2::3]
    assert all(v.error is None and v.passed for v in verdicts)
    assert all(not t.finish_reason.startswith("error") and "echo" in t.text for t in turns)
    assert all(r.final_text.endswith("Answer: 42") for r in refined)

    (lim,) = svc.limiters.all().values()  # one endpoint, one limiter, and every request crossed it
    assert lim is judge.limiter is gen.limiter is ref._paid.limiter
    requests = stats["requests"]
    assert lim.stats.acquired == requests
    assert stats["500"] >= 3  # 5xx were injected and retried through the one policy
    assert stats["429"] / requests < 0.01, stats  # three callers, one quota, (almost) no 429s
    judge_usage = sum((v.usage for v in verdicts), Usage())
    assert judge_usage.requests + gen.usage.requests + ref.usage.requests == requests
    assert min(judge_usage.cost_usd, gen.usage.cost_usd, ref.usage.cost_usd) > 0
    total = judge_usage.cost_usd + gen.usage.cost_usd + ref.usage.cost_usd
    assert svc.budget.spent_usd == pytest.approx(total)  # one budget saw every call of the three
    # paced together: 3*N calls plus retries at CLIENT_RPM, after the first second's burst
    assert wall >= (requests - CLIENT_RPM / 60) / (CLIENT_RPM / 60) * 0.9


def test_one_budget_cap_stops_all_three(tmp_path):
    with StandIn(FaultPlan(), brain=brain) as s:
        svc = Services(retry=FAST)
        judge, gen, ref = three(s, svc, tmp_path)
        cap = 0.009  # estimates: judge ~0.9e-3, refiner ~0.8e-3, generator ~0.1e-3 a call

        async def main() -> tuple[list[list[Any]], list[Any], int]:
            svc.budget.limit_usd = cap
            rounds: list[list[Any]] = []  # one call of each kind a round, until each was refused
            try:
                while len(rounds) < 40 and not all(
                        any(isinstance(r[k], BudgetExhausted) for r in rounds) for k in range(3)):
                    rounds.append(await asyncio.gather(*calls(judge, gen, ref, 1), return_exceptions=True))
                before = s.stats["requests"]
                after = await asyncio.gather(*calls(judge, gen, ref, 1), return_exceptions=True)
                return rounds, after, s.stats["requests"] - before
            finally:
                for x in (judge, gen, ref):
                    await x.aclose()

        rounds, after, sent_after = run(main())
        requests = s.stats["requests"]
    for kind in range(3):  # each kind: some calls paid, then the budget's one signal
        mine = [r[kind] for r in rounds]
        assert any(isinstance(r, BudgetExhausted) for r in mine), kind
        assert not isinstance(mine[0], BaseException), kind
        assert not any(isinstance(r, BaseException) and not isinstance(r, BudgetExhausted) for r in mine)
    assert all(isinstance(r, BudgetExhausted) for r in after) and sent_after == 0  # stopped: no request
    judge_cost = sum(r[0].usage.cost_usd for r in rounds if isinstance(r[0], Verdict))
    total = judge_cost + gen.usage.cost_usd + ref.usage.cost_usd
    assert 0 < svc.budget.spent_usd <= cap and svc.budget.spent_usd == pytest.approx(total)
    assert judge.limiter.stats.acquired == requests
