"""The API judge adapter (``tgrs_agents.teachers.llm_judge``, with the OpenAI and Anthropic kinds) through
the real SDKs against the loopback stand-in: the request it sends, the verdict, usage and cost it
reports, the paid-call contract it fulfils, what its cache identity keys, and that no key leaks."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import pytest
from api_judge_kit import (
    AN_ENV,
    KEYS,
    KINDS,
    RUBRIC,
    build,
    cand,
    judge1,
    limiter,
    price,
    prompt_of,
    run,
    set_keys,
    table,
)

from tgrs_agents.errors import CallsStopped, ConfigError, TeacherError
from tgrs_agents.paid.call import CacheIdentity, Paid, PaidJudge
from tgrs_agents.paid.ledger import Ledger
from tgrs_agents.tasks.arithmetic_data import write_synthetic
from tgrs_agents.teachers.anthropic_judge import AnthropicJudge, AnthropicJudgeConfig
from tgrs_agents.teachers.base import BuildContext
from tgrs_agents.teachers.llm_judge import VERDICT_SCHEMA, load_prompt
from tgrs_agents.teachers.openai_judge import OpenAIJudge, OpenAIJudgeConfig
from tgrs_agents.testing.standin import FaultPlan, StandIn
from tgrs_agents.types import Verdict

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")


@pytest.fixture(autouse=True)
def env(monkeypatch):
    set_keys(monkeypatch)


@pytest.fixture
def srv():
    with StandIn() as s:
        yield s


def bare(kind: str, s: StandIn, tmp_path: Path, **kw) -> OpenAIJudge | AnthropicJudge:
    """The adapter alone, outside the layer."""
    t = {k: v for k, v in table(kind, s, **kw).items() if k != "kind"}
    cls, cfg = (OpenAIJudge, OpenAIJudgeConfig) if kind == "openai" else (AnthropicJudge, AnthropicJudgeConfig)
    return cls(cfg(**t), BuildContext(base_dir=tmp_path))


# --- the paid-call contract ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_one_call_returns_the_verdict_its_usage_and_the_headers(kind, tmp_path):
    with StandIn(FaultPlan(rpm=6000)) as s:
        j = bare(kind, s, tmp_path, max_attempts=3)
        assert isinstance(j, PaidJudge)
        assert not hasattr(j, "on_headers") and not hasattr(j, "retry_policy")  # no callbacks, no policy
        assert j.max_attempts == 3 and j.price.input_per_mtok == 2.0
        assert j.limits.rpm is None and j.endpoint_key.startswith(j.base_url.rstrip("/") + "#")
        assert not any(k in j.endpoint_key for k in KEYS)
        ident = j.cache_identity()
        assert isinstance(ident, CacheIdentity) and ident.identity["base_url"] == j.base_url
        assert "max_attempts" not in ident.identity and "price_input_per_mtok" not in ident.identity

        async def main():
            try:
                got = await j.call(cand(1))
                s.script.append("429")
                with pytest.raises(TeacherError) as ei:
                    await j.call(cand(2))
                s.script.append("malformed")
                with pytest.raises(TeacherError) as em:
                    await j.call(cand(3))
                return got, ei.value, em.value, await j.judge(cand(4))
            finally:
                await j.aclose()

        got, e429, bad, plain = run(main())
    limit_h = "x-ratelimit-limit-requests" if kind == "openai" else "anthropic-ratelimit-requests-limit"
    assert isinstance(got, Paid) and isinstance(got.value, Verdict) and got.value.passed
    assert got.usage.requests == 1 and got.usage.input_tokens > 0 and got.value.usage == got.usage
    assert got.headers[limit_h] == "6000" and not got.cached
    assert e429.kind == "rate_limit" and e429.headers[limit_h] == "6000" and e429.retry_after is not None
    assert bad.kind == "malformed" and bad.usage.requests == 1 and bad.headers[limit_h] == "6000"
    assert isinstance(plain, Verdict) and s.stats["requests"] == 4  # judge(): one attempt, nothing around it


def test_an_unknown_model_needs_prices(srv, tmp_path):
    with pytest.raises(ConfigError) as ei:
        bare("openai", srv, tmp_path, price_input_per_mtok=None, price_output_per_mtok=None)
    assert ei.value.field == "teacher.gpt.price_input_per_mtok" and "no price known" in str(ei.value)
    j = bare("openai", srv, tmp_path, model="gpt-4o-mini", price_input_per_mtok=None, price_output_per_mtok=None)
    assert (j.price.input_per_mtok, j.price.output_per_mtok) == (0.15, 0.60)  # the list price


# --- through the layer, as tgrs curate builds it ------------------------------------------------------

def test_the_openai_judge_sends_what_the_typed_sdk_call_sends(srv, tmp_path):
    """The judge posts its body through ``client.post`` (no request transform, no pydantic answer):
    on the wire it must be the request the typed ``chat.completions.create`` sends, headers too."""
    judge = bare("openai", srv, tmp_path)
    c = cand(1)
    prompt = judge.prompt_for(c)

    async def main():
        try:
            out, usage, headers = await judge.ask(prompt, VERDICT_SCHEMA, "verdict")
            await judge._client.chat.completions.with_raw_response.create(
                model=judge.config.model, messages=[{"role": "user", "content": prompt}],
                temperature=judge.config.temperature, max_tokens=judge.config.max_tokens,
                response_format={"type": "json_schema", "json_schema": {
                    "name": "verdict", "strict": True, "schema": VERDICT_SCHEMA}},
                seed=judge.config.seed)
            return out, usage, headers
        finally:
            await judge.aclose()

    out, usage, headers = run(main())
    ours, typed = srv.requests[-2], srv.requests[-1]
    assert ours["path"] == typed["path"] == "/v1/chat/completions"
    assert ours["body"] == typed["body"] and ours["body"]["seed"] == judge.config.seed
    skip = {"content-length", "x-stainless-retry-count", "x-stainless-read-timeout", "idempotency-key"}
    assert {k: v for k, v in ours["headers"].items() if k not in skip} == \
        {k: v for k, v in typed["headers"].items() if k not in skip}
    assert json.loads(out)["passed"] is True and usage.input_tokens == len(prompt) // 4
    assert usage.output_tokens > 0 and "x-request-id" in headers

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


@pytest.mark.parametrize("kind", KINDS)
def test_ledger_hits_make_no_call_cost_nothing_and_take_no_token(kind, srv, tmp_path):
    led_path = tmp_path / "ledger.sqlite"
    default = load_prompt("judge_default", tmp_path)
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
                # the refused key last: a 401 halts its endpoint (no call is sent after it)
                for i, script in enumerate([[], ["400"], ["500", "500"], ["malformed"] * 2,
                                            ["slow", "drop"], ["429", "ok"], ["401"]]):
                    for t in panel.teachers:
                        s.script.extend(script)
                        try:
                            verdicts.append(await t.judge(cand(10 * i + len(verdicts))))
                        except (TeacherError, CallsStopped) as e:
                            errors.append(e)
                        try:
                            verdicts.append(await panel._call(t, cand(1000 + len(verdicts))))
                        except CallsStopped as e:  # the halt that follows the 401
                            errors.append(e)
                return errors, verdicts, panel
            finally:
                await panel.aclose()
                led.close()

        errors, verdicts, panel = run(main())
    kinds = {e.kind for e in errors if isinstance(e, TeacherError)}
    assert len(errors) >= 10 and kinds >= {"auth", "bad_request", "server", "malformed", "connection"}
    assert any(isinstance(e, CallsStopped) and "401" in str(e) for e in errors)  # the halt names the status
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

