"""The stand-in's batch protocols (OpenAI Files + Batch, Anthropic Message Batches) through the real SDKs.

Time is a parameter: each test drives ``srv.batches.clock`` by hand, so nothing sleeps.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tgrs_agents.testing.standin import FaultPlan, StandIn

openai = pytest.importorskip("openai")
anthropic = pytest.importorskip("anthropic")

GOOD = "<reference>42</reference>\n<final>Answer: 42</final>"
BAD = "<reference>42</reference>\n<final>Answer: 41</final>"


class Clock:
    def __init__(self) -> None:
        self.t = 1_750_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def make():
    servers = []

    def start(**plan) -> tuple[StandIn, Clock]:
        s = StandIn(FaultPlan(**plan))
        clock = Clock()
        s.batches.clock = clock
        s.start()
        servers.append(s)
        return s, clock

    yield start
    for s in servers:
        s.stop()


def oa(s):
    return openai.AsyncOpenAI(api_key="sk-test", base_url=s.url_openai, max_retries=0)


def an(s):
    return anthropic.AsyncAnthropic(api_key="sk-ant-test", base_url=s.url_anthropic, max_retries=0)


def jsonl(n: int, *, bad: frozenset[int] = frozenset()) -> bytes:
    return "\n".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
        "model": "gpt-4o-mini", "messages": [{"role": "user", "content": BAD if i in bad else GOOD}]}})
        for i in range(n)).encode()


async def oa_submit(c, data: bytes, **kw):
    f = await c.files.create(file=("in.jsonl", data), purpose="batch")
    return f, await c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                     completion_window="24h", **kw)


async def lines(c, file_id):
    if file_id is None:
        return []
    return [json.loads(x) for x in (await c.files.content(file_id)).text.splitlines()]


def an_reqs(n: int, *, bad: frozenset[int] = frozenset()):
    return [{"custom_id": f"c{i}", "params": {
        "model": "claude-test", "max_tokens": 64, "messages": [{"role": "user", "content": BAD if i in bad else GOOD}],
        "tools": [{"name": "record_verdict", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "record_verdict"}}} for i in range(n)]


def test_openai_statuses_files_and_output_lines(make):
    s, clock = make(batch_delay_s=100)

    async def go():
        c = oa(s)
        f, b = await oa_submit(c, jsonl(4, bad=frozenset({1})), metadata={"tgrs_key": "k1"})
        assert (await c.files.retrieve(f.id)).purpose == "batch" and f.bytes == len(jsonl(4, bad=frozenset({1})))
        assert (await c.files.content(f.id)).content == jsonl(4, bad=frozenset({1}))
        seen = [b.status]
        for t in (20, 50, 95, 100):
            clock.t += t - (clock.t - 1_750_000_000.0)
            b = await c.batches.retrieve(b.id)
            seen.append(b.status)
        assert seen == ["validating", "in_progress", "in_progress", "finalizing", "completed"]
        assert b.metadata == {"tgrs_key": "k1"} and b.completed_at is not None and b.error_file_id is None
        assert (b.request_counts.total, b.request_counts.completed, b.request_counts.failed) == (4, 4, 0)
        out = await lines(c, b.output_file_id)
        assert [x["custom_id"] for x in out] == ["c0", "c1", "c2", "c3"]
        assert all(x["error"] is None and x["response"]["status_code"] == 200 and x["id"].startswith("batch_req_")
                   for x in out)
        verdicts = [json.loads(x["response"]["body"]["choices"][0]["message"]["content"]) for x in out]
        assert [v["passed"] for v in verdicts] == [True, False, True, True]  # the online brain
        assert out[0]["response"]["body"]["usage"]["prompt_tokens"] == len(GOOD) // 4
        await c.close()

    asyncio.run(go())
    assert s.stats["batches"] == 1 and s.stats["batch_items"] == 4


def test_openai_partial_failures_split_between_output_and_error_files(make):
    s, _ = make(p_batch_item_error=0.5, seed=3)

    async def go():
        c = oa(s)
        _, b = await oa_submit(c, jsonl(40))
        b = await c.batches.retrieve(b.id)
        out, err = await lines(c, b.output_file_id), await lines(c, b.error_file_id)
        await c.close()
        return b, out, err

    b, out, err = asyncio.run(go())
    assert 5 < len(err) < 35 and len(out) + len(err) == 40
    assert {x["custom_id"] for x in out} | {x["custom_id"] for x in err} == {f"c{i}" for i in range(40)}
    assert all(x["response"]["status_code"] == 500 and x["response"]["body"]["error"]["type"] == "server_error"
               for x in err)
    assert (b.status, b.request_counts.completed, b.request_counts.failed) == ("completed", len(out), len(err))


def test_openai_expiry_keeps_what_was_done(make):
    s, clock = make(batch_delay_s=100, batch_expire_s=50)

    async def go():
        c = oa(s)
        _, b = await oa_submit(c, jsonl(10))
        clock.t += 49
        assert (await c.batches.retrieve(b.id)).status == "in_progress"
        clock.t += 1
        b = await c.batches.retrieve(b.id)
        out, err = await lines(c, b.output_file_id), await lines(c, b.error_file_id)
        await c.close()
        return b, out, err

    b, out, err = asyncio.run(go())
    assert b.status == "expired" and b.expired_at is not None and len(out) == 5 and len(err) == 5
    assert all(x["response"] is None and x["error"]["code"] == "batch_expired" for x in err)


def test_openai_cancel_and_provider_cancel(make):
    s, clock = make(batch_delay_s=100, batch_cancel_s=10)

    async def go():
        c = oa(s)
        _, b = await oa_submit(c, jsonl(10))
        clock.t += 30
        b = await c.batches.cancel(b.id)
        assert b.status == "cancelling" and b.cancelling_at is not None
        clock.t += 10
        b = await c.batches.retrieve(b.id)
        out, err = await lines(c, b.output_file_id), await lines(c, b.error_file_id)
        s.plan.p_batch_cancel = 1.0
        _, b2 = await oa_submit(c, jsonl(4))
        clock.t += 60  # half the delay, then batch_cancel_s of "cancelling"
        b2 = await c.batches.retrieve(b2.id)
        await c.close()
        return b, out, err, b2

    b, out, err, b2 = asyncio.run(go())
    assert b.status == "cancelled" and b.cancelled_at is not None and len(out) == 3
    assert len(err) == 7 and {x["error"]["code"] for x in err} == {"batch_cancelled"}
    assert b2.status == "cancelled" and b2.cancelling_at is not None  # nobody asked: the provider did


def test_openai_invalid_input_fails_the_batch(make):
    s, _ = make()

    async def go():
        c = oa(s)
        _, b = await oa_submit(c, jsonl(2) + b"\nnot json\n" + jsonl(1))
        b = await c.batches.retrieve(b.id)
        await c.close()
        return b

    b = asyncio.run(go())
    assert b.status == "failed" and b.failed_at is not None and b.output_file_id is None
    assert [e.line for e in b.errors.data] == [3, 4]  # the broken line and the duplicate custom_id


def test_openai_list_pages_newest_first_and_errors_classify(make):
    s, _ = make()

    async def go():
        c = oa(s)
        ids = [(await oa_submit(c, jsonl(1), metadata={"n": str(i)}))[1].id for i in range(5)]
        listed = [b.id async for b in c.batches.list(limit=2)]  # the SDK follows `after`
        page = await c.batches.list(limit=2, after=ids[3])
        s.batches.script.extend(["429", "500", "401"])
        errs = []
        for _ in range(3):
            try:
                await c.batches.retrieve(ids[0])
            except openai.APIStatusError as e:
                errs.append(type(e))
        with pytest.raises(openai.NotFoundError):
            await c.batches.retrieve("batch_nope")
        await c.close()
        return ids, listed, page, errs

    ids, listed, page, errs = asyncio.run(go())
    assert listed == ids[::-1]
    assert [b.id for b in page.data] == [ids[2], ids[1]] and page.has_more
    assert errs == [openai.RateLimitError, openai.InternalServerError, openai.AuthenticationError]


def test_drop_after_creates_the_batch_but_answers_nothing(make):
    s, _ = make()

    async def go():
        c = oa(s)
        f = await c.files.create(file=("in.jsonl", jsonl(2)), purpose="batch")
        s.batches.script.append("drop_after")
        with pytest.raises(openai.APIConnectionError):
            await c.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                   metadata={"tgrs_key": "k9"})
        found = [b async for b in c.batches.list()]
        await c.close()
        return found

    found = asyncio.run(go())
    assert [b.metadata for b in found] == [{"tgrs_key": "k9"}]  # what a resume adopts


def test_anthropic_flow_counts_results_and_list(make):
    s, clock = make(batch_delay_s=60, p_batch_item_error=0.3, seed=1)

    async def go():
        c = an(s)
        b = await c.messages.batches.create(requests=an_reqs(20, bad=frozenset({0})))
        assert b.processing_status == "in_progress" and b.request_counts.processing == 20 and b.results_url is None
        clock.t += 60
        b = await c.messages.batches.retrieve(b.id)
        res = [r async for r in await c.messages.batches.results(b.id)]
        b2 = await c.messages.batches.create(requests=an_reqs(1))
        listed = [x.id async for x in c.messages.batches.list(limit=1)]
        with pytest.raises(anthropic.NotFoundError):
            await c.messages.batches.retrieve("msgbatch_nope")
        with pytest.raises(anthropic.BadRequestError):
            await c.messages.batches.create(requests=[{"custom_id": "has space", "params": {}}])
        await c.close()
        return b, res, b2, listed

    b, res, b2, listed = asyncio.run(go())
    counts = b.request_counts
    assert b.processing_status == "ended" and b.ended_at is not None and counts.processing == 0
    kinds = [r.result.type for r in res]
    assert counts.succeeded == kinds.count("succeeded") and counts.errored == kinds.count("errored") > 0
    assert counts.succeeded + counts.errored == 20 and sorted(r.custom_id for r in res) == sorted(
        f"c{i}" for i in range(20))
    ok = {r.custom_id: r.result.message.content[0].input for r in res if r.result.type == "succeeded"}
    assert all(v["passed"] == (k != "c0") for k, v in ok.items())
    err = next(r.result.error.error for r in res if r.result.type == "errored")
    assert err.type == "api_error"
    assert listed == [b2.id, b.id]


def test_anthropic_cancel_expiry_and_provider_cancel(make):
    s, clock = make(batch_delay_s=100, batch_cancel_s=5)

    async def go():
        c = an(s)
        b = await c.messages.batches.create(requests=an_reqs(10))
        clock.t += 40
        b = await c.messages.batches.cancel(b.id)
        assert b.processing_status == "canceling" and b.cancel_initiated_at is not None
        clock.t += 5
        b = await c.messages.batches.retrieve(b.id)
        cancelled = [r.result.type async for r in await c.messages.batches.results(b.id)]
        s.plan.batch_expire_s = 30
        e = await c.messages.batches.create(requests=an_reqs(10))
        clock.t += 30
        expired = [r.result.type async for r in await c.messages.batches.results(e.id)]
        s.plan.batch_expire_s, s.plan.p_batch_cancel = None, 1.0
        p = await c.messages.batches.create(requests=an_reqs(2))
        clock.t += 55  # half the delay, then batch_cancel_s of "canceling"
        p = await c.messages.batches.retrieve(p.id)
        await c.close()
        return b, cancelled, expired, p

    b, cancelled, expired, p = asyncio.run(go())
    assert b.processing_status == "ended" and (b.request_counts.succeeded, b.request_counts.canceled) == (4, 6)
    assert cancelled == ["succeeded"] * 4 + ["canceled"] * 6
    assert expired == ["succeeded"] * 3 + ["expired"] * 7
    assert p.processing_status == "ended" and p.request_counts.canceled == 1  # one of two was done by half-time
