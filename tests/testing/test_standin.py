"""The loopback OpenAI / Anthropic stand-in, exercised through the real SDKs (no retries)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from email.utils import parsedate_to_datetime

import pytest

from tgrs_agents.paid.limits import parse_reset
from tgrs_agents.testing.standin import FaultPlan, StandIn, default_brain

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

PROMPT = "<reference>42</reference>\n<final>I computed it.\nAnswer: 42.0</final>"
MESSAGES = [{"role": "user", "content": PROMPT}]
TOOL = {"name": "record_verdict", "input_schema": {"type": "object"}}


@pytest.fixture
def srv():
    with StandIn() as s:
        yield s


def run(coro):
    return asyncio.run(coro)


def oa_client(s: StandIn, **kw) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", base_url=s.url_openai, max_retries=0, **kw)


def an_client(s: StandIn, **kw) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=s.url_anthropic, max_retries=0, **kw)


async def oa_call(client, **kw):
    async with client:
        return await client.chat.completions.create(model="gpt-test", messages=MESSAGES, **kw)


async def an_call(client, **kw):
    async with client:
        return await client.messages.create(
            model="claude-test", max_tokens=256, system="You are a judge.", messages=MESSAGES,
            tools=[TOOL], tool_choice={"type": "tool", "name": "record_verdict"}, **kw)


def test_default_brain():
    ok = default_brain(PROMPT)
    assert (ok["score"], ok["passed"]) == (9, True) and isinstance(ok["rationale"], str)
    wrong = default_brain("<reference>42</reference><final>Answer: 41</final>")
    assert (wrong["score"], wrong["passed"]) == (2, False)
    assert default_brain("<reference> x y </reference><final>Answer:  x y\n</final>")["passed"]
    missing = default_brain("no tags here")
    assert (missing["score"], missing["passed"]) == (5, False) and "tag" in missing["rationale"]


def test_openai_ok(srv):
    resp = run(oa_call(oa_client(srv)))
    verdict = json.loads(resp.choices[0].message.content)
    assert verdict["passed"] is True and verdict["score"] == 9
    assert resp.choices[0].finish_reason == "stop" and resp.model == "gpt-test"
    assert resp.usage.prompt_tokens == len(PROMPT) // 4 and resp.usage.completion_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    rec = srv.requests[-1]
    assert rec["path"] == "/v1/chat/completions" and rec["model"] == "gpt-test" and rec["has_key"]
    assert "authorization" not in rec["headers"] and "sk-test" not in json.dumps(rec)
    assert srv.stats["ok"] == 1 and srv.stats["requests"] == 1


def test_anthropic_ok(srv):
    headers, resp = run(_an_raw(srv))
    assert headers["request-id"].startswith("req_")
    block = resp.content[0]
    assert block.type == "tool_use" and block.name == "record_verdict"
    assert block.input["passed"] is True and block.input["score"] == 9
    assert resp.stop_reason == "tool_use" and resp.usage.output_tokens > 0
    assert resp.usage.input_tokens == (len(PROMPT) + len("You are a judge.")) // 4
    assert srv.requests[-1]["has_key"] and "sk-ant-test" not in json.dumps(srv.requests[-1])


async def _an_raw(s):
    async with an_client(s) as c:
        raw = await c.messages.with_raw_response.create(
            model="claude-test", max_tokens=256, system="You are a judge.", messages=MESSAGES,
            tools=[TOOL], tool_choice={"type": "tool", "name": "record_verdict"})
        return raw.headers, await raw.parse()


def test_scripted_429_carries_retry_after(srv):
    srv.script.extend(["429", "429"])
    with pytest.raises(openai.RateLimitError) as oe:
        run(oa_call(oa_client(srv)))
    with pytest.raises(anthropic.RateLimitError) as ae:
        run(an_call(an_client(srv)))
    for exc in (oe.value, ae.value):
        assert exc.status_code == 429
        assert float(exc.response.headers["retry-after"]) > 0
        assert int(exc.response.headers["retry-after-ms"]) > 0
    assert oe.value.body["code"] == "rate_limit_exceeded"
    assert ae.value.body["error"]["type"] == "rate_limit_error"
    assert srv.stats["429"] == 2 and not srv.script


def test_server_errors(srv):
    srv.script.extend(["500", "500", "529", "529"])
    with pytest.raises(openai.InternalServerError):
        run(oa_call(oa_client(srv)))
    with pytest.raises(anthropic.InternalServerError):
        run(an_call(an_client(srv)))
    with pytest.raises(openai.InternalServerError) as oe:
        run(oa_call(oa_client(srv)))
    assert oe.value.status_code == 503
    overloaded = getattr(anthropic, "OverloadedError", anthropic.APIStatusError)
    with pytest.raises(overloaded) as ae:
        run(an_call(an_client(srv)))
    assert ae.value.status_code == 529 and ae.value.body["error"]["type"] == "overloaded_error"


def test_bad_requests_are_400(srv):
    srv.script.append("400")
    with pytest.raises(openai.BadRequestError):
        run(oa_call(oa_client(srv)))
    req = urllib.request.Request(srv.url_anthropic + "/v1/messages", data=b'{"model": "m"}', method="POST",
                                 headers={"x-api-key": "k", "content-type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 400 and json.load(e.value)["error"]["type"] == "invalid_request_error"
    e.value.close()
    assert srv.stats["400"] == 2 and srv.requests[-1]["body"] == {"model": "m"}


def test_serve_in_current_loop_with_latency():
    async def main():
        s = StandIn(FaultPlan(latency_mean_s=0.1))
        await s.serve()
        t0 = time.perf_counter()
        async with oa_client(s) as c:
            results = await asyncio.gather(
                *(c.chat.completions.create(model="m", messages=MESSAGES) for _ in range(20)))
        elapsed = time.perf_counter() - t0
        await s.aclose()
        return results, elapsed, s.stats

    results, elapsed, stats = run(main())
    assert len(results) == 20 and stats["ok"] == 20
    assert elapsed < 1.5  # concurrent, not 20 x 0.1 s in series


def test_drop_is_connection_error(srv):
    srv.script.extend(["drop", "drop"])
    with pytest.raises(openai.APIConnectionError) as oe:
        run(oa_call(oa_client(srv)))
    with pytest.raises(anthropic.APIConnectionError) as ae:
        run(an_call(an_client(srv)))
    assert not isinstance(oe.value, openai.APITimeoutError)
    assert not isinstance(ae.value, anthropic.APITimeoutError)
    assert srv.stats["drop"] == 2


def test_slow_times_out():
    with StandIn(FaultPlan(slow_s=30)) as s:
        s.script.extend(["slow", "slow"])
        with pytest.raises(openai.APITimeoutError):
            run(oa_call(oa_client(s, timeout=0.2)))
        with pytest.raises(anthropic.APITimeoutError):
            run(an_call(an_client(s, timeout=0.2)))
    # stop() returned promptly although two handlers were still sleeping


def test_malformed(srv):
    srv.script.extend(["malformed", "malformed"])
    resp = run(oa_call(oa_client(srv)))
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.choices[0].message.content)
    msg = run(an_call(an_client(srv)))
    assert "passed" not in msg.content[0].input and msg.content[0].input["score"] == "high"


def test_missing_key_is_401(srv):
    async def bad_calls():
        oa = oa_client(srv)
        an = anthropic.AsyncAnthropic(api_key=None, auth_token=None, base_url=srv.url_anthropic,
                                      max_retries=0, default_headers={"Authorization": anthropic.Omit()})
        with pytest.raises(openai.AuthenticationError):
            await oa_call(oa, extra_headers={"Authorization": openai.Omit()})
        with pytest.raises(anthropic.AuthenticationError) as ae:
            await an_call(an)
        assert ae.value.body["error"]["type"] == "authentication_error"

    run(bad_calls())
    assert srv.stats["401"] == 2 and not any(r["has_key"] for r in srv.requests)


def test_x_api_key_is_accepted(srv):
    async def call():
        async with anthropic.AsyncAnthropic(api_key=None, base_url=srv.url_anthropic, max_retries=0,
                                            default_headers={"x-api-key": "sk-ant-test",
                                                             "Authorization": anthropic.Omit()}) as c:
            return await c.messages.create(model="m", max_tokens=8, messages=MESSAGES)

    assert run(call()).content[0].input["passed"] is True
    assert srv.requests[-1]["has_key"] and "x-api-key" not in srv.requests[-1]["headers"]


def test_enforced_rpm_and_ratelimit_headers():
    with StandIn(FaultPlan(rpm=600, tpm=1_000_000, burst_s=1.0)) as s:  # 10 req/s, bucket of 10

        async def burst():
            async with oa_client(s) as c:
                async def one():
                    try:
                        raw = await c.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
                        return "ok", raw.headers
                    except openai.RateLimitError as e:
                        return "429", e.response.headers

                return await asyncio.gather(*(one() for _ in range(50)))

        results = run(burst())
        counts = Counter(kind for kind, _ in results)
        assert 10 <= counts["ok"] <= 20 and counts["429"] >= 30, counts
        for kind, h in results:
            assert h["x-ratelimit-limit-requests"] == "600" and h["x-ratelimit-limit-tokens"] == "1000000"
            assert 0 <= int(h["x-ratelimit-remaining-requests"]) < 600
            assert h["x-ratelimit-reset-requests"].endswith(("ms", "s"))
            if kind == "429":
                assert 0 < float(h["retry-after"]) <= 0.11  # one request's worth of refill at 10/s
        assert s.stats["429"] == counts["429"]

        time.sleep(0.15)  # refill one request's worth
        h, _ = run(_an_raw(s))  # Anthropic flavour of the headers
        assert h["anthropic-ratelimit-requests-limit"] == "600"
        assert int(h["anthropic-ratelimit-input-tokens-remaining"]) <= 1_000_000
        assert h["anthropic-ratelimit-requests-reset"].endswith("Z")
        assert "anthropic-ratelimit-output-tokens-limit" in h


def test_tpm_limit():
    with StandIn(FaultPlan(tpm=600, burst_s=1.0)) as s:  # 10 input tokens/s, bucket of 10 tokens
        big = [{"role": "user", "content": "x" * 400}]  # 100 tokens: more than the bucket holds

        async def two():
            async with oa_client(s) as c:
                await c.chat.completions.create(model="m", messages=big)  # full bucket admits it
                with pytest.raises(openai.RateLimitError) as e:
                    await c.chat.completions.create(model="m", messages=big)
                return float(e.value.response.headers["retry-after"])

        assert 0.5 < run(two()) <= 1.0


async def _oa_many(s: StandIn, n: int) -> list[tuple[str, dict]]:
    """``n`` requests at once; (outcome, headers) of each."""
    async with oa_client(s) as c:
        async def one():
            try:
                raw = await c.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
                return "ok", dict(raw.headers)
            except openai.RateLimitError as e:
                return "429", dict(e.response.headers)

        return await asyncio.gather(*(one() for _ in range(n)))


def test_per_minute_allowance_as_a_fixed_window():
    # 30 requests per 60 s window, all of which may burst; then nothing until the window ends
    with StandIn(FaultPlan(rpm=30, window_s=60)) as s:
        results = run(_oa_many(s, 40))
        counts = Counter(kind for kind, _ in results)
        assert counts == {"ok": 30, "429": 10}
        remaining = sorted(int(h["x-ratelimit-remaining-requests"]) for kind, h in results if kind == "ok")
        assert remaining == list(range(30))  # counted down, one per admitted request
        for kind, h in results:
            assert h["x-ratelimit-limit-requests"] == "30"
            assert 55 < parse_reset(h["x-ratelimit-reset-requests"]) <= 60  # the window's end
            if kind == "429":
                assert 55 < float(h["retry-after"]) <= 60


def test_per_minute_allowance_as_a_bucket_holding_a_minute():
    # the default shape (a token bucket) holding a minute of 30 requests/min: 30 burst, then 1 per 2 s
    with StandIn(FaultPlan(rpm=30, burst_s=60)) as s:
        results = run(_oa_many(s, 40))
        counts = Counter(kind for kind, _ in results)
        assert 30 <= counts["ok"] <= 31 and counts["429"] == 40 - counts["ok"], counts  # (+ refill)
        ok = [h for kind, h in results if kind == "ok"]
        assert min(int(h["x-ratelimit-remaining-requests"]) for h in ok) == 0
        assert max(int(h["x-ratelimit-remaining-requests"]) for h in ok) == 29
        # whole again after (limit - remaining) requests at 0.5/s: the reset states a minute's bank
        for h in ok:
            used = 30 - int(h["x-ratelimit-remaining-requests"])
            assert parse_reset(h["x-ratelimit-reset-requests"]) == pytest.approx(2 * used, abs=1.1)
        assert all(1 < float(h["retry-after"]) <= 2.01 for kind, h in results if kind == "429")


def test_responses_carry_a_date(srv):
    headers, _ = run(_an_raw(srv))
    sent = parsedate_to_datetime(headers["date"]).timestamp()
    assert abs(sent - time.time()) < 5


def test_random_faults_follow_plan():
    with StandIn(FaultPlan(p_5xx=0.3, p_malformed=0.3, seed=1)) as s:
        async def many():
            async with oa_client(s) as c:
                async def one():
                    try:
                        await c.chat.completions.create(model="m", messages=MESSAGES)
                    except openai.InternalServerError as e:
                        assert e.status_code in (500, 502, 503)

                await asyncio.gather(*(one() for _ in range(200)))

        run(many())
        assert s.stats["requests"] == 200
        assert 30 < s.stats["500"] < 90 and 30 < s.stats["malformed"] < 90 and s.stats["ok"] > 40


def test_subprocess_mode():
    plan = json.dumps({"latency_mean_s": 0.01})
    cmd = [sys.executable, "-m", "tgrs_agents.testing.standin", "--port", "0", "--plan", plan]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("PORT ")
        s = StandIn()
        s.port = int(line.split()[1])
        resp = run(oa_call(oa_client(s)))
        assert json.loads(resp.choices[0].message.content)["passed"] is True
        with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/stats", timeout=5) as r:
            stats = json.load(r)
        assert stats["requests"] == 1 and stats["ok"] == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{s.port}/arrivals", timeout=5) as r:
            (arrival,) = json.load(r)
        assert arrival[1] == "ok" and abs(arrival[0] - time.time()) < 30
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
