"""SDK errors classified (``tgrs_agents.paid.sdk_errors``), on the real ``openai`` / ``anthropic``
exception objects raised against the loopback stand-in."""

from __future__ import annotations

import asyncio
import functools

import pytest
from api_judge_kit import AN_KEY, KEYS, KINDS, OA_KEY, build, cand, judge1, limiter, run, set_keys, table

from tgrs_agents.errors import ERROR_KINDS, TeacherError
from tgrs_agents.paid.sdk_errors import RETRYABLE_STATUS, classify_sdk_error, classify_status, retry_after_from
from tgrs_agents.testing.standin import FaultPlan, StandIn

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")


@pytest.fixture(autouse=True)
def env(monkeypatch):
    set_keys(monkeypatch)


def test_statuses_map_to_the_closed_set_of_kinds():
    for status in (*RETRYABLE_STATUS, 400, 401, 403, 404, 422):
        retryable, kind = classify_status(status)
        assert kind in ERROR_KINDS and retryable == (status in RETRYABLE_STATUS), status
    assert classify_status(529) == (True, "overloaded") and classify_status(409) == (True, "conflict")
    assert retry_after_from({"Retry-After-Ms": "1500"}) == 1.5 and retry_after_from({"retry-after": "2"}) == 2.0
    assert retry_after_from({"retry-after": "soon"}) is None and retry_after_from(None) is None


def test_a_429_carries_its_response_headers_for_the_limiter():
    with StandIn(FaultPlan(rpm=6000)) as s:
        s.script.append("429")

        async def one():
            async with openai.AsyncOpenAI(api_key=OA_KEY, base_url=s.url_openai, max_retries=0) as c:
                try:
                    await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
                except openai.APIStatusError as e:
                    return e
            raise AssertionError("no 429")

        err = classify_sdk_error(run(one()), openai, "judge")
    assert err.kind == "rate_limit" and err.headers is not None
    assert err.headers["x-ratelimit-limit-requests"] == "6000" and "retry-after-ms" in err.headers
    assert not any(k in repr(err.headers) for k in KEYS)


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

