"""The batch clients (``paid/batch_openai.py``, ``paid/batch_anthropic.py``) against the stand-in, through the
real SDKs: answers as the online path's bodies at the batch price, item errors and SDK errors classified."""

from __future__ import annotations

import asyncio

import pytest
from batch_kit import PRICE, client, items, passed, standin  # noqa: F401  (standin: a fixture)

from tgrs_agents.errors import TeacherError
from tgrs_agents.paid.batch import (
    ANTHROPIC_LIMITS,
    OPENAI_LIMITS,
    BatchLimits,
    ForeignBatch,
    custom_id,
    group,
    split_custom_id,
)
from tgrs_agents.paid.cost import BATCH_SHARE, batch_price_for, price_for

pytest.importorskip("openai")
pytest.importorskip("anthropic")
PROVIDERS = ["openai", "anthropic"]


def reqs(provider, n, key="bk1", bad=frozenset()):
    return [(custom_id(key, i), b) for i, (_, b) in enumerate(items(provider, n, bad))]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_submit_poll_results_at_the_batch_price(standin, provider):  # noqa: F811
    srv, clock = standin(batch_delay_s=100)

    async def go():
        c = client(provider, srv)
        bid = await c.submit(reqs(provider, 3, bad=frozenset({2})), "bk1")
        first = await c.poll(bid)
        clock.t += 100
        last = await c.poll(bid)
        got = [x async for x in c.results(bid, "bk1")]
        await c.aclose()
        return first, last, got

    first, last, got = asyncio.run(go())
    assert first.state == "running" and not first.ended and last.state == "completed" and last.ended
    assert last.counts["succeeded"] == 3 and last.created_at == pytest.approx(clock.t - 100, abs=1)
    assert [cid for cid, _ in got] == ["bk1_0", "bk1_1", "bk1_2"]
    assert [passed(provider, p.value) for _, p in got] == [True, True, False]  # the online brain's verdicts
    u = got[0][1].usage
    assert u.requests == 1 and u.input_tokens > 0 and u.cost_usd == pytest.approx(
        PRICE.cost(u.input_tokens, u.output_tokens))


@pytest.mark.parametrize("provider", PROVIDERS)
def test_item_errors_are_classified(standin, provider):  # noqa: F811
    srv, clock = standin(batch_delay_s=100, batch_expire_s=50, p_batch_item_error=0.5, seed=2)

    async def go():
        c = client(provider, srv)
        r = reqs(provider, 12)
        r[0][1]["messages"] = "not a list"  # answered 400 in the batch, as online
        bid = await c.submit(r, "bk1")
        clock.t += 50
        st = await c.poll(bid)
        got = dict([x async for x in c.results(bid)])
        await c.aclose()
        return st, got

    st, got = asyncio.run(go())
    errs = {cid: e for cid, e in got.items() if isinstance(e, TeacherError)}
    bad = errs.pop("bk1_0")
    assert (bad.status, bad.kind, bad.retryable) == (400, "bad_request", False)
    expired = {cid for cid, e in errs.items() if e.kind == "timeout"}
    assert expired == {f"bk1_{i}" for i in range(6, 12)} and all(errs[c].retryable for c in expired)
    server = [e for c, e in errs.items() if c not in expired]
    assert server and all((e.status, e.kind, e.retryable) == (500, "server", True) for e in server)
    assert st.state in ("expired", "completed") and st.ended


@pytest.mark.parametrize("provider", PROVIDERS)
def test_sdk_errors_are_classified(standin, provider):  # noqa: F811
    srv, _ = standin()

    async def go():
        c = client(provider, srv)
        out = []
        for forced in ("401", "429", "500"):
            srv.batches.script.append(forced)
            try:
                await c.poll("batch_x")
            except TeacherError as e:
                out.append((e.kind, e.retryable, e.status))
        with pytest.raises(TeacherError) as nf:
            await c.poll("nope")
        await c.aclose()
        return out, nf.value

    out, nf = asyncio.run(go())
    assert out == [("auth", False, 401), ("rate_limit", True, 429), ("server", True, 500)]
    assert (nf.status, nf.retryable) == (404, False)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_find_by_key_and_foreign_batches(standin, provider):  # noqa: F811
    srv, clock = standin(batch_delay_s=10)

    async def go():
        c = client(provider, srv)
        mine = await c.submit(reqs(provider, 2, key="bmine"), "bmine")
        other = await c.submit(reqs(provider, 3, key="bother"), "bother")
        found = await c.find("bmine", 2, clock.t)
        missing = await c.find("bnone", 4, clock.t)
        clock.t += 10
        with pytest.raises(ForeignBatch):
            [x async for x in c.results(other, "bmine")]
        await c.cancel(mine)
        st = await c.poll(mine)
        await c.aclose()
        return mine, found, missing, st

    mine, found, missing, st = asyncio.run(go())
    assert found == mine and missing is None
    assert st.batch_id == mine and st.ended  # cancelled after it had already ended: nothing changes


def test_anthropic_find_checks_an_ended_batchs_ids(standin):  # noqa: F811
    srv, clock = standin()

    async def go():
        c = client("anthropic", srv)
        theirs = await c.submit(reqs("anthropic", 2, key="btheirs"), "btheirs")
        found_other = await c.find("bmine", 2, clock.t)  # same size, ended, its ids say it is not ours
        mine = await c.submit(reqs("anthropic", 2, key="bmine"), "bmine")
        await c.submit(reqs("anthropic", 2, key="blater"), "blater")  # newer, same size, not ours
        found = await c.find("bmine", 2, clock.t)
        await c.aclose()
        return theirs, found_other, mine, found

    theirs, found_other, mine, found = asyncio.run(go())
    assert found_other is None and found == mine != theirs


def test_groups_respect_count_and_bytes():
    its = [(f"c{i}", {"x": "y" * 50}) for i in range(10)]
    size = len(str(its[0]))
    assert [len(g) for g in group(its, BatchLimits(4, 10**9), lambda it: size)] == [4, 4, 2]
    assert [len(g) for g in group(its, BatchLimits(100, 3 * size), lambda it: size)] == [3, 3, 3, 1]
    with pytest.raises(ValueError, match="over the batch limit"):
        group(its, BatchLimits(100, size - 1), lambda it: size)
    assert (OPENAI_LIMITS.max_requests, OPENAI_LIMITS.max_bytes) == (50_000, 200 * 1024**2)
    assert (ANTHROPIC_LIMITS.max_requests, ANTHROPIC_LIMITS.max_bytes) == (100_000, 256 * 1024**2)
    assert split_custom_id(custom_id("bk_1", 7)) == ("bk_1", 7) and split_custom_id("free-form") is None


def test_batch_prices_are_half_of_online():
    for model in ("gpt-4o-mini", "claude-sonnet-4-20250514"):
        online, batch = price_for(model), batch_price_for(model)
        assert batch.input_per_mtok == pytest.approx(online.input_per_mtok * BATCH_SHARE)
        assert batch.output_per_mtok == pytest.approx(online.output_per_mtok * BATCH_SHARE)
    assert BATCH_SHARE == 0.5 and batch_price_for("unknown-model") is None
    assert batch_price_for("unknown-model", 4.0, 8.0).input_per_mtok == 2.0  # a teacher file's own price, halved
