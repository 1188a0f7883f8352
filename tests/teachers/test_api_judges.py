"""The OpenAI and Anthropic judges through the real SDKs, against the loopback stand-in.

Teachers are built the way ``tgrs curate`` builds them (a panel dict -> ``Panel.from_config`` with
``Services``), so every call goes Cached(Retrying(Costed(RateLimited(adapter)))) -> SDK -> socket.
The retry back-off is shortened (``initial_s``) so the suite stays fast; Retry-After is honoured as
sent by the server.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
import random
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from tgrs_agents.curate.panel import Panel
from tgrs_agents.curate.panel_file import panel_from_dict
from tgrs_agents.errors import ConfigError, TeacherError
from tgrs_agents.paid.ledger import Ledger
from tgrs_agents.paid.retry import RetryPolicy
from tgrs_agents.paid.sdk_errors import classify_sdk_error
from tgrs_agents.paid.services import Services
from tgrs_agents.paid.wrappers import RateLimited, Wrapper
from tgrs_agents.tasks.arithmetic_data import trajectory, write_synthetic
from tgrs_agents.teachers import llm_judge
from tgrs_agents.teachers.llm_judge import VERDICT_SCHEMA
from tgrs_agents.testing.standin import FaultPlan, StandIn
from tgrs_agents.types import Candidate, Verdict

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

OA_ENV, AN_ENV, OTHER_ENV = "TGRS_TEST_OA_KEY", "TGRS_TEST_AN_KEY", "TGRS_TEST_OTHER_KEY"
OA_KEY = "sk-test-oa-4f1c8e2d9b7a6053"
AN_KEY = "sk-test-an-93b2d7e1c0f4a865"
OTHER_KEY = "sk-test-other-1a2b3c4d5e6f"
KEYS = (OA_KEY, AN_KEY, OTHER_KEY)
RUBRIC = "The final answer must equal the reference (rubric-marker-77)."
PRICE_IN, PRICE_OUT = 2.0, 8.0  # USD per million tokens
KINDS = ("openai", "anthropic")


@pytest.fixture(autouse=True)
def env(monkeypatch):
    monkeypatch.setenv(OA_ENV, OA_KEY)
    monkeypatch.setenv(AN_ENV, AN_KEY)
    monkeypatch.setenv(OTHER_ENV, OTHER_KEY)
    # short exponential back-off so retried faults cost milliseconds, not seconds
    monkeypatch.setattr(llm_judge, "RetryPolicy",
                        functools.partial(RetryPolicy, initial_s=0.01, max_wait_s=2.0, jitter_s=0.01))


@pytest.fixture
def srv():
    with StandIn() as s:
        yield s


def run(coro):
    return asyncio.run(coro)


def table(kind: str, s: StandIn, **kw: Any) -> dict[str, Any]:
    t = {
        "name": "gpt" if kind == "openai" else "claude",
        "kind": kind,
        "model": "gpt-judge-test" if kind == "openai" else "claude-judge-test",
        "base_url": s.url_openai if kind == "openai" else s.url_anthropic,
        "api_key_env": OA_ENV if kind == "openai" else AN_ENV,
        "rubric": RUBRIC,
        "max_tokens": 64,
        "timeout_s": 5.0,
        "max_attempts": 5,
        "price_input_per_mtok": PRICE_IN,
        "price_output_per_mtok": PRICE_OUT,
    }
    t.update(kw)
    return t


def build(tmp_path: Path, *tables: dict[str, Any], ledger: Ledger | None = None,
          services: Services | None = None) -> tuple[Panel, Services]:
    cfg = panel_from_dict({"policy": "unanimous", "teacher": list(tables)}, base_dir=tmp_path)
    svc = services or Services(ledger=ledger)
    return Panel.from_config(cfg, svc), svc


def adapter(t: Any) -> Any:
    while isinstance(t, Wrapper):
        t = t.inner
    return t


def rate_limited(t: Any) -> Any:
    while not isinstance(t, RateLimited):
        t = t.inner
    return t


def limiter(svc: Services) -> Any:
    (lim,) = svc.limiters.all().values()
    return lim


def cand(i: int, flavour: str = "good", seed: int | None = None) -> Candidate:
    rng = random.Random(i if seed is None else seed)
    return Candidate.model_validate(trajectory(i, rng, flavour=flavour))


async def judge1(panel: Panel, c: Candidate) -> Verdict:
    """The one teacher's verdict as the panel records it (errors become error verdicts)."""
    _, new = await panel.judge(c)
    (v,) = new
    return v


def price(in_tok: int, out_tok: int) -> float:
    return (in_tok * PRICE_IN + out_tok * PRICE_OUT) / 1e6


def prompt_of(req: dict[str, Any]) -> str:
    (msg,) = req["body"]["messages"]
    return msg["content"] if isinstance(msg["content"], str) else msg["content"][0]["text"]


# --- the ok path -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_ok_path_verdict_usage_cost_and_request(kind, srv, tmp_path):
    good, bad = cand(1), cand(2, "wrong_copy")

    async def main():
        panel, svc = build(tmp_path, table(kind, srv))
        try:
            return await judge1(panel, good), await judge1(panel, bad), svc
        finally:
            await panel.aclose()

    v, w, svc = run(main())
    assert v.error is None and v.passed is True and 0.0 <= v.score <= 1.0 and v.score == 0.9
    assert "matches the reference" in v.rationale and v.teacher == ("gpt" if kind == "openai" else "claude")
    assert w.error is None and w.passed is False and w.score == 0.2 and "!=" in w.rationale
    req = srv.requests[0]
    in_tok = len(prompt_of(req)) // 4  # what the stand-in bills
    assert v.usage.requests == 1 and v.usage.input_tokens == in_tok and v.usage.output_tokens > 0
    assert v.usage.cost_usd == pytest.approx(price(v.usage.input_tokens, v.usage.output_tokens))
    assert v.cached is False and v.latency_s > 0

    body = req["body"]
    assert body["model"] == table(kind, srv)["model"] and body["max_tokens"] == 64
    assert body["temperature"] == 0.0
    if kind == "openai":
        assert req["path"] == "/v1/chat/completions"
        rf = body["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True
        assert rf["json_schema"]["schema"] == VERDICT_SCHEMA
        assert "tools" not in body
    else:
        assert req["path"] == "/v1/messages"
        assert body["tool_choice"] == {"type": "tool", "name": "record_verdict"}
        (tool,) = body["tools"]
        assert tool["name"] == "record_verdict" and tool["input_schema"] == VERDICT_SCHEMA

    text = prompt_of(req)
    (call,) = good.messages[1].tool_calls
    tool_result = good.messages[2].text
    assert f"<task>\n{good.task_text}\n</task>" in text
    assert f"[assistant calls calculator] {call.function.arguments}" in text
    assert f"[tool result] {tool_result}" in text
    assert f"<final>\n{good.final_text}\n</final>" in text
    assert f"<reference>\n{good.reference}\n</reference>" in text
    assert f"<rubric>\n{RUBRIC}\n</rubric>" in text
    assert limiter(svc).stats.acquired == srv.stats["requests"] == 2


# --- retries -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_429_retry_after_is_honoured(kind, tmp_path):
    # 5 requests/s with a bucket of 1: of two calls sent together the second gets a 429 whose
    # retry-after (~0.2 s) says when it would be admitted
    with StandIn(FaultPlan(rpm=300, burst_s=0.2)) as s:
        seen: list[float | None] = []

        async def main():
            panel, svc = build(tmp_path, table(kind, s))
            lim = limiter(svc)
            orig = lim.on_rate_limited
            lim.on_rate_limited = lambda ra: (seen.append(ra), orig(ra))[1]
            t0 = time.perf_counter()
            try:
                vs = await asyncio.gather(judge1(panel, cand(1)), judge1(panel, cand(2)))
            finally:
                await panel.aclose()
            return vs, time.perf_counter() - t0, lim

        vs, wall, lim = run(main())
        assert all(v.error is None and v.passed for v in vs)
        assert s.stats["429"] == 1 and s.stats["ok"] == 2 and s.stats["requests"] == 3
        assert lim.stats.rate_limited == 1 and lim.stats.acquired == 3
        (ra,) = seen
        assert 0.1 < ra <= 0.25
        t429 = next(r["t"] for r in s.requests if r["outcome"] == "429")
        retry_t = s.requests[-1]["t"]
        assert retry_t - t429 >= ra - 0.01  # waited the server's retry-after, not less
        assert wall >= ra
        assert sorted(v.usage.requests for v in vs) == [1, 2]


@pytest.mark.parametrize("kind", KINDS)
def test_5xx_529_timeouts_and_dropped_connections_are_retried(kind, tmp_path):
    with StandIn(FaultPlan(slow_s=5.0)) as s:
        s.script.extend(["500", "529", "drop", "slow"])

        async def main():
            panel, svc = build(tmp_path, table(kind, s, timeout_s=0.5, max_attempts=5))
            t0 = time.perf_counter()
            try:
                return await judge1(panel, cand(1)), time.perf_counter() - t0, svc
            finally:
                await panel.aclose()

        v, wall, svc = run(main())
        assert v.error is None and v.passed
        assert [r["outcome"] for r in s.requests] == ["500", "529", "drop", "slow", "ok"]
        assert s.stats["requests"] == 5 and limiter(svc).stats.acquired == 5
        assert v.usage.requests == 5  # every attempt counted
        assert 0.5 <= wall < 4.0  # the slow attempt was cut at timeout_s, not waited out


def test_random_5xx_500_502_503_are_classified_and_retried(tmp_path):
    with StandIn(FaultPlan(p_5xx=1.0, seed=3)) as s:
        async def raw_errors():
            seen = {}
            async with openai.AsyncOpenAI(api_key=OA_KEY, base_url=s.url_openai, max_retries=0) as c:
                for _ in range(40):
                    try:
                        await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
                    except openai.APIStatusError as e:
                        seen.setdefault(e.status_code, e)
                    if len(seen) == 3:
                        break
            return seen

        seen = run(raw_errors())
        assert set(seen) == {500, 502, 503}
        for status, exc in seen.items():
            err = classify_sdk_error(exc, openai, "gpt")
            assert err.retryable and err.kind == "server" and err.status == status

    with StandIn(FaultPlan(p_5xx=0.5, seed=4)) as s:
        async def many():
            panel, svc = build(tmp_path, table("openai", s, max_attempts=12))
            try:
                return await asyncio.gather(*(judge1(panel, cand(i)) for i in range(20))), svc
            finally:
                await panel.aclose()

        vs, svc = run(many())
        assert all(v.error is None for v in vs)
        assert s.stats["500"] >= 10 and s.stats["ok"] == 20
        assert limiter(svc).stats.acquired == s.stats["requests"]
        assert sum(v.usage.requests for v in vs) == s.stats["requests"]


@pytest.mark.parametrize("kind", KINDS)
def test_malformed_output_asked_again_once_then_error_verdict_with_both_attempts_costed(kind, srv, tmp_path):
    async def main():
        panel, svc = build(tmp_path, table(kind, srv, max_attempts=5))
        try:
            srv.script.extend(["malformed", "ok"])
            fixed = await judge1(panel, cand(1))
            srv.script.extend(["malformed", "malformed", "ok"])
            broken = await judge1(panel, cand(2))
            return fixed, broken, panel, svc
        finally:
            await panel.aclose()

    fixed, broken, panel, svc = run(main())
    outcomes = [r["outcome"] for r in srv.requests]
    assert outcomes == ["malformed", "ok", "malformed", "malformed"]  # the 3rd "ok" never asked for
    assert srv.script.popleft() == "ok"
    assert fixed.error is None and fixed.passed and fixed.usage.requests == 2
    in_tok = len(prompt_of(srv.requests[0])) // 4
    assert fixed.usage.input_tokens == 2 * in_tok
    assert fixed.usage.cost_usd == pytest.approx(price(fixed.usage.input_tokens, fixed.usage.output_tokens))
    assert broken.error is not None and "did not parse" in broken.error
    assert broken.passed is False and broken.score == 0.0
    assert broken.usage.requests == 2 and broken.usage.input_tokens == 2 * len(prompt_of(srv.requests[2])) // 4
    assert broken.usage.output_tokens > 0
    assert broken.usage.cost_usd == pytest.approx(price(broken.usage.input_tokens, broken.usage.output_tokens))
    st = panel.stats[broken.teacher]
    assert st.errors == 1 and st.cost_usd == pytest.approx(fixed.usage.cost_usd + broken.usage.cost_usd)
    assert svc.budget.spent_usd == pytest.approx(st.cost_usd)
    assert limiter(svc).stats.acquired == 4


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", ["400", "401"])
def test_400_and_401_are_not_retried(kind, status, srv, tmp_path):
    srv.script.extend([status, "ok"])

    async def main():
        panel, svc = build(tmp_path, table(kind, srv))
        try:
            return await judge1(panel, cand(1)), svc
        finally:
            await panel.aclose()

    v, svc = run(main())
    assert v.error is not None and f"HTTP {status}" in v.error and v.passed is False
    assert srv.stats["requests"] == 1 and limiter(svc).stats.acquired == 1
    assert list(srv.script) == ["ok"]


@pytest.mark.parametrize("kind", KINDS)
def test_max_attempts_bounds_requests_and_sdk_retries_are_off(kind, srv, tmp_path):
    srv.script.extend(["500"] * 10)

    async def main():
        panel, svc = build(tmp_path, table(kind, srv, max_attempts=3), table(
            kind, srv, name="once", max_attempts=1, cost_rank=5))
        try:
            clients = [adapter(t)._client for t in panel.teachers]
            by_name = {t.name: t for t in panel.teachers}
            three = await panel._call(by_name[table(kind, srv)["name"]], cand(1))
            n3 = srv.stats["requests"]
            one = await panel._call(by_name["once"], cand(2))
            return clients, three, n3, one, svc
        finally:
            await panel.aclose()

    clients, three, n3, one, svc = run(main())
    assert all(c.max_retries == 0 for c in clients)
    assert n3 == 3 and three.error is not None and "HTTP 500" in three.error
    assert three.usage.requests == 3
    assert srv.stats["requests"] == 4 and one.error is not None  # one attempt: the server saw one
    assert limiter(svc).stats.acquired == 4 and len(srv.script) == 6


# --- error classification on the SDKs' own exception objects ------------------------------------
def _raw_call(kind: str, s: StandIn, timeout: float = 5.0):
    if kind == "openai":
        client = openai.AsyncOpenAI(api_key=OA_KEY, base_url=s.url_openai, max_retries=0, timeout=timeout)
        call = functools.partial(client.chat.completions.create, model="m",
                                 messages=[{"role": "user", "content": "x"}])
    else:
        client = anthropic.AsyncAnthropic(api_key=AN_KEY, base_url=s.url_anthropic, max_retries=0,
                                          timeout=timeout)
        call = functools.partial(client.messages.create, model="m", max_tokens=8,
                                 messages=[{"role": "user", "content": "x"}])
    return client, call


@pytest.mark.parametrize("kind", KINDS)
def test_classify_sdk_error_on_real_exceptions(kind):
    sdk = openai if kind == "openai" else anthropic
    expect = {  # outcome -> (retryable, kind, status)
        "429": (True, "rate_limit", 429),
        "500": (True, "server", 500),
        "529": (True, "overloaded", 529) if kind == "anthropic" else (True, "server", 503),
        "400": (False, "bad_request", 400),
        "401": (False, "auth", 401),
        "drop": (True, "connection", None),
        "slow": (True, "timeout", None),
    }
    with StandIn(FaultPlan(slow_s=3.0)) as s:
        async def collect():
            client, call = _raw_call(kind, s, timeout=0.3)
            caught = {}
            async with client:
                for outcome in expect:
                    s.script.append(outcome)
                    try:
                        await call()
                    except Exception as e:  # noqa: BLE001
                        caught[outcome] = e
            return caught

        caught = run(collect())
    assert set(caught) == set(expect)
    for outcome, (retryable, k, status) in expect.items():
        exc = caught[outcome]
        assert isinstance(exc, sdk.APIError), (outcome, exc)
        err = classify_sdk_error(exc, sdk, "judge")
        assert isinstance(err, TeacherError) and err.teacher == "judge"
        assert (err.retryable, err.kind, err.status) == (retryable, k, status), outcome
        assert not any(key in str(err) for key in KEYS)
    assert isinstance(caught["slow"], sdk.APITimeoutError)
    ra = classify_sdk_error(caught["429"], sdk, "judge").retry_after
    assert ra == pytest.approx(1.0)  # scripted 429s advertise 1 s (retry-after-ms: 1000)
    assert classify_sdk_error(caught["500"], sdk, "judge").retry_after is None
    assert classify_sdk_error(ValueError("not an SDK error"), sdk, "judge") is None


# --- shared limiters ------------------------------------------------------------------------------
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
    lims = {t.name: rate_limited(t).limiter for t in panel.teachers}
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


# --- the verdict ledger -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_ledger_hits_make_no_call_cost_nothing_and_take_no_token(kind, srv, tmp_path):
    led_path = tmp_path / "ledger.sqlite"
    default = llm_judge.load_prompt("judge_default", tmp_path)
    (tmp_path / "my_prompt.md").write_text(default.replace("strict grader", "very strict grader"))
    c = cand(1)
    twin = c.model_copy(update={"id": "another-id"})  # same content, another id

    async def judge_with(twin_=False, **kw):
        led = Ledger(led_path)
        panel, svc = build(tmp_path, table(kind, srv, **kw), ledger=led)
        try:
            v = await judge1(panel, twin if twin_ else c)
            return v, limiter(svc).stats.acquired
        finally:
            await panel.aclose()
            led.close()

    def go(**kw):
        before = srv.stats["requests"]
        v, acquired = run(judge_with(**kw))
        return v, srv.stats["requests"] - before, acquired

    first, n, acq = go()
    assert (n, acq, first.cached) == (1, 1, False) and first.usage.cost_usd > 0
    again, n, acq = go()
    assert (n, acq) == (0, 0) and again.cached and again.usage.cost_usd == 0 and again.usage.requests == 0
    assert (again.passed, again.score, again.rationale) == (first.passed, first.score, first.rationale)
    _, n, _ = go(twin_=True)
    assert n == 0  # the ledger keys content, not ids
    _, n, _ = go(rpm=1234, timeout_s=9.0, max_attempts=2, max_concurrency=3,
                 price_input_per_mtok=9.0, cost_rank=4)
    assert n == 0  # operational knobs keep every cached verdict
    _, n, _ = go(rubric=RUBRIC + " Be harsh.")
    assert n == 1  # another rubric: another question
    _, n, _ = go(prompt="my_prompt.md")
    assert n == 1  # another prompt template
    _, n, _ = go(model="another-model")
    assert n == 1
    _, n, _ = go(temperature=0.5)
    assert n == 1
    assert stat.S_IMODE(os.stat(led_path).st_mode) == 0o600
    for side in tmp_path.glob("ledger.sqlite*"):
        assert stat.S_IMODE(os.stat(side).st_mode) == 0o600, side


@pytest.mark.parametrize("kind", KINDS)
def test_identical_candidates_in_flight_share_one_call(kind, tmp_path):
    with StandIn(FaultPlan(latency_mean_s=0.1)) as s:
        c = cand(1)
        twin = c.model_copy(update={"id": "twin"})

        async def main():
            led = Ledger(tmp_path / "l.sqlite")
            panel, svc = build(tmp_path, table(kind, s), ledger=led)
            (t,) = panel.teachers
            try:
                vs = await asyncio.gather(t.judge(c), t.judge(twin))
                s.script.extend(["400"])  # a shared failure: both see it, only one paid for it
                errs = await asyncio.gather(panel._call(t, cand(2)), panel._call(t, cand(2)))
                return vs, errs, svc, panel
            finally:
                await panel.aclose()
                led.close()

        vs, errs, svc, _ = run(main())
        assert s.stats["requests"] == 2 and limiter(svc).stats.acquired == 2
        assert sorted(v.cached for v in vs) == [False, True]
        assert vs[0].passed == vs[1].passed and vs[0].score == vs[1].score
        assert sum(v.usage.cost_usd for v in vs) == vs[0].usage.cost_usd + vs[1].usage.cost_usd > 0
        assert all(e.error and "HTTP 400" in e.error for e in errs)
        assert sorted(e.usage.requests for e in errs) == [0, 1]  # the follower is not billed again


# --- secrets --------------------------------------------------------------------------------------
def test_api_keys_never_leak(tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with StandIn(FaultPlan(slow_s=3.0)) as s:
        led_path = tmp_path / "ledger.sqlite"

        async def main():
            led = Ledger(led_path)
            panel, _ = build(tmp_path, table("openai", s, timeout_s=0.3, max_attempts=2),
                               table("anthropic", s, timeout_s=0.3, max_attempts=2), ledger=led)
            errors, verdicts = [], []
            try:
                for i, script in enumerate([[], ["401"], ["400"], ["500", "500"], ["malformed"] * 2,
                                            ["slow", "drop"], ["429", "ok"]]):
                    for t in panel.teachers:
                        s.script.extend(script)
                        try:
                            verdicts.append(await t.judge(cand(10 * i + len(verdicts))))
                        except TeacherError as e:
                            errors.append(e)
                        verdicts.append(await panel._call(t, cand(1000 + len(verdicts))))
                return errors, verdicts, panel
            finally:
                await panel.aclose()
                led.close()

        errors, verdicts, panel = run(main())
    assert len(errors) >= 10 and {e.kind for e in errors} >= {"auth", "bad_request", "server",
                                                               "malformed", "connection"}
    texts = [str(e) for e in errors] + [repr(e) for e in errors] + [repr(vars(e)) for e in errors]
    texts += [v.model_dump_json() for v in verdicts]
    texts += [json.dumps(panel.stats[n].to_json()) for n in panel.stats]
    texts += [repr(t.config) for t in panel.teachers] + [t.config.model_dump_json() for t in panel.teachers]
    texts += [caplog.text, *capsys.readouterr()]
    blobs = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert any(b"matches the reference" in b for b in blobs)  # the ledger holds verdicts
    for key in KEYS:
        assert not any(key in t for t in texts), key
        assert not any(key.encode() in b for b in blobs), key
        assert key not in json.dumps(s.requests, default=str)  # the stand-in logs no key either


def test_missing_key_is_a_config_error_before_any_work(srv, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(AN_ENV)
    with pytest.raises(ConfigError) as ei:
        build(tmp_path, table("openai", srv), table("anthropic", srv, cost_rank=20))
    msg = str(ei.value)
    assert "claude" in msg and AN_ENV in msg and "not set" in msg

    from tgrs_agents.cli import main as cli_main

    data = write_synthetic(tmp_path / "in.jsonl", 20, seed=1)
    doc = "\n".join([
        'policy = "unanimous"',
        "[[teacher]]", 'name = "answer"', 'kind = "final_answer"',
        "[[teacher]]", *(f"{k} = {json.dumps(v)}" for k, v in table("anthropic", srv, cost_rank=20).items()),
    ])
    panel_file = tmp_path / "panel.toml"
    panel_file.write_text(doc + "\n")
    out = tmp_path / "out"
    rc = cli_main(["curate", str(data), "--panel", str(panel_file), "--out", str(out), "--quiet",
                   "--cache", str(tmp_path / "l.sqlite")])
    err = capsys.readouterr().err
    assert rc == 2 and AN_ENV in err and "claude" in err
    assert not out.exists()
    assert srv.stats["requests"] == 0


# --- limiter behaviour the API judges rely on (virtual time) ----------------------------------------
def test_a_429_spends_the_bank_so_the_released_callers_are_paced():
    from tgrs_agents.paid.limits import EndpointLimiter, EndpointLimits, FakeClock

    async def main():
        clock = FakeClock()
        lim = EndpointLimiter("e", EndpointLimits(rpm=600), clock)  # 10/s, a bank of 10
        lim.on_rate_limited(0.5)
        starts = []
        for _ in range(5):
            await lim.acquire()
            starts.append(clock.now())
            lim.release()
        return starts

    starts = run(main())
    assert starts[0] == pytest.approx(0.5)  # the pause
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx([1 / 7] * 4)  # paced (at the cut rate: 0.7 x 10/s), no herd


def test_rate_cut_only_when_the_server_has_not_vouched_for_our_rate():
    from tgrs_agents.paid.limits import EndpointLimiter, EndpointLimits, FakeClock

    stated = {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": "590"}
    clock = FakeClock()
    unknown = EndpointLimiter("u", EndpointLimits(rpm=600), clock)
    unknown.on_rate_limited(0.01)
    assert unknown.factor == pytest.approx(0.7)  # no word from the server: find the limit

    vouched = EndpointLimiter("v", EndpointLimits(rpm=600), clock)
    vouched.learn(stated)
    for _ in range(10):  # one episode (a burst that outran the server's bank): no cut
        vouched.on_rate_limited(0.01)
    assert vouched.factor == 1.0 and vouched.stats.rate_limited == 10
    clock.t += 2.0  # a second episode soon after: sustained, so cut
    vouched.on_rate_limited(0.01)
    assert vouched.factor == pytest.approx(0.7)

    over = EndpointLimiter("o", EndpointLimits(rpm=1200), clock)
    over.learn({**stated, "x-ratelimit-limit-requests": "600"})  # learned: base drops to 600
    assert over.requests.rate == pytest.approx(10) and over.requests.capacity == pytest.approx(10)
    over.on_rate_limited(0.01)
    assert over.factor == 1.0  # now within the stated limit


def test_limits_are_learned_from_a_429s_headers(tmp_path):
    with StandIn(FaultPlan(rpm=6000)) as s:
        s.script.append("429")

        async def main():
            panel, svc = build(tmp_path, table("openai", s, rpm=60_000, max_attempts=1))
            try:
                return await judge1(panel, cand(1)), limiter(svc)
            finally:
                await panel.aclose()

        v, lim = run(main())
    assert v.error is not None and "HTTP 429" in v.error and s.stats["requests"] == 1
    assert lim.stats.learned["requests"] == 6000 and lim.requests.rate == pytest.approx(100)
    assert lim.factor == 1.0  # within the limit the 429 itself stated: no cut
